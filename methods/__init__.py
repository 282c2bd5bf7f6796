"""The papers' methods: SRDML (saliency-regularised deep MTL) and DSMTL (deep safe MTL)."""

# A `methods` folder in any other entry of the import path is part of this package too: a method file placed there
# is found and registered like the built-in ones (one file, no list to edit; tests/test_zoo.py's probe lives in a
# temporary folder this way, not in the source tree).
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

"""The papers' methods: SRDML (saliency-regularised deep MTL) and DSMTL (deep safe MTL)."""

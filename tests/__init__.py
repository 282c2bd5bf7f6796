"""The test suite (a package, so that `tests.conftest` resolves here and not to a `tests` package some
dependency installs into site-packages, as baycomp does)."""

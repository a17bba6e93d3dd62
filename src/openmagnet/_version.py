"""The package's version, in a leaf of its own: the files openmagnet writes record it without importing the package
face (`openmagnet/__init__.py`, which fronts the API)."""
__version__ = "0.1.0"

"""The test suite; the folders group it by subject (see each folder's docstring)."""

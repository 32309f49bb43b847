"""Dask arrays in, Dask arrays out."""

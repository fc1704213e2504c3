"""The files: direction, surface and projection files in the reference's HDF5 layouts (h5.py)."""

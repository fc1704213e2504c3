"""All HDF5 I/O: direction, surface and projection files: the reference's `h5_util.py`, kept as a front door; the code is landscape/io/h5.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.io.h5", __file__)

"""Convert a 2D surface file to a .vtp file for ParaView: the reference's `h52vtp.py`, kept as a front door; the code is landscape/plots/vtp.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.plots.vtp", __file__)

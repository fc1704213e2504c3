"""Directions in parameter space and moving the weights: the reference's `net_plotter.py`, kept as a front door; the code is landscape/directions.py (landscape/compat/net_plotter.py adds the reference's functions of a parsed command line)."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.compat.net_plotter", __file__)

"""Directions in parameter space and moving the weights: the reference's `net_plotter.py`, kept as a front door; the code is landscape/directions.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.directions", __file__)

"""Compute (and plot) a loss surface: the reference's `plot_surface.py`, kept as a front door; the code is landscape/cli/plot_surface.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.cli.plot_surface", __file__)

"""Helpers shared by the plots: the reference's `plot_util.py`, kept as a front door; the code is landscape/plots/util.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.plots.util", __file__)

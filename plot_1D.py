"""Plot 1D curves from surface files: the reference's `plot_1D.py`, kept as a front door; the code is landscape/plots/plot_1d.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.plots.plot_1d", __file__)

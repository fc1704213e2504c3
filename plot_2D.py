"""Plot 2D contours, heat maps and 3D surfaces from surface files: the reference's `plot_2D.py`, kept as a front door; the code is landscape/plots/plot_2d.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.plots.plot_2d", __file__)

"""The optimisation trajectory on its PCA plane: the reference's `plot_trajectory.py`, kept as a front door; the code is landscape/cli/plot_trajectory.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.cli.plot_trajectory", __file__)

"""PCA directions of a trajectory and projections onto them: the reference's `projection.py`, kept as a front door; the code is landscape/trajectory.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.compat.projection", __file__)

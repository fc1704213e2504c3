"""Which rank computes which grid point: the reference's `scheduler.py`, kept as a front door; the code is landscape/grid/scheduler.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.grid.scheduler", __file__)

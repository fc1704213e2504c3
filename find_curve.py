"""Find a low-loss curve between two checkpoints (mode connectivity); the code is landscape/cli/find_curve.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.cli.find_curve", __file__)

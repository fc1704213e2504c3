"""Build models by name and load checkpoints: the reference's `model_loader.py`, kept as a front door; the code is landscape/zoo/loader.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.zoo.loader", __file__)

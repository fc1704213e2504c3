"""CIFAR-10, the embedded digits and custom data as tensors: the reference's `dataloader.py`, kept as a front door; the code is landscape/zoo/data.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.zoo.data", __file__)

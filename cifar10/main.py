"""The trainer: the reference's `cifar10/main.py`, kept as a front door; the code is landscape/cli/train.py.

    python cifar10/main.py --model vgg9 --batch_size 128 ...    (or: cd cifar10 && python main.py ...)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the clone's landscape package

from landscape.cli.commands import front_door  # noqa: E402

front_door(__name__, "landscape.cli.train", __file__)

"""The reference's `models` package, kept as a front door; the zoo is landscape/zoo/models/.

`ZOO[name]()` builds a fresh, randomly initialised model. Names are the `--model` values.
"""
from landscape.zoo.models import ZOO, densenet, digits, resnet, vgg  # noqa: F401

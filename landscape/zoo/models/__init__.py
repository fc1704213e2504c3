"""The model zoo: every architecture name of the reference implementation, plus the digits models.

`ZOO[name]()` builds a fresh, randomly initialised model. Names are the `--model` values.
"""
from . import densenet, digits, resnet, vgg

ZOO = {}
for _family in (vgg, densenet, resnet, digits):
    ZOO.update(_family.zoo())

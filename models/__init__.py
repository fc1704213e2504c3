"""The model zoo: every architecture name of the reference implementation, plus the digits models.

`ZOO[name]()` builds a fresh, randomly initialised model. Names are the `--model` values.
"""
from . import densenet, digits, resnet, vgg

ZOO = {}
for _family in (vgg, densenet, resnet, digits):
    ZOO.update(_family.zoo())

# The input each family expects, for a cheap shape check before a long run: (channels, height, width).
INPUT_SHAPES = {name: ((1, 8, 8) if name.startswith("digits_") else (3, 32, 32)) for name in ZOO}

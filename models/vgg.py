"""Front door: the zoo's vgg models live in landscape/zoo/models/vgg.py."""
import sys

from landscape.zoo.models import vgg as _module

sys.modules[__name__] = _module

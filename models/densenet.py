"""Front door: the zoo's densenet models live in landscape/zoo/models/densenet.py."""
import sys

from landscape.zoo.models import densenet as _module

sys.modules[__name__] = _module

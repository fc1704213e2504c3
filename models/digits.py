"""Front door: the zoo's digits models live in landscape/zoo/models/digits.py."""
import sys

from landscape.zoo.models import digits as _module

sys.modules[__name__] = _module

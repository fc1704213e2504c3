"""Hessian-vector products, Lanczos, trace and spectral density: the reference's `hess_vec_prod.py`, kept as a front door; the code is landscape/curvature/hvp.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.curvature.hvp", __file__)

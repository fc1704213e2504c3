"""Maps of the Hessian's extreme eigenvalues, or the curvature at one checkpoint: the reference's `plot_hessian_eigen.py`, kept as a front door; the code is landscape/cli/plot_hessian_eigen.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.cli.plot_hessian_eigen", __file__)

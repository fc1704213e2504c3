"""loss-landscape: loss landscapes, curvature and trajectories of trained neural networks.

    import landscape
    res = landscape.surface(model, (inputs, targets), x="-1:1:51", y="-1:1:51")   # res.values["train_loss"]
    h = landscape.hessian(model, (inputs, targets), top_k=5)                          # h.eigenvalues, h.trace

This namespace is the Python API (landscape/api.py). The parts of the package (README, "Layout"):
directions (directions and moving the weights), evaluation (losses, metrics, fast evaluation),
grid (the grid job, its scheduling and lock), curvature, io (the HDF5 files), parallel (MPI and
launchers), plots, zoo (the model zoo, the data, the trainer) and cli (the commands).
"""
from landscape.version import __version__  # noqa: E402,F401  (first: the package modules read it)

import os as _os  # noqa: E402

# Under torchrun, c10d prints about 40 lines of C++ stack for every failed connection attempt unless
# this is set before torch is imported; a missing peer is then reported in one line (parallel/dist.py).
if _os.environ.get("TORCHELASTIC_RUN_ID") or ("RANK" in _os.environ and "WORLD_SIZE" in _os.environ):
    _os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from landscape.api import (  # noqa: E402
                           HessianResult,
                           LandscapeError,
                           PCAResult,
                           Result,
                           eigen_surface,
                           find_curve,
                           hessian,
                           interpolation,
                           parse_range,
                           path,
                           pca,
                           surface,
)
from landscape.curvature.model import CurvatureWarning  # noqa: E402  (a curvature value that did not converge, ...)

__all__ = ["surface", "interpolation", "path", "find_curve", "eigen_surface", "hessian", "pca", "Result", "HessianResult",
           "PCAResult", "LandscapeError", "CurvatureWarning", "parse_range", "__version__"]

"""Solvers that take any curvature operator (dim, device, __call__, matmat) and know nothing about models:
Lanczos for extreme eigenpairs (lanczos.py), Hutchinson's trace, plain, deflated or per diagonal block
(trace.py), and the spectral density by stochastic Lanczos quadrature (density.py)."""
from landscape.curvature.algorithms.density import esd, gaussian_density, slq_nodes
from landscape.curvature.algorithms.lanczos import (
    FLOAT32_FLOOR,
    LANCZOS_TOL,
    LanczosResult,
    LanczosRun,
    gaussian_start,
    lanczos,
    nan_result,
    ritz_converged,
    ritz_errors,
    ritz_vectors,
    start_vector,
    wanted_indices,
)
from landscape.curvature.algorithms.trace import (
    block_trace_estimate,
    default_block,
    hutchinson_trace,
    mean_and_se,
    rademacher,
    trace_estimate,
)

__all__ = ["esd", "gaussian_density", "slq_nodes", "FLOAT32_FLOOR", "LANCZOS_TOL", "LanczosResult", "LanczosRun",
           "gaussian_start", "lanczos", "nan_result", "ritz_converged", "ritz_errors", "ritz_vectors", "start_vector",
           "wanted_indices", "block_trace_estimate", "default_block", "hutchinson_trace", "mean_and_se", "rademacher",
           "trace_estimate"]

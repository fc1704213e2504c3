"""Curvature: matrix-free operators for the Hessian, the generalised Gauss-Newton matrix and the
empirical Fisher (operators/), solvers that take any of them (algorithms/: Lanczos, trace, spectral
density), the model-level glue that the grid jobs and the API use (model.py), and the reference's
module names in one namespace (hvp.py, the root file hess_vec_prod.py)."""

"""Curvature: matrix-free products with the Hessian, the solvers on top of them (hvp.py), and the
model-level glue that the grid jobs and the API use (model.py)."""

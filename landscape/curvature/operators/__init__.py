"""Curvature matrices as matrix-free symmetric operators (base.py: the interface): the Hessian by
double backward (hessian.py) or by finite differences of the gradient (finite_difference.py), the
generalised Gauss-Newton matrix (ggn.py, with closed-form output Hessians in output_hessians.py), the
empirical Fisher (fisher.py), and a diagonal block of any of them (block.py). functional.py holds the
model as a function of one flat parameter vector, which the GGN, the Fisher and finite differences use."""
from landscape.curvature.operators.base import (
    CallableOperator,
    CurvatureOperator,
    SavedBytes,
    as_operator,
    default_memory_budget,
    flatten_rows,
    matmat,
)
from landscape.curvature.operators.block import BlockOperator
from landscape.curvature.operators.finite_difference import FiniteDifferenceHessian
from landscape.curvature.operators.fisher import EmpiricalFisherOperator
from landscape.curvature.operators.functional import FunctionalModel, fd_step
from landscape.curvature.operators.ggn import GGNOperator
from landscape.curvature.operators.hessian import HessianOperator
from landscape.curvature.operators.output_hessians import output_hessian

__all__ = ["CallableOperator", "CurvatureOperator", "SavedBytes", "as_operator", "default_memory_budget",
           "flatten_rows", "matmat", "BlockOperator", "FiniteDifferenceHessian", "EmpiricalFisherOperator",
           "FunctionalModel", "fd_step", "GGNOperator", "HessianOperator", "output_hessian"]

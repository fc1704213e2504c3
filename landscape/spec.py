"""A run's specification, shared by the command line and the Python API, each part checked once.

A grid run is a `RunSpec`: its axes, its directions (`DirectionSpec`), how points are evaluated
(`EvaluationSpec`), the curvature of eigenvalue maps (`CurvatureSpec`, None for loss maps), how the
ranks share the work (`ParallelSpec`) and the files it reads and writes (`FileSpec`). Every part is a
frozen dataclass that checks its own values, and `RunSpec.check` the rules that join parts (model3
needs y, recalibration against states or several points per pass, ...). The front ends build one
(cli/options.run_spec from the parsed flags, api from its arguments) and hand it to build.py.

A refusal names the setting as its caller wrote it: the flag on the command line (`--points_per_pass
0`) or the argument in the API (`points_per_pass=0`). NAMES is the one table of both; `setting()`
renders a value the way the caller's front end spells it.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional, Union

from landscape.errors import LandscapeError

Front = Literal["cli", "api"]

NORMS = ("", "filter", "layer", "weight", "dfilter", "dlayer")
DIR_TYPES = ("weights", "states")
DIR_KINDS = ("random", "target", "hessian", "explicit")   # explicit: tensors given to the API
PATH_TYPES = ("polychain", "bezier")
CURVATURES = ("hessian", "ggn", "ef")   # the Hessian, the generalised Gauss-Newton, the empirical Fisher
HVP_METHODS = ("autograd", "finite_difference")
PRECISIONS = ("default", "fp32", "tf32", "bf16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
DATA_IN_MEMORY = ("auto", "yes", "no")
LANCZOS_TOL = 1e-4
SEED_MAX = 2 ** 63 - 1                  # torch's generators take a signed 64-bit seed

# setting -> (the flag on the command line, the argument of the API)
NAMES: dict[str, tuple[str, str]] = {
    "x": ("--x", "x"), "y": ("--y", "y"),
    "dir_type": ("--dir_type", "dir_type"),
    "xnorm": ("--xnorm", "directions"), "ynorm": ("--ynorm", "directions"),
    "xignore": ("--xignore", "ignore"), "yignore": ("--yignore", "ignore"),
    "xdir": ("--xdir", "directions"), "ydir": ("--ydir", "directions"),
    "same_dir": ("--same_dir", "same_dir"), "orthogonalize": ("--orthogonalize", "orthogonalize"),
    "params": ("--params", "params"), "regenerate": ("--regenerate_directions", "regenerate"),
    "seed": ("--seed", "seed"), "model2": ("--model_file2", "model2"), "model3": ("--model_file3", "model3"),
    "curvature": ("--curvature", "curvature"), "hvp": ("--hvp", "hvp"), "tol": ("--tol", "tol"),
    "max_iter": ("--max_iter", "max_iter"),
    "batch_size": ("--batch_size", "batch_size"), "precision": ("--precision", "precision"),
    "points_per_pass": ("--points_per_pass", "points_per_pass"), "fold_bn": ("--no_fold_bn", "fold_bn"),
    "memory_format": ("--memory_format", "memory_format"), "compile": ("--compile", "compile"),
    "bn_recalibrate": ("--bn_recalibrate", "bn_recalibrate"),
    "ranks_per_point": ("--ranks_per_point", "ranks_per_point"),
    "data_in_memory": ("--data_in_memory", "data_in_memory"),
    "out": ("--surf_file", "out"), "dir_file": ("--dir_file", "dir_file"),
    "save_directions": ("--save_directions", "save_directions"), "flush_seconds": ("--flush_seconds", "flush_seconds"),
    "path_type": ("--path_type", "path_type"), "path": ("--path_files", "models"),
}


def name(front: Front, key: str) -> str:
    """The setting `key` as the caller names it: '--points_per_pass' or 'points_per_pass'."""
    flag, arg = NAMES.get(key, ("--" + key, key))
    return flag if front == "cli" else arg


def setting(front: Front, key: str, value: Any) -> str:
    """The setting `key` with `value`, as the caller writes it: '--dir_type states' or "dir_type='states'"
    (a flag that is switched on is the flag alone: '--bn_recalibrate', 'bn_recalibrate=True')."""
    if front == "cli":
        return name(front, key) if value is True else f"{name(front, key)} {value}"
    return f"{name(front, key)}={value!r}"



def whole(front: Front, key: str, value: Any, lo: int) -> int:
    """A whole number >= lo, or a refusal naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value) or value < lo:
        raise LandscapeError(f"{setting(front, key, value)} must be a whole number >= {lo}")
    return int(value)


def positive(front: Front, key: str, value: Any) -> float:
    """A finite number > 0, or a refusal naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value) \
            or not math.isfinite(value) or not value > 0:
        raise LandscapeError(f"{setting(front, key, value)} must be a finite number > 0")
    return float(value)


def choice(front: Front, key: str, value: Any, choices: tuple) -> Any:
    if not isinstance(value, str) or value not in choices:
        shown = ", ".join(repr(c) if front == "api" or c == "" else c for c in choices)
        raise LandscapeError(f"{setting(front, key, value)} must be one of: {shown}")
    return value


def named_choice(front: Front, key: str, value: Any, choices: tuple) -> Any:
    """A choice refused as "--curvature 'x' must be one of: hessian, ggn, ef" (curvature 'x' in the API)."""
    if not isinstance(value, str) or value not in choices:
        raise LandscapeError(f"{name(front, key)} {value!r} must be one of: {', '.join(choices)}")
    return value


def flag(front: Front, key: str, value: Any) -> bool:
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise LandscapeError(f"{setting(front, key, value)} must be True or False")
    return bool(value)


def seed_value(front: Front, key: str, value: Any) -> int:
    """A seed in [0, 2**63)."""
    if isinstance(value, bool) or not isinstance(value, int) and not _is_numpy_int(value) \
            or not 0 <= value <= SEED_MAX:
        raise LandscapeError(f"{setting(front, key, value)} must be a whole number in [0, 2**63)")
    return int(value)


def compile_params(params: str) -> Optional[re.Pattern]:
    """The --params regular expression, compiled (None: every entry), or a one-line refusal."""
    if not params:
        return None
    try:
        return re.compile(params)
    except re.error as e:
        raise LandscapeError(f"--params {params!r} is not a valid regular expression ({e})") from None


def _is_numpy_int(value: Any) -> bool:
    return type(value).__module__ == "numpy" and "int" in type(value).__name__


def _is_numpy_number(value: Any) -> bool:
    return type(value).__module__ == "numpy" and any(k in type(value).__name__ for k in ("int", "float"))


# ----------------------------------------------------------------------------- the parts of a run
@dataclass(frozen=True)
class Axes:
    """The grid: x coordinates, and y for a surface (None: a 1D curve)."""
    x: tuple[float, ...]
    y: Optional[tuple[float, ...]] = None

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2


@dataclass(frozen=True)
class DirectionSpec:
    """Every choice that changes the directions; recorded in the direction file and checked on reuse."""
    dir_type: str = "weights"
    ndim: int = 1                 # 2 for a surface
    seed: int = 123
    xnorm: str = ""
    xignore: str = ""
    ynorm: str = ""
    yignore: str = ""
    same_dir: bool = False
    xdir: str = "random"          # random | target (model2 - model) | hessian (top eigenvector) | explicit
    ydir: str = "random"          # random | target (model3 - model) | hessian (2nd eigenvector) | explicit
    orthogonalize: bool = False   # Gram-Schmidt y against x, y rescaled to |x|
    params: str = ""              # regex: only matching entries move
    regenerate: bool = False      # SeededDirections: drawn on the device, entry by entry, never stored
    curvature: str = "hessian"    # the matrix whose eigenvectors `hessian` directions are: hessian | ggn | ef

    def check(self, front: Front = "cli") -> "DirectionSpec":
        for axis in ("x", "y")[:self.ndim]:
            norm, ignore = getattr(self, axis + "norm"), getattr(self, axis + "ignore")
            kind = getattr(self, axis + "dir")
            if norm not in NORMS:
                raise LandscapeError(f"{name(front, axis + 'norm')} {norm!r} must be one of: '', "
                                     f"{', '.join(NORMS[1:])}")
            if ignore not in ("", "biasbn"):
                raise LandscapeError(f"{name(front, axis + 'ignore')} {ignore!r} must be '' or biasbn")
            if kind not in DIR_KINDS:
                raise LandscapeError(f"{name(front, axis + 'dir')} {kind!r} must be one of: {', '.join(DIR_KINDS)}")
        choice(front, "dir_type", self.dir_type, DIR_TYPES)
        seed_value(front, "seed", self.seed)
        y_drawn = self.ndim == 1 or self.ydir == "random" or self.same_dir
        if self.regenerate and (self.xdir != "random" or not y_drawn):
            targets = "--model_file2/3" if front == "cli" else "model2/model3"
            raise LandscapeError(f"{name(front, 'regenerate')} applies to random directions only (not to {targets}, "
                                 "hessian or explicit directions)")
        named_choice(front, "curvature", self.curvature, CURVATURES)
        if self.orthogonalize and self.ndim != 2:
            raise LandscapeError(f"{name(front, 'orthogonalize')} needs two directions ({name(front, 'y')})")
        compile_params(self.params)
        return self

    def kinds(self) -> list[str]:
        return [self.xdir] + ([self.ydir] if self.ndim == 2 else [])

    def attrs(self) -> dict[str, Any]:
        a = asdict(self)
        if a["curvature"] == "hessian" or "hessian" not in self.kinds():
            del a["curvature"]        # recorded only for hessian directions of another matrix (files stay as they were)
        a["draws"] = ("per-entry generators on the device (SeededDirections)" if self.regenerate else
                      "the reference's: manual_seed(seed), build the model, randn per entry, x then y")
        return a


BatchSize = Union[int, Literal["auto"]]


@dataclass(frozen=True)
class EvaluationSpec:
    """How each point is evaluated: the batch, the arithmetic, and the fast paths (which change only rounding)."""
    batch_size: BatchSize = "auto"
    precision: str = "default"
    points_per_pass: int = 1
    fold_bn: bool = True
    memory_format: str = "auto"
    compile: bool = False
    bn_recalibrate: bool = False

    def check(self, front: Front = "cli") -> "EvaluationSpec":
        if self.batch_size != "auto":
            whole(front, "batch_size", self.batch_size, 1)
        choice(front, "precision", self.precision, PRECISIONS)
        whole(front, "points_per_pass", self.points_per_pass, 1)
        choice(front, "memory_format", self.memory_format, MEMORY_FORMATS)
        for key in ("fold_bn", "compile", "bn_recalibrate"):
            flag(front, key, getattr(self, key))
        if self.bn_recalibrate and self.points_per_pass > 1:
            raise LandscapeError(f"{setting(front, 'bn_recalibrate', True)} recomputes BatchNorm's statistics at each "
                                 f"point, one point per pass: use {setting(front, 'points_per_pass', 1)}")
        return self


@dataclass(frozen=True)
class CurvatureSpec:
    """A curvature matrix and how its eigenvalues are found: the matrix (hessian | ggn | ef), how products
    are made (autograd | finite_difference), Lanczos' tolerance and most products, its seed, and the
    parameters covered (a regex; '' for the trained parameters of dimension > 1)."""
    matrix: str = "hessian"
    hvp: str = "autograd"
    tol: float = LANCZOS_TOL
    max_iter: int = 100
    seed: int = 0
    params: str = ""

    def check(self, front: Front = "cli") -> "CurvatureSpec":
        named_choice(front, "curvature", self.matrix, CURVATURES)
        named_choice(front, "hvp", self.hvp, HVP_METHODS)
        positive(front, "tol", self.tol)
        whole(front, "max_iter", self.max_iter, 1)
        seed_value(front, "seed", self.seed)
        compile_params(self.params)
        return self


def check_curvature_precision(front: Front, precision: str) -> None:
    """Curvature products are refused in bf16 (too coarse for the differences Lanczos takes)."""
    if precision == "bf16":
        raise LandscapeError(f"{setting(front, 'precision', 'bf16')} is too coarse for Hessian-vector products; use "
                             "fp32, default or tf32")


@dataclass(frozen=True)
class ParallelSpec:
    """How the ranks share the work: the communicator (None: this process alone), the ranks that
    evaluate each point together (None: the job's default, 1 for grids), and whether the data is kept
    on the device or streamed for each point."""
    comm: Any = None
    ranks_per_point: Optional[int] = None
    data_in_memory: str = "auto"

    def check(self, front: Front = "cli") -> "ParallelSpec":
        if self.ranks_per_point is not None and (isinstance(self.ranks_per_point, bool) or
                                                 not isinstance(self.ranks_per_point, int) or self.ranks_per_point < 1):
            raise LandscapeError(f"{name(front, 'ranks_per_point')} {self.ranks_per_point!r} must be a whole number "
                                 ">= 1" + (" (or 0 for the default)" if front == "cli" else ""))
        if self.data_in_memory not in DATA_IN_MEMORY:
            raise LandscapeError(f"{name(front, 'data_in_memory')} {self.data_in_memory!r} must be one of: "
                                 f"{', '.join(DATA_IN_MEMORY)}")
        return self


@dataclass(frozen=True)
class FileSpec:
    """The files: the surface file (out; '' keeps it in memory), the direction file (dir_given: the user
    named it, so it defines the directions), a copy of the directions to write, and how often computed
    points are written."""
    out: str = ""
    dir_file: str = ""
    save_directions: str = ""
    flush_seconds: float = 5.0
    dir_given: bool = False

    def check(self, front: Front = "cli") -> "FileSpec":
        positive(front, "flush_seconds", self.flush_seconds)
        if front == "api":
            for key in ("out", "dir_file", "save_directions"):
                value = getattr(self, key)
                if value and not value.endswith(".h5"):
                    raise LandscapeError(f"{setting(front, key, value)} must name an .h5 file (None: no file)")
        return self


@dataclass(frozen=True)
class RunSpec:
    """One grid run: what moves the model, what each point computes, how, and where the results go.
    maps: 'loss' (loss, accuracy and metrics) or 'eig' (the extreme eigenvalues of `curvature`, which
    is also the matrix of hessian directions); path_type set: the model moves along the path through
    checkpoints (the directions then hold only dir_type and params); progress: print progress lines."""
    axes: Axes
    directions: DirectionSpec
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    curvature: CurvatureSpec = field(default_factory=CurvatureSpec)
    parallel: ParallelSpec = field(default_factory=ParallelSpec)
    files: FileSpec = field(default_factory=FileSpec)
    maps: Literal["loss", "eig"] = "loss"
    path_type: str = ""
    progress: bool = True
    front: Front = "api"

    def check(self) -> "RunSpec":
        """Every part's values, then the rules that join parts; one refusal naming the setting."""
        f = self.front
        d, e, c = self.directions, self.evaluation, self.curvature
        if self.path_type:
            choice(f, "path_type", self.path_type, PATH_TYPES)
            choice(f, "dir_type", d.dir_type, DIR_TYPES)
            compile_params(d.params)
        else:
            if d.ydir == "target" and self.axes.y is None:
                raise LandscapeError(f"{name(f, 'model3')}{'' if f == 'cli' else '='} sets the y direction, so it "
                                     f"needs {name(f, 'y')}{'' if f == 'cli' else '='}")
            d.check(f)
        e.check(f)
        self.parallel.check(f)
        self.files.check(f)
        c.check(f)
        if e.bn_recalibrate and d.dir_type == "states":
            raise LandscapeError(f"{setting(f, 'bn_recalibrate', True)} recomputes the BatchNorm statistics that "
                                 f"{setting(f, 'dir_type', 'states')} moves: use {setting(f, 'dir_type', 'weights')} "
                                 "with it")
        if self.maps == "eig":
            check_curvature_precision(f, e.precision)
        elif "hessian" not in d.kinds() and (c.matrix, c.hvp) != ("hessian", "autograd") \
                and not (self.files.dir_file and os.path.exists(self.files.dir_file)):
            hessian = "--xdir/--ydir hessian" if f == "cli" else "directions='hessian'"
            raise LandscapeError(f"{name(f, 'curvature')} and {name(f, 'hvp')} apply to {hessian} (the curvature's "
                                 "eigenvectors) and to eigenvalue maps; these directions use no curvature")
        return self


def check_recalibration(front: Front, has_batchnorm: bool, group_size: int, in_memory: str,
                        model_name: str = "the model") -> None:
    """BN recalibration needs BatchNorm, and reads the whole training set in memory on one rank per point
    (checked once the model is loaded, the ranks are grouped and the data's path is known)."""
    on = setting(front, "bn_recalibrate", True)
    if not has_batchnorm:
        raise LandscapeError(f"{on}: {model_name} has no BatchNorm layer with running statistics to recompute"
                             + ("; drop the flag" if front == "cli" else ""))
    if group_size > 1:
        raise LandscapeError(f"{on} recomputes BatchNorm's statistics from the whole training set on one rank; it "
                             f"does not combine with {name(front, 'ranks_per_point')} > 1")
    if in_memory != "yes":
        raise LandscapeError(f"{on} reads the training set from memory at every point; this data is streamed "
                             f"({'use ' if front == 'cli' else ''}{setting(front, 'data_in_memory', 'yes')} if it "
                             "fits" + (", or drop --bn_recalibrate)" if front == "cli" else ")"))

"""What a file records, in one table: every input that changes its numbers, and what is only a note.

A surface file records the inputs that made its values; a direction file, those that made its
directions. Resuming a surface, or reusing a direction file, compares the same table: a value
recorded under a `compared` key that differs from this run's is refused, in one line naming the
input. So what is recorded and what is compared come from one list and cannot drift apart;
`record()` refuses a key that is not listed. Adding an input (a new flag that changes the numbers)
is one line here, plus the line that records it.

Comparison rule: a key is compared when this run records it and the file does too (or the file
lacks it and the entry has a `default`, the value files written before the key existed imply; with
`default_if`, only files that record that other key imply it).
Values are compared as text, so 1 and "1" agree.
"""
from __future__ import annotations

import functools
import hashlib
import re
import time
import types
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch


@dataclass(frozen=True)
class Input:
    key: str
    what: str                 # how a refusal names it
    compared: bool            # False: a note (when, by what, a path whose bytes are hashed under another key)
    default: Any = None       # the value a file without this key implies (None: unknown, not compared)
    default_if: str = ""      # ... only where the file records this other key (the default applies to files of that kind)


def _note(key: str, what: str = "") -> Input:
    return Input(key, what or key, False)


# ----------------------------------------------------------------------------- surface files
SURFACE = (
    # the model and where it sits
    Input("model", "model", True),
    Input("model_code_sha256", "--model code (its file)", True),
    _note("model_file", "--model_file path"),
    Input("model_file_sha256", "checkpoint (--model_file)", True),
    Input("model_file2_sha256", "--model_file2 checkpoint", True),
    Input("model_file3_sha256", "--model_file3 checkpoint", True),
    Input("model_sha256", "model weights", True),           # the API: the tensors themselves
    Input("model2_sha256", "model2 weights", True),
    Input("model3_sha256", "model3 weights", True),
    Input("path_type", "--path_type", True),
    _note("path_files", "--path_files paths"),
    Input("path_sha256", "path checkpoints", True),
    # the data
    Input("dataset", "dataset", True),
    Input("dataset_code_sha256", "--dataset code (its file)", True),
    Input("raw_data", "--raw_data", True),
    Input("data_split", "--data_split", True),
    Input("split_idx", "--split_idx", True),
    Input("trainloader_sha256", "--trainloader file", True),
    Input("testloader_sha256", "--testloader file", True),
    Input("train_size", "training-set size", True),
    Input("test_size", "test-set size", True),
    Input("data_sha256", "training data", True),
    Input("test_data_sha256", "test data", True),
    # what a point computes: loss maps
    Input("loss_name", "loss", True),
    Input("loss_sha256", "loss (its code or settings)", True),
    Input("metrics", "metrics", True),
    Input("metrics_sha256", "metrics (their code)", True),
    Input("precision", "--precision", True),
    Input("arithmetic", "arithmetic (--precision on this device type: fp32, tf32, bf16 autocast)", True),
    Input("bn_recalibrate", "--bn_recalibrate", True, default=0),
    Input("bn_recalibrate_batch", "--bn_recalibrate batch size", True, default=0),
    # what a point computes: eigenvalue maps (plot_hessian_eigen.py, eigen_surface)
    Input("eig_precision", "--precision of the eigenvalue maps", True),
    Input("eig_tol", "--tol", True),
    Input("eig_max_iter", "--max_iter", True),
    # (a file of eigenvalue maps written before these keys: the Hessian, by autograd; a loss-only file: none)
    Input("curvature", "--curvature", True, default="hessian", default_if="eig_tol"),
    Input("hvp", "--hvp", True, default="autograd", default_if="eig_tol"),
    # the directions
    Input("dir_type", "--dir_type", True),
    Input("params", "--params", True),
    Input("dir_sha256", "directions", True),
    _note("seed", "--seed (its directions are compared through dir_sha256)"),
    _note("marked_points", "where the checkpoints sit (derived from the directions)"),
    # results derived from the computed maps (written once every point is computed)
    _note("train_loss_barrier", "a path's barrier height on train_loss (max along t minus the mean of the ends)"),
    _note("test_loss_barrier", "a path's barrier height on test_loss"),
    _note("curve_plane", "where a curve's ends and bends sit in its plane (--curve_plane)"),
    # notes: how it ran (the values do not depend on these beyond rounding), what made the file, and when
    _note("data_in_memory", "the data path that ran (in memory, or streamed)"),
    _note("ranks_per_point", "--ranks_per_point"),
    _note("command"), _note("last_command"), _note("tool"), _note("landscape_version"), _note("layout"),
    _note("created"), _note("updated"),
)

# ----------------------------------------------------------------------------- direction files
DIRECTION = (
    # DirectionSpec (landscape.directions): every choice that changes the directions
    Input("spec_dir_type", "--dir_type", True),
    Input("spec_ndim", "dimensionality", True),
    Input("spec_seed", "--seed", True),
    Input("spec_xdir", "the x direction", True),
    Input("spec_xnorm", "--xnorm", True),
    Input("spec_xignore", "--xignore", True),
    Input("spec_ydir", "the y direction", True),
    Input("spec_ynorm", "--ynorm", True),
    Input("spec_yignore", "--yignore", True),
    Input("spec_same_dir", "--same_dir", True),
    Input("spec_orthogonalize", "--orthogonalize", True),
    Input("spec_params", "--params", True),
    Input("spec_regenerate", "--regenerate_directions", True),
    Input("spec_curvature", "--curvature (of hessian directions)", True, default="hessian"),
    _note("spec_draws", "how the random numbers were drawn (follows from spec_regenerate)"),
    # the reference's names for some of the same (written for its readers; spec_* are compared)
    _note("dir_type"), _note("seed"), _note("xnorm"), _note("xignore"), _note("ynorm"), _note("yignore"),
    # the checkpoints a direction is made from: the origin, and the targets of --model_file2/3
    Input("model", "model", True),
    Input("model_file_sha256", "checkpoint (--model_file)", True),
    _note("model_file2", "--model_file2 path"),
    _note("model_file3", "--model_file3 path"),
    Input("model_file2_sha256", "--model_file2 checkpoint", True),
    Input("model_file3_sha256", "--model_file3 checkpoint", True),
    Input("model2_sha256", "model2 weights", True),
    Input("model3_sha256", "model3 weights", True),
    # what defines a Hessian direction: the loss and the data it is the Hessian of
    Input("loss_name", "loss", True),
    Input("loss_sha256", "loss (its code or settings)", True),
    Input("dataset", "dataset", True),
    Input("data_split", "--data_split", True),
    Input("split_idx", "--split_idx", True),
    Input("train_size", "training-set size", True),
    Input("data_sha256", "training data", True),
    # regenerated directions: the recipe (spec_* above, and these)
    Input("regenerated", "--regenerate_directions", True, default=0),
    Input("regenerated_device_type", "device type of the draws", True),
    _note("regenerated_scheme", "how each entry is seeded"),
    _note("regenerated_ortho", "Gram-Schmidt coefficients of the y direction (derived)"),
    # notes
    _note("marked_points"), _note("materialised_from"), _note("created"), _note("tool"),
    _note("landscape_version"),
)

TABLES = {"surface": SURFACE, "direction": DIRECTION}


def keys(table: str) -> set[str]:
    return {entry.key for entry in TABLES[table]}


def compared_keys(table: str) -> set[str]:
    return {entry.key for entry in TABLES[table] if entry.compared}


def record(table: str, **fields: Any) -> dict[str, Any]:
    """The attributes a new file records: the caller's fields (each listed in `table`), plus what wrote
    it and when. A field that is not in the table is a bug: it would be recorded but never compared."""
    unknown = sorted(set(fields) - keys(table))
    assert not unknown, f"provenance keys not in the {table} table of landscape/io/provenance.py: {unknown}"
    out = dict(fields, tool=tool_version(), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if table == "surface":
        out["layout"] = "(ny, nx): Z[j, i] is the value at (x[i], y[j])"
    return out


def first_difference(table: str, recorded: Mapping[str, Any],
                     mine: Mapping[str, Any]) -> Optional[tuple[Input, Any, Any]]:
    """(Input, recorded value, this run's value) of the first compared input that differs, or None.

    `recorded`: a file's attributes; `mine`: this run's record (only the keys that apply to it)."""
    for entry in TABLES[table]:
        if not entry.compared or entry.key not in mine:
            continue
        theirs = recorded.get(entry.key)
        if theirs is None and (not entry.default_if or entry.default_if in recorded):
            theirs = entry.default
        if theirs is None:
            continue
        if text(theirs) != text(mine[entry.key]):
            return entry, theirs, mine[entry.key]
    return None


def text(value: Any) -> str:
    """A recorded value as comparable text: booleans as 0/1 (HDF5 may give numpy.bool_), the rest as str."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(int(bool(value)))
    return str(value)


def short(value: Any) -> str:
    """A value for a one-line message: hashes shortened."""
    s = text(value)
    return s[:12] + "..." if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s


# ----------------------------------------------------------------------------- fingerprints
def tensors_sha256(*objs: Any) -> str:
    """A fingerprint of tensors (and nested tuples/lists/dicts of them): dtype, shape and bytes."""
    h = hashlib.sha256()

    def feed(o):
        if isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(str(k).encode())
                feed(o[k])
        elif isinstance(o, (tuple, list)):
            for v in o:
                feed(v)
        elif torch.is_tensor(o):
            t = o.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))  # no copy of the data
    for o in objs:
        feed(o)
    return h.hexdigest()


ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")   # an object's id in a repr: differs between runs
PLAIN = (type(None), bool, int, float, complex, str, bytes)
CODE_DEPTH = 6                                  # how far code_text follows references (closures, globals, attributes)


def code_sha256(obj: Any) -> str:
    """A fingerprint of a user's callable, so a resume with other code or settings is refused (a repr
    names every CrossEntropyLoss() alike, every lambda '<lambda>'):
    - an nn.Module: its class's qualified name, the non-tensor attributes (vars) of it and of every
      submodule, and its parameters and buffers (tensors_sha256);
    - a function or lambda: its code object (bytecode, constants, names, nested code), its defaults,
      the values in its closure cells, and the plain values, tensors and functions of its own module
      that it names; a bound method: the function and its object; functools.partial: the function
      and its arguments;
    - anything else: its class's qualified name and attributes, or its repr without ids.
    Python's bytecode differs between Python versions, so a function's fingerprint does too."""
    return hashlib.sha256(code_text(obj, 0, set()).encode()).hexdigest()


def code_text(obj: Any, depth: int, seen: set[int]) -> str:
    """A canonical text of `obj` for code_sha256 (ids never enter it)."""
    if isinstance(obj, PLAIN):
        return repr(obj)
    if torch.is_tensor(obj):
        return "tensor:" + tensors_sha256(obj)
    if depth > CODE_DEPTH or id(obj) in seen:
        return "<" + qualified_name(type(obj)) + ">"
    seen = seen | {id(obj)}

    def more(o):
        return code_text(o, depth + 1, seen)
    if isinstance(obj, np.ndarray):
        return f"array:{obj.dtype}{obj.shape}:" + hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()
    if isinstance(obj, (list, tuple)):
        return type(obj).__name__ + "[" + ",".join(more(v) for v in obj) + "]"
    if isinstance(obj, (set, frozenset)):
        return "set[" + ",".join(sorted(more(v) for v in obj)) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(sorted(f"{more(k)}:{more(v)}" for k, v in obj.items())) + "}"
    if isinstance(obj, torch.nn.Module):
        return module_text(obj, more)
    if isinstance(obj, functools.partial):
        return f"partial({more(obj.func)},{more(obj.args)},{more(obj.keywords)})"
    if isinstance(obj, types.MethodType):
        return f"method({more(obj.__func__)},{more(obj.__self__)})"
    if isinstance(obj, types.FunctionType):
        return function_text(obj, more)
    if isinstance(obj, types.CodeType):
        return f"code({obj.co_code.hex()},{more(obj.co_consts)},{','.join(obj.co_names)})"
    if isinstance(obj, (type, types.ModuleType, types.BuiltinFunctionType)):
        return qualified_name(obj)
    if not hasattr(obj, "__dict__"):
        return ADDRESS.sub("", repr(obj))
    call = getattr(type(obj), "__call__", None)       # an instance of a class: its attributes and its __call__
    return (f"{qualified_name(type(obj))}({more(public_vars(obj))})"
            + (f".call:{more(call)}" if isinstance(call, types.FunctionType) else ""))


def qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', repr(obj)))}"


def public_vars(obj: Any) -> dict[str, Any]:
    """An object's own attributes that are not private bookkeeping (nn.Module's _parameters, hooks, ...)."""
    return {k: v for k, v in vars(obj).items() if not k.startswith("_") and k != "training"}


def module_text(module: torch.nn.Module, more: Callable[[Any], str]) -> str:
    """An nn.Module: class names and attributes of the whole tree, and one hash of every tensor in it."""
    tree = [f"{name}:{qualified_name(type(m))}({more(public_vars(m))})" for name, m in module.named_modules()]
    tensors = dict(module.named_parameters(remove_duplicate=False), **dict(module.named_buffers(remove_duplicate=False)))
    return "module[" + ";".join(tree) + "]tensors:" + tensors_sha256(tensors)


def function_text(fn: types.FunctionType, more: Callable[[Any], str]) -> str:
    """A function: its code, defaults, closure values, and the globals of its own module that it names."""
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(more(cell.cell_contents))
        except ValueError:                         # a cell not yet filled
            cells.append("<empty>")
    named = {}
    for name in code_names(fn.__code__):
        value = fn.__globals__.get(name)
        if isinstance(value, PLAIN + (tuple, list, dict, np.ndarray)) or torch.is_tensor(value) or (
                isinstance(value, types.FunctionType) and value.__module__ == fn.__module__):
            named[name] = value
    return (f"function({more(fn.__code__)},defaults={more(fn.__defaults__)},kwdefaults={more(fn.__kwdefaults__)},"
            f"closure=[{','.join(cells)}],globals={more(named)})")


def code_names(code: types.CodeType) -> set[str]:
    """Every name a code object and the code nested in it (comprehensions, inner functions) refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return names


def file_sha256(path: Optional[str]) -> str:
    """The sha256 of a file's bytes, or '' for no path."""
    if not path:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tool_version() -> str:
    """What wrote a file: this tool's version, with Python's, PyTorch's and h5py's."""
    import sys

    import h5py

    from landscape.version import __version__
    return (f"loss-landscape {__version__} (python {sys.version.split()[0]}, torch {torch.__version__}, "
            f"h5py {h5py.__version__})")

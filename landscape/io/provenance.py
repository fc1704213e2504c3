"""What a file records, in one table: every input that changes its numbers, and what is only a note.

A surface file records the inputs that made its values; a direction file, those that made its
directions. Resuming a surface, or reusing a direction file, compares the same table: a value
recorded under a `compared` key that differs from this run's is refused, in one line naming the
input. So what is recorded and what is compared come from one list and cannot drift apart;
`record()` refuses a key that is not listed. Adding an input (a new flag that changes the numbers)
is one line here, plus the line that records it.

Comparison rule: a key is compared when this run records it and the file does too (or the file
lacks it and the entry has a `default`, the value files written before the key existed imply).
Values are compared as text, so 1 and "1" agree.
"""
import hashlib
import time
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Input:
    key: str
    what: str                 # how a refusal names it
    compared: bool            # False: a note (when, by what, a path whose bytes are hashed under another key)
    default: object = None    # the value a file without this key implies (None: unknown, not compared)


def _note(key, what=""):
    return Input(key, what or key, False)


# ----------------------------------------------------------------------------- surface files
SURFACE = (
    # the model and where it sits
    Input("model", "model", True),
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
    Input("metrics", "metrics", True),
    Input("precision", "--precision", True),
    Input("bn_recalibrate", "--bn_recalibrate", True, default=0),
    Input("bn_recalibrate_batch", "--bn_recalibrate batch size", True, default=0),
    # what a point computes: eigenvalue maps (plot_hessian_eigen.py, eigen_surface)
    Input("eig_precision", "--precision of the eigenvalue maps", True),
    Input("eig_tol", "--tol", True),
    Input("eig_max_iter", "--max_iter", True),
    # the directions
    Input("dir_type", "--dir_type", True),
    Input("params", "--params", True),
    Input("dir_sha256", "directions", True),
    _note("seed", "--seed (its directions are compared through dir_sha256)"),
    _note("marked_points", "where the checkpoints sit (derived from the directions)"),
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


def keys(table):
    return {entry.key for entry in TABLES[table]}


def compared_keys(table):
    return {entry.key for entry in TABLES[table] if entry.compared}


def record(table, **fields):
    """The attributes a new file records: the caller's fields (each listed in `table`), plus what wrote
    it and when. A field that is not in the table is a bug: it would be recorded but never compared."""
    unknown = sorted(set(fields) - keys(table))
    assert not unknown, f"provenance keys not in the {table} table of landscape/io/provenance.py: {unknown}"
    out = dict(fields, tool=tool_version(), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if table == "surface":
        out["layout"] = "(ny, nx): Z[j, i] is the value at (x[i], y[j])"
    return out


def first_difference(table, recorded, mine):
    """(Input, recorded value, this run's value) of the first compared input that differs, or None.

    `recorded`: a file's attributes; `mine`: this run's record (only the keys that apply to it)."""
    for entry in TABLES[table]:
        if not entry.compared or entry.key not in mine:
            continue
        theirs = recorded.get(entry.key, entry.default)
        if theirs is None:
            continue
        if text(theirs) != text(mine[entry.key]):
            return entry, theirs, mine[entry.key]
    return None


def text(value):
    """A recorded value as comparable text: booleans as 0/1 (HDF5 may give numpy.bool_), the rest as str."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return str(int(bool(value)))
    return str(value)


def short(value):
    """A value for a one-line message: hashes shortened."""
    s = text(value)
    return s[:12] + "..." if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s


# ----------------------------------------------------------------------------- fingerprints
def tensors_sha256(*objs):
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


def tool_version():
    """What wrote a file: this tool's version, with Python's, PyTorch's and h5py's."""
    import sys

    import h5py

    from landscape import __version__
    return (f"loss-landscape {__version__} (python {sys.version.split()[0]}, torch {torch.__version__}, "
            f"h5py {h5py.__version__})")

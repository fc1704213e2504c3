"""Datasets as tensors: CIFAR-10 read straight from its pickles, the embedded 8x8 digits, custom data.

The evaluation set is materialised once as (inputs, labels) tensors, so the surface engine moves it
to the device once and slices batches from it; no DataLoader workers, no per-point host copies.

- CIFAR-10: the standard `cifar-10-batches-py` folder (data_batch_1..5, test_batch). Normalised as in
  the reference: mean (125.3, 123.0, 113.9)/255, std (63.0, 62.1, 66.7)/255; `raw_data` keeps [0, 1].
- digits: the 1,797 8x8 images inside scikit-learn; a fixed split (permutation of RandomState(0)):
  the first 1,437 train, the last 360 test. Pixels 0..16 are scaled to [0, 1], then standardised
  with DIGITS_MEAN/DIGITS_STD (the whole set's pixel mean/std) unless `raw_data`.
- custom: `path/to/file.py:function` or `module:function` returning (train, test), each an
  (inputs, labels) pair of tensors or a torch Dataset of such pairs (materialised by load_tensors).
  That is the user's own code. The commands load it with `load_data`, which keeps a split given as a
  Dataset, DataLoader, IterableDataset or re-iterable of batches as it is: the evaluation keeps it in
  memory or streams it (evaluation/batches.py, --data_in_memory).
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from landscape import user_code
from landscape.errors import UserError

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from landscape.evaluation.batches import Inputs

CIFAR_MEAN = [x / 255.0 for x in (125.3, 123.0, 113.9)]
CIFAR_STD = [x / 255.0 for x in (63.0, 62.1, 66.7)]
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_FILE = "test_batch"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"

DIGITS_MEAN, DIGITS_STD = 0.3053, 0.3760  # pixel mean/std of all 1,797 digits after /16
DIGITS_NUM_TRAIN = 1437
CLONE_ROOT = None  # the repository root, when a command runs through a clone's front door (plot_surface.py, ...)


@dataclass
class EvalData:
    """Train and test sets as CPU tensors: inputs (N, C, H, W) float32 (or a custom dataset's own inputs,
    e.g. int64 token ids), targets (N,) int64 labels (or the custom dataset's targets)."""
    name: str
    train_x: Optional[torch.Tensor]
    train_y: Optional[torch.Tensor]
    test_x: Optional[torch.Tensor]     # None (and test_y): no test set, or a test set kept as a stream
    test_y: Optional[torch.Tensor]
    train_stream: Any = None      # a custom split kept as it was given (load_data); its _x and _y are None
    test_stream: Any = None

    def split(self, name: str) -> Any:
        """The train or test split as the evaluation takes it: (inputs, targets), or the stream."""
        stream = getattr(self, f"{name}_stream")
        return stream if stream is not None else (getattr(self, f"{name}_x"), getattr(self, f"{name}_y"))

    def has(self, name: str) -> bool:
        """Whether the split exists: a custom dataset may give no test set (None)."""
        return getattr(self, f"{name}_stream") is not None or getattr(self, f"{name}_y") is not None

    def size(self, name: str) -> Optional[int]:
        """Examples of a split, where known without reading it (else None); 0 for a split that does not exist."""
        stream = getattr(self, f"{name}_stream")
        if stream is None:
            labels = getattr(self, f"{name}_y")
            return 0 if labels is None else len(labels)
        return len(stream) if isinstance(stream, torch.utils.data.Dataset) and hasattr(stream, "__len__") else None

    @property
    def num_classes(self) -> int:
        """Classes of integer labels (0 for other targets, e.g. a regression's)."""
        if not len(self.train_y) or self.train_y.is_floating_point():
            return 0
        test = self.test_y if self.test_y is not None and len(self.test_y) else None
        return int(max(self.train_y.max(), test.max() if test is not None else 0)) + 1


# ----------------------------------------------------------------------------- paths
def resolve_datapath(datapath: str) -> str:
    """Relative paths are taken from the working directory; run through a clone's front door, a path
    missing there is then tried in the clone (as the reference, run from its folder, found cifar10/data)."""
    if os.path.isabs(datapath) or os.path.exists(datapath) or CLONE_ROOT is None:
        return datapath
    return os.path.join(CLONE_ROOT, datapath)


def get_relative_path(file: str) -> str:
    """The reference's helper: `file` taken from the clone's root (where its dataloader.py sat), or from the
    working directory when the package runs installed."""
    return os.path.join(CLONE_ROOT or os.getcwd(), file)


def cifar_folder(datapath: str) -> str:
    """The `cifar-10-batches-py` folder under `datapath` (or `datapath` itself if it is that folder)."""
    if os.path.basename(os.path.normpath(datapath)) == CIFAR_FOLDER:
        return datapath
    return os.path.join(datapath, CIFAR_FOLDER)


# ----------------------------------------------------------------------------- CIFAR-10
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays and plain containers: a CIFAR batch needs nothing else."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _as_str_keys(d: dict[Any, Any]) -> dict[Any, Any]:
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def read_cifar_batch(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file -> (uint8 images (n, 3, 32, 32), int64 labels (n,)). Accepts bytes or str keys."""
    try:
        with open(path, "rb") as f:
            batch = _as_str_keys(_ArrayUnpickler(f, encoding="bytes").load())
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch["labels"], dtype=np.int64)
        data = data.reshape(len(data), 3, 32, 32)
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated, not a pickle, wrong keys or shapes: all mean a corrupt file
        raise UserError(f"cannot read CIFAR-10 file '{path}': corrupt or not a CIFAR-10 batch "
                        f"({type(e).__name__}: {str(e)[:100]})") from None
    if len(labels) != len(data):
        raise UserError(f"CIFAR-10 file '{path}' has {len(data)} images but {len(labels)} labels")
    return torch.from_numpy(data), torch.from_numpy(labels)


def read_cifar10(folder: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read all five training batches and the test batch as uint8 tensors."""
    missing = [f for f in CIFAR_TRAIN_FILES + [CIFAR_TEST_FILE] if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise UserError(f"CIFAR-10 not found: put data_batch_1..5 and test_batch in '{folder}' "
                        f"(missing {missing[0]}), or rerun with --download")
    parts = [read_cifar_batch(os.path.join(folder, f)) for f in CIFAR_TRAIN_FILES]
    test_x, test_y = read_cifar_batch(os.path.join(folder, CIFAR_TEST_FILE))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), test_x, test_y


def normalize_cifar(x_uint8: torch.Tensor, raw_data: bool) -> torch.Tensor:
    """uint8 (N, 3, 32, 32) -> float32 in [0, 1], then (x - mean) / std per channel unless raw_data."""
    x = x_uint8.float().div_(255)
    if not raw_data:
        mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(1, 3, 1, 1)
        x.sub_(mean).div_(std)
    return x


def download_cifar10(datapath: str) -> None:
    """Fetch the official archive, check its md5, unpack it under datapath."""
    os.makedirs(datapath, exist_ok=True)
    archive = os.path.join(datapath, os.path.basename(CIFAR_URL))
    if not (os.path.isfile(archive) and md5_of(archive) == CIFAR_MD5):
        print(f"downloading {CIFAR_URL} to {archive}")
        try:
            urllib.request.urlretrieve(CIFAR_URL, archive + ".part")
        except OSError as e:
            raise UserError(f"cannot download CIFAR-10 ({e}); put the files in "
                            f"'{cifar_folder(datapath)}' by hand") from None
        os.replace(archive + ".part", archive)
    if md5_of(archive) != CIFAR_MD5:
        raise UserError(f"'{archive}' has the wrong md5 (expected {CIFAR_MD5}); delete it and retry")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(datapath, filter="data")


def md5_of(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_cifar10(datapath: str, raw_data: bool = False, download: bool = False) -> EvalData:
    datapath = resolve_datapath(datapath)
    folder = cifar_folder(datapath)
    if download and not os.path.isfile(os.path.join(folder, CIFAR_TEST_FILE)):
        download_cifar10(datapath)
    tx, ty, vx, vy = read_cifar10(folder)
    return EvalData("cifar10", normalize_cifar(tx, raw_data), ty, normalize_cifar(vx, raw_data), vy)


# ----------------------------------------------------------------------------- digits
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits that ship inside scikit-learn: (images (1797, 8, 8) of 0..16, labels (1797,)).
    Read from the package's own data file (`sklearn/datasets/data/digits.csv.gz`, one row of 64 pixels
    and the label per image, as sklearn.datasets.load_digits reads it), without importing scikit-learn,
    which costs most of a second per process; through load_digits where the file is elsewhere."""
    import gzip
    import importlib.util
    spec = importlib.util.find_spec("sklearn")
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.isfile(path):
        with gzip.open(path, "rt") as f:
            rows = np.loadtxt(f, delimiter=",")
        return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_digits
    bunch = sk_digits()
    return bunch.images, bunch.target


def load_digits(raw_data: bool = False) -> EvalData:
    images, labels = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0   # (1797, 1, 8, 8)
    y = torch.tensor(labels, dtype=torch.int64)
    if not raw_data:
        x = (x - DIGITS_MEAN) / DIGITS_STD
    perm = torch.from_numpy(np.random.RandomState(0).permutation(len(y)))
    tr, te = perm[:DIGITS_NUM_TRAIN], perm[DIGITS_NUM_TRAIN:]
    return EvalData("digits", x[tr], y[tr], x[te], y[te])


# ----------------------------------------------------------------------------- custom
def materialize(split: Any, what: str) -> tuple[Inputs, torch.Tensor]:
    """(inputs, targets) tensors, or a Dataset of pairs -> tensors. Float inputs and targets become
    float32, integer targets int64; integer inputs (token ids) keep their type."""
    if isinstance(split, (tuple, list)) and len(split) == 2 and all(torch.is_tensor(t) for t in split):
        x, y = split
    elif isinstance(split, (torch.utils.data.DataLoader, torch.utils.data.IterableDataset)):
        batches = isinstance(split, torch.utils.data.DataLoader)     # a DataLoader yields batches, the other examples
        try:
            items = [(torch.as_tensor(a), torch.as_tensor(b)) for a, b in split]
            if not items:
                raise ValueError("it yielded nothing")
            join = torch.cat if batches else torch.stack
            x, y = join([a for a, _ in items]), join([b for _, b in items])
        except Exception as e:
            raise UserError(f"custom dataset: cannot read the {what} set as (input, target) "
                            f"{'batches' if batches else 'pairs'}: {e}") from None
    elif isinstance(split, torch.utils.data.Dataset) or hasattr(split, "__getitem__"):
        try:
            pairs = [split[i] for i in range(len(split))]
            x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        except Exception as e:
            raise UserError(f"custom dataset: cannot read the {what} set as (input, target) pairs: {e}") from None
    else:
        raise UserError(f"custom dataset: the {what} set must be an (inputs, targets) pair of tensors "
                        f"or a Dataset, not {type(split).__name__}")
    if len(x) != len(y):
        raise UserError(f"custom dataset: the {what} set has {len(x)} inputs but {len(y)} targets")
    return normalize_dtypes(x, y)


def normalize_dtypes(x: Inputs, y: torch.Tensor) -> tuple[Inputs, torch.Tensor]:
    """Float inputs and targets become float32, integer targets int64; integer inputs (token ids) and
    inputs given as tuples or dicts keep their types. Applied to whole sets and to streamed batches."""
    x = x.float() if torch.is_tensor(x) and x.is_floating_point() else x
    y = y.float() if y.is_floating_point() else (y.long() if y.dtype != torch.bool else y)
    return x, y


def is_tensor_pair(split: Any) -> bool:
    return isinstance(split, (tuple, list)) and len(split) == 2 and all(torch.is_tensor(t) for t in split)


def load_custom(spec: str, lazy: bool = False) -> EvalData:
    """A custom dataset's (train, test); test may be None (no test set: no test maps). lazy: splits not
    given as tensors stay as they are (streams)."""
    result = user_code.call_user(user_code.load_callable(spec, "dataset"), f"dataset function '{spec}'")
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise UserError(f"dataset function '{spec}' must return (train, test), with test None if there is none")
    if result[0] is None:
        raise UserError(f"dataset function '{spec}' returned no training set (None): the surface is computed on it")
    given = [s for s in result if s is not None]
    if not lazy or all(is_tensor_pair(s) for s in given):
        (tx, ty), (vx, vy) = [materialize(s, w) if s is not None else (None, None)
                              for s, w in zip(result, ("train", "test"))]
        return EvalData(spec, tx, ty, vx, vy)
    (tx, ty), (vx, vy) = [materialize(s, w) if is_tensor_pair(s) else (None, None)
                          for s, w in zip(result, ("train", "test"))]
    train, test = [None if s is None or is_tensor_pair(s) else s for s in result]
    return EvalData(spec, tx, ty, vx, vy, train, test)


# ----------------------------------------------------------------------------- subsets and labels
def split_indices(n: int, data_split: int, split_idx: int) -> Optional[torch.Tensor]:
    """The reference's subset: seed 0, then choice(arange(n), n // K, replace=False).

    As in the reference, `split_idx` only names the file: every index selects the same subset.
    """
    if data_split < 1 or not 0 <= split_idx < data_split:
        raise UserError(f"--split_idx {split_idx} must be in [0, --data_split={data_split})")
    if data_split == 1:
        return None
    return torch.from_numpy(np.random.RandomState(0).choice(np.arange(n), n // data_split, replace=False))


def load_loader_file(path: str, allow_pickle: bool, what: str) -> tuple[Optional[torch.Tensor], torch.Tensor]:
    """A `--trainloader/--testloader` file -> (inputs or None, labels).

    Our trainer writes these as tensor-only dicts {'targets': labels}: safe to read. The reference
    wrote pickled DataLoaders, whose loading runs code: only with `allow_pickle`.
    """
    if not os.path.isfile(path):
        raise UserError(f"{what} file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise UserError(f"'{path}' is a pickled DataLoader; loading it runs code. Pass --allow_pickle "
                            "only if you trust the file") from None
        obj = torch.load(path, map_location="cpu", weights_only=False)
        xs, ys = zip(*[(x, y) for x, y in obj])
        return torch.cat(xs).float(), torch.cat(ys).long()
    except Exception as e:
        raise UserError(f"cannot read {what} file '{path}': {str(e)[:120]}") from None
    if isinstance(obj, dict) and torch.is_tensor(obj.get("targets")):
        return (obj["inputs"].float() if torch.is_tensor(obj.get("inputs")) else None), obj["targets"].long()
    raise UserError(f"{what} file '{path}' holds neither a DataLoader nor a {{'targets': tensor}} dict")


def apply_loader_file(x: Optional[Inputs], y: Optional[torch.Tensor], path: str, allow_pickle: bool,
                      what: str) -> tuple[Optional[Inputs], Optional[torch.Tensor]]:
    if not path:
        return x, y
    if y is None:
        split = what[2:].replace("loader", "")
        raise UserError(f"{what} '{path}': the dataset has no {split} set for its labels to replace")
    fx, fy = load_loader_file(path, allow_pickle, what)
    if fx is None:
        if len(fy) != len(y):
            raise UserError(f"{what} file '{path}' has {len(fy)} labels but the dataset has {len(y)} images")
        return x, fy
    return fx, fy


# ----------------------------------------------------------------------------- entry points
def load_tensors(dataset: str = "cifar10", datapath: str = "cifar10/data", raw_data: bool = False,
                 data_split: int = 1, split_idx: int = 0, trainloader: str = "", testloader: str = "",
                 allow_pickle: bool = False, download: bool = False) -> EvalData:
    """The evaluation data as CPU tensors (see the module docstring for each dataset)."""
    return load_data(dataset, datapath, raw_data, data_split, split_idx, trainloader, testloader, allow_pickle,
                     download, lazy=False)


def load_data(dataset: str = "cifar10", datapath: str = "cifar10/data", raw_data: bool = False,
              data_split: int = 1, split_idx: int = 0, trainloader: str = "", testloader: str = "",
              allow_pickle: bool = False, download: bool = False, lazy: bool = True) -> EvalData:
    """The evaluation data; lazy: a custom split given as a Dataset, DataLoader or iterable stays one."""
    if dataset == "cifar10":
        data = load_cifar10(datapath, raw_data, download)
    elif dataset == "digits":
        data = load_digits(raw_data)
    elif user_code.is_user_spec(dataset):
        data = load_custom(dataset, lazy)
    else:
        raise UserError(f"unknown dataset '{dataset}'; choose cifar10, digits, or path/to/file.py:function")
    if data.train_stream is not None or data.test_stream is not None:
        given = [f for f, v in (("--data_split", data_split > 1), ("--trainloader", trainloader),
                                ("--testloader", testloader)) if v]
        if given:
            raise UserError(f"{given[0]} applies to data held as tensors; dataset '{dataset}' gives a "
                            "Dataset, DataLoader or iterable")
        return data
    data.train_x, data.train_y = apply_loader_file(data.train_x, data.train_y, trainloader, allow_pickle, "--trainloader")
    data.test_x, data.test_y = apply_loader_file(data.test_x, data.test_y, testloader, allow_pickle, "--testloader")
    idx = split_indices(len(data.train_y), data_split, split_idx)
    if idx is not None:
        data.train_x, data.train_y = data.train_x[idx], data.train_y[idx]
    return data


def load_dataset(dataset: str = "cifar10", datapath: str = "cifar10/data", batch_size: int = 128,
                 threads: int = 2, raw_data: bool = False, data_split: int = 1, split_idx: int = 0,
                 trainloader_path: str = "", testloader_path: str = ""
                 ) -> tuple[DataLoader, Optional[DataLoader]]:
    """The reference's signature, for notebooks: (train_loader, test_loader) over in-memory tensors."""
    d = load_tensors(dataset, datapath, raw_data, data_split, split_idx, trainloader_path, testloader_path)
    make = lambda x, y: torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)
    return make(d.train_x, d.train_y), (make(d.test_x, d.test_y) if d.has("test") else None)

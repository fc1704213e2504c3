"""A set's batches on the device for every grid point: sliced from tensors kept there (the fast
path), or streamed from any re-iterable of (inputs, targets) batches when the set does not fit.

What a user may give as data (`classify`):
- an (inputs, targets) pair of tensors (inputs may be a tuple or dict of tensors);
- a map-style Dataset of (input, target) pairs, batched by the batch size (DATASET_BATCH when auto);
- a DataLoader: its batches. Over a map-style Dataset with the default samplers it is rebuilt in
  index order (its shuffling is dropped, drop_last kept), so every pass gives the same batches and a
  rank can read its shard alone; any other DataLoader is taken as an iterable;
- an IterableDataset of (input, target) samples, batched like a Dataset, or any re-iterable of
  (inputs, targets) batches: an object whose __iter__ starts a new pass. A generator can be read
  only once and is refused.

Shards (ranks_per_point K): group rank g reads only examples [g N / K, (g + 1) N / K) of a map-style
source (a Subset), and takes every K-th batch, from batch g on, of an iterable one (it still reads
the others: an iterable cannot skip). No example is repeated or left out (no sampler padding).

In memory or streamed (`data_in_memory` auto | yes | no): auto keeps a rank's shards in memory when
they fit its memory budget (`memory_budget`: HOST_MEMORY_SHARE of MemAvailable shared by the ranks
on the node, and on a GPU also DEVICE_MEMORY_SHARE of its free memory), estimated from the first
batch, and streams them otherwise; a shard of unknown length is read into memory until it passes
the budget. Every rank takes the same path (streamed if any rank must). A streamed shard is read
again for each point, in the same order every time, the next batch prepared in a thread (converted,
pinned on a GPU) while the model runs on the current one, and copied with non_blocking=True.

Checks, before anything is written (`prepare_sets`, collective): every rank must see the same
number of examples; a source that yields nothing is refused; an iterable of unknown length is read
twice and must yield the same number both times. Each later pass is checked against the first.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch

from landscape.errors import LandscapeError

if TYPE_CHECKING:
    from landscape.parallel.dist import PointGroup
    from landscape.spec import BatchSize

    Inputs = Union[torch.Tensor, Sequence[torch.Tensor], dict[str, torch.Tensor]]   # a tensor, tuple or dict
    Batch = tuple[Inputs, torch.Tensor]                     # (inputs, targets)
    Convert = Callable[[Inputs, torch.Tensor], Batch]       # convert(inputs, targets) -> (inputs, targets)
    Transform = Callable[[torch.Tensor], torch.Tensor]      # applied to 4-D float input tensors on the device
    Device = Union[str, torch.device]

DATA_IN_MEMORY = ("auto", "yes", "no")
HOST_MEMORY_SHARE = 0.25          # in-memory sets may take this share of MemAvailable (per node) ...
DEVICE_MEMORY_SHARE = 0.25        # ... and of a GPU's free memory (the rest: activations, the Hessian's graph)
DATASET_BATCH = 256               # batch size of a Dataset / IterableDataset given with batch_size auto
RELEASE_EVERY = 64 << 20          # streamed bytes between two releases of mapped file pages (release_file_pages)


# ----------------------------------------------------------------------------- what the user gave
@dataclass
class Source:
    """One set as the user gave it. kind: tensors | dataset (map-style) | loader (a DataLoader over a
    map-style Dataset, rebuilt per shard) | iterable (batches) | samples (an IterableDataset)."""
    kind: str
    data: Any
    length: Optional[int] = None  # examples, where known without reading


def classify(data: Any, what: str = "data") -> Source:
    """The Source of `data`; LandscapeError (one line) for what cannot be data."""
    utils = torch.utils.data
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1]):
        n = batch_count(data[0])
        if n != len(data[1]):
            raise LandscapeError(f"{what}: {n} inputs but {len(data[1])} targets")
        return Source("tensors", (data[0], data[1]), n)
    if isinstance(data, utils.DataLoader):
        plain = type(data.sampler) in (utils.SequentialSampler, utils.RandomSampler)
        if plain and data.batch_size is not None and hasattr(data.dataset, "__len__") and \
                not isinstance(data.dataset, utils.IterableDataset):
            n = len(data.dataset)
            return Source("loader", data, n // data.batch_size * data.batch_size if data.drop_last else n)
        return Source("iterable", data)
    if isinstance(data, utils.IterableDataset):
        return Source("samples", data)
    if isinstance(data, utils.Dataset) and hasattr(data, "__len__"):
        return Source("dataset", data, len(data))
    if hasattr(data, "__next__") or (hasattr(data, "__iter__") and iter(data) is data):
        raise LandscapeError(f"{what} is an iterator ({type(data).__name__}), which can be read only once; give a "
                             "re-iterable: a list of batches, a Dataset, a DataLoader, or an object whose __iter__ "
                             "starts a new pass")
    if hasattr(data, "__iter__"):
        return Source("iterable", data)
    raise LandscapeError(f"{what} must be an (inputs, targets) pair of tensors, a Dataset, a DataLoader or a "
                         f"re-iterable of (inputs, targets) batches, not {type(data).__name__}")


def batch_count(inputs: Inputs) -> int:
    if isinstance(inputs, dict):
        return len(next(iter(inputs.values())))
    if isinstance(inputs, (tuple, list)):
        return len(inputs[0])
    return len(inputs)


def take(inputs: Inputs, start: int, stop: int) -> Inputs:
    """Rows start:stop of a tensor, a tuple of tensors or a dict of tensors."""
    if isinstance(inputs, dict):
        return {k: v[start:stop] for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(v[start:stop] for v in inputs)
    return inputs[start:stop]


def to_device(inputs: Inputs, device: Device, transform: Optional[Transform] = None,
              non_blocking: bool = False) -> Inputs:
    """Move a tensor / tuple / dict of tensors to `device` (applying `transform` to 4-D float tensors)."""
    def move(t):
        t = t.to(device, non_blocking=non_blocking)
        return transform(t) if transform is not None and t.dim() == 4 and t.is_floating_point() else t
    if isinstance(inputs, dict):
        return {k: move(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(move(v) for v in inputs)
    return move(inputs)


def nbytes(obj: Any) -> int:
    """Bytes of a tensor, or of the tensors in a tuple / dict."""
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(v) for v in obj)
    return obj.numel() * obj.element_size() if torch.is_tensor(obj) else 0


def concat(parts: Sequence[Inputs]) -> Inputs:
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], (tuple, list)):
        return type(parts[0])(torch.cat([p[i] for p in parts]) for i in range(len(parts[0])))
    return torch.cat(parts)


def as_pair(batch: Any, what: str) -> Batch:
    """(inputs, targets) of one batch (a pair, or a list of two from default_collate)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise LandscapeError(f"{what}: every batch must be an (inputs, targets) pair, got {type(batch).__name__}")
    targets = batch[1] if torch.is_tensor(batch[1]) else torch.as_tensor(batch[1])
    if batch_count(batch[0]) != len(targets):
        raise LandscapeError(f"{what}: a batch has {batch_count(batch[0])} inputs but {len(targets)} targets")
    return batch[0], targets


# ----------------------------------------------------------------------------- shards
def shard_bounds(n: int, g: int, k: int) -> tuple[int, int]:
    """Examples [lo, hi) of shard g of k: contiguous, sizes differing by at most one."""
    return g * n // k, (g + 1) * n // k


class TensorBatches:
    """Batches sliced from CPU tensors (a shard of a set given as tensors, when it is streamed)."""

    def __init__(self, inputs: Inputs, targets: torch.Tensor, batch_size: int) -> None:
        self.inputs, self.targets, self.batch_size = inputs, targets, batch_size

    def __iter__(self) -> Iterator[Batch]:
        for s in range(0, len(self.targets), self.batch_size):
            yield take(self.inputs, s, s + self.batch_size), self.targets[s:s + self.batch_size]


class RoundRobin:
    """Every k-th batch of a re-iterable, from batch g on: group rank g's shard of an iterable."""

    def __init__(self, source: Iterable[Any], g: int, k: int) -> None:
        self.source, self.g, self.k = source, g, k

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.source):
            if i % self.k == self.g:
                yield batch


def rebuilt_loader(loader: torch.utils.data.DataLoader,
                   dataset: torch.utils.data.Dataset) -> torch.utils.data.DataLoader:
    """`loader`'s settings (batch size, collate_fn, workers) over `dataset`, in index order."""
    kw = dict(batch_size=loader.batch_size, shuffle=False, num_workers=loader.num_workers,
              collate_fn=loader.collate_fn, drop_last=False, timeout=loader.timeout,
              worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context)
    if loader.num_workers > 0:
        kw.update(prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers)
    return torch.utils.data.DataLoader(dataset, **kw)


class StackExamples:
    """A DataLoader's collate_fn for a Dataset or IterableDataset the user gave: PyTorch's default
    collation, with one line instead of a traceback when the examples do not stack (items of
    different shapes: often an IterableDataset that yields whole batches, the last one short)."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, items: list[Any]) -> Any:
        try:
            return torch.utils.data.default_collate(items)
        except (RuntimeError, TypeError) as e:
            raise LandscapeError(f"{self.what}: its items do not stack into a batch ({str(e).splitlines()[0][:120]}); "
                                 "a Dataset or IterableDataset must yield single examples (x, y) of one shape; one "
                                 "that yields (inputs, targets) batches can be given as a plain re-iterable of "
                                 "batches (any object whose __iter__ yields them), or wrapped in "
                                 "DataLoader(..., batch_size=None)") from None


def shard(src: Source, g: int, k: int, batch_size: Optional[BatchSize],
          what: str = "the data") -> tuple[Iterable[Any], Optional[int]]:
    """(re-iterable of this rank's CPU batches, its examples or None where unknown): shard g of k."""
    bs = batch_size if isinstance(batch_size, int) else DATASET_BATCH
    utils = torch.utils.data
    if src.kind == "tensors":
        lo, hi = shard_bounds(src.length, g, k)
        return TensorBatches(take(src.data[0], lo, hi), src.data[1][lo:hi], bs), hi - lo
    if src.kind in ("dataset", "loader"):
        lo, hi = shard_bounds(src.length, g, k)
        if src.kind == "dataset":
            return utils.DataLoader(utils.Subset(src.data, range(lo, hi)), batch_size=bs, shuffle=False,
                                    collate_fn=StackExamples(what)), hi - lo
        return rebuilt_loader(src.data, utils.Subset(src.data.dataset, range(lo, hi))), hi - lo
    batches = utils.DataLoader(src.data, batch_size=bs, collate_fn=StackExamples(what)) if src.kind == "samples" \
        else src.data
    return (RoundRobin(batches, g, k) if k > 1 else batches), None


# ----------------------------------------------------------------------------- memory
def mem_available() -> Optional[int]:
    """Bytes of MemAvailable (/proc/meminfo), or None where the OS does not say."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) * 1024
    except (OSError, StopIteration, ValueError):
        return None


def memory_budget(device: Device, ranks_on_node: int = 1) -> tuple[int, Optional[int]]:
    """(host, device) bytes this rank may keep its sets in: HOST_MEMORY_SHARE of MemAvailable shared
    by the node's ranks (of 16 GiB where the OS does not say), and on a GPU DEVICE_MEMORY_SHARE of its
    free memory (None on the CPU, where the sets stay in host memory)."""
    host = mem_available()
    host = int((host if host is not None else 16 << 30) * HOST_MEMORY_SHARE / max(1, ranks_on_node))
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return host, int(free * DEVICE_MEMORY_SHARE)
    return host, None


def release_file_pages(min_bytes: int = 64 << 20) -> int:
    """Drop this process's resident pages of large read-only shared file mappings (np.memmap /
    np.load(mmap_mode='r') / torch.from_file(shared=True) of a dataset); returns the bytes advised.

    Touched pages of a mapping count in the process's RSS until it is unmapped, so a pass over a
    memory-mapped file larger than memory would grow the RSS to the file's size. madvise(MADV_DONTNEED)
    on a read-only MAP_SHARED mapping only unmaps the pages: the next access faults them back in from
    the page cache or the file, so no data can change. Private mappings (libraries) are left alone.
    """
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        with open("/proc/self/maps") as f:
            lines = f.readlines()
    except OSError:
        return 0
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[1] != "r--s" or not parts[5].startswith("/"):
            continue
        lo, hi = (int(v, 16) for v in parts[0].split("-"))
        if hi - lo >= min_bytes and libc.madvise(lo, hi - lo, 4) == 0:      # 4: MADV_DONTNEED
            done += hi - lo
    return done


# ----------------------------------------------------------------------------- passes over a source
def read_pass(batches: Iterable[Any], what: str, convert: Optional[Convert] = None,
              keep_bytes: Optional[float] = None) -> tuple[int, Optional[Batch], Optional[list[Batch]]]:
    """One pass: (examples, first batch, kept batches). Batches are kept while their bytes stay
    within keep_bytes (None: keep none; math.inf: keep all); kept is None once they pass it."""
    n, first, kept, size = 0, None, ([] if keep_bytes is not None else None), 0
    for batch in batches:
        xb, yb = as_pair(batch, what)
        if convert is not None:
            xb, yb = convert(xb, yb)
        n += len(yb)
        first = first if first is not None else (xb, yb)
        if kept is not None:
            size += nbytes(xb) + nbytes(yb)
            kept = kept + [(xb, yb)] if size <= keep_bytes else None
    return n, first, kept


def first_batch(batches: Iterable[Any], what: str, convert: Optional[Convert] = None) -> Optional[Batch]:
    """The first batch of a pass (None if it yields nothing)."""
    for batch in batches:
        xb, yb = as_pair(batch, what)
        return convert(xb, yb) if convert is not None else (xb, yb)
    return None


# ----------------------------------------------------------------------------- preparing the sets (collective)
@dataclass
class HostSet:
    """This rank's part of one set, ready for the device: its shard as CPU tensors (in memory), or
    a re-iterable of its CPU batches (streamed)."""
    name: str
    tensors: Optional[Batch] = None          # (inputs, targets) of the shard, in memory
    batches: Optional[Iterable[Any]] = None  # else the shard's batches, read for each point
    count: int = 0                           # examples in this rank's shard
    total: int = 0                           # examples in the whole set, every shard
    sample: Optional[Batch] = None           # a first batch of the set (CPU): the model, loss, metric checks
    convert: Optional[Convert] = None        # convert(inputs, targets) -> (inputs, targets), streamed batches

    @property
    def in_memory(self) -> bool:
        return self.tensors is not None


def check_mode(mode: str) -> str:
    if mode not in DATA_IN_MEMORY:
        raise LandscapeError(f"data_in_memory {mode!r} must be one of: {', '.join(DATA_IN_MEMORY)}")
    return mode


def describe_sources(named: Sequence[tuple[str, Any]], comm: Any) -> list[tuple[str, Source]]:
    """Classify every set on every rank; refuse lengths that differ between ranks. Collective."""
    from landscape.parallel import mpi
    sources = mpi.agree(comm, lambda: [(name, classify(data, f"the {name} data")) for name, data in named])
    lengths = [[s.length for _, s in sources]] if comm is None else comm.allgather([s.length for _, s in sources])
    for i, (name, _) in enumerate(sources):
        seen = [rank_lengths[i] for rank_lengths in lengths]
        odd = next((r for r, n in enumerate(seen) if n != seen[0]), None)
        if odd is not None:
            raise mpi_error(comm, f"the {name} data has {seen[0]} examples on rank 0 but {seen[odd]} on rank "
                                  f"{odd}; every rank must see the same data")
    return sources


def mpi_error(comm: Any, message: str) -> LandscapeError:
    """The error every rank raises for a verdict they all reached: rank 0 says it, the others stay quiet."""
    from landscape.parallel import mpi
    return LandscapeError(message) if comm is None or comm.Get_rank() == 0 else mpi.QuietExit(message)


def read_shard(name: str, src: Source, g: int, k: int, batch_size: Optional[BatchSize], mode: str,
               budget: tuple[int, Optional[int]], convert: Optional[Convert]) -> HostSet:
    """This rank's HostSet for one source (local: no communication). Reads what the choice needs:
    nothing or one batch for sources of known length, one or two passes for the others. budget:
    (host, device) bytes left (memory_budget)."""
    what = f"the {name} data"
    host, device = budget
    if src.kind == "tensors":       # already in host memory: streamed only when asked, or too big for the GPU
        lo, hi = shard_bounds(src.length, g, k)
        x, y = take(src.data[0], lo, hi), src.data[1][lo:hi]
        if convert is not None:
            x, y = convert(x, y)
        fits = mode == "yes" or (mode == "auto" and (device is None or nbytes(x) + nbytes(y) <= device))
        if fits:
            return HostSet(name, tensors=(x, y), count=hi - lo, total=src.length, sample=(take(x, 0, 64), y[:64]))
        return HostSet(name, batches=TensorBatches(x, y, batch_size if isinstance(batch_size, int) else DATASET_BATCH),
                       count=hi - lo, total=src.length, sample=(take(x, 0, 64), y[:64]))
    budget = host if device is None else min(host, device)
    batches, count = shard(src, g, k, batch_size, what)
    if count is not None:                                       # length known: one batch tells the size
        sample = first_batch(batches, what, convert)
        if sample is None:
            raise LandscapeError(f"{what} yielded no examples")
        per_example = (nbytes(sample[0]) + nbytes(sample[1])) / max(1, len(sample[1]))
        fits = mode == "yes" or (mode == "auto" and per_example * count <= budget)
        if fits:
            n, _, kept = read_pass(batches, what, convert, math.inf)
            if n != count:
                raise LandscapeError(f"{what} yielded {n} examples, but its length is {count}")
            return HostSet(name, tensors=(concat([b[0] for b in kept]), torch.cat([b[1] for b in kept])),
                           count=count, total=src.length, sample=sample)
        return HostSet(name, batches=batches, count=count, total=src.length, sample=sample, convert=convert)
    keep = math.inf if mode == "yes" else (budget if mode == "auto" else None)
    n, sample, kept = read_pass(batches, what, convert, keep)
    if sample is None:
        raise LandscapeError(f"{what} yielded no examples" + (" on this rank's shard" if k > 1 else ""))
    if kept is not None:
        return HostSet(name, tensors=(concat([b[0] for b in kept]), torch.cat([b[1] for b in kept])),
                       count=n, sample=sample)
    again, _, _ = read_pass(batches, what, convert)
    if again != n:
        raise LandscapeError(f"{what} yielded {again} examples on its second pass but {n} on the first; it must "
                             "give the same batches every time it is iterated")
    return HostSet(name, batches=batches, count=n, sample=sample, convert=convert)


def prepare_sets(named: Sequence[tuple[str, Any]], comm: Any = None, group: Optional[PointGroup] = None,
                 device: Device = "cpu", mode: str = "auto", batch_size: Optional[BatchSize] = "auto",
                 convert: Optional[Convert] = None, ranks_on_node: int = 1) -> tuple[list[HostSet], str]:
    """[(name, data)] -> ([HostSet], 'yes' | 'no'): this rank's shard of each set, kept in memory or
    streamed. Collective over comm (every rank calls it); bad data raises LandscapeError on rank 0 and
    QuietExit on the others, before anything is written. `convert` normalises each batch's dtypes."""
    from landscape.parallel import mpi
    check_mode(mode)
    g, k = (group.rank, group.size) if group is not None else (0, 1)
    sources = describe_sources(named, comm)
    for name, src in sources:
        if src.length is not None and src.length < k:
            raise mpi_error(comm, f"the {name} data has {src.length} examples, fewer than the {k} ranks per point")
    host, dev = memory_budget(device, ranks_on_node)

    def read_all():
        out, left_host, left_dev = [], host, dev
        for name, src in sources:
            hs = read_shard(name, src, g, k, batch_size, mode, (left_host, left_dev), convert)
            used = nbytes(hs.tensors) if hs.in_memory else 0
            left_host -= used if src.kind != "tensors" else 0    # the sets share the budget, train first
            left_dev = None if left_dev is None else left_dev - used
            out.append(hs)
        return out
    sets = mpi.agree(comm, read_all)
    counts = torch.tensor([hs.count for hs in sets], dtype=torch.float64)
    if group is not None:                                       # a set's total: its shards' counts
        group.sum_(counts)
    seen = [(counts.tolist(), [hs.in_memory for hs in sets])]
    seen = seen if comm is None else comm.allgather(seen[0])
    for i, hs in enumerate(sets):
        totals = [s[0][i] for s in seen]
        if len(set(totals)) > 1:                                # sources of unknown length, read on each rank
            odd = next(r for r, t in enumerate(totals) if t != totals[0])
            raise mpi_error(comm, f"the {hs.name} data yielded {totals[0]:.0f} examples on rank 0 but "
                                  f"{totals[odd]:.0f} on rank {odd}; every rank must see the same data")
        hs.total = int(totals[0])
        if hs.in_memory and not all(s[1][i] for s in seen):   # every rank takes the same path
            size = batch_size if isinstance(batch_size, int) else DATASET_BATCH
            hs.batches, hs.tensors = TensorBatches(*hs.tensors, size), None
    paths = ["yes" if hs.in_memory else "no" for hs in sets]
    return sets, paths[0] if len(set(paths)) == 1 else ", ".join(f"{hs.name} {p}" for hs, p in zip(sets, paths))


# ----------------------------------------------------------------------------- on the device
class DeviceSet:
    """A set kept on the device, batched by slicing: no host copies per point."""

    streamed = False

    def __init__(self, inputs: Inputs, targets: torch.Tensor, batch_size: int,
                 total: Optional[int] = None) -> None:
        self.inputs, self.targets, self.batch_size = inputs, targets, int(batch_size)
        self.count, self.total = len(targets), total or len(targets)

    def __iter__(self) -> Iterator[Batch]:
        for s in range(0, self.count, self.batch_size):
            yield take(self.inputs, s, s + self.batch_size), self.targets[s:s + self.batch_size]


class Prefetcher:
    """Iterate `batches` in a thread, one batch ahead of the consumer: convert it, pin it (for
    non_blocking copies to a GPU), release mapped file pages now and then. Errors reach the consumer.
    `waited` accumulates the seconds the consumer spent waiting for a batch."""

    _END = object()

    def __init__(self, batches: Iterable[Any], what: str, convert: Optional[Convert] = None,
                 pin: bool = False) -> None:
        self.batches, self.what, self.convert, self.pin = batches, what, convert, pin
        self.waited = 0.0

    def produce(self, q: queue.Queue, stop: threading.Event) -> None:
        try:
            since_release = 0
            for batch in self.batches:
                xb, yb = as_pair(batch, self.what)
                if self.convert is not None:
                    xb, yb = self.convert(xb, yb)
                since_release += nbytes(xb)
                if since_release >= RELEASE_EVERY:
                    release_file_pages()
                    since_release = 0
                if self.pin:
                    xb, yb = pin(xb), pin(yb)
                while not stop.is_set():
                    try:
                        q.put((xb, yb), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            q.put(self._END)
        except BaseException as e:      # hand the error to the consumer
            q.put(e)

    def __iter__(self) -> Iterator[Batch]:
        q, stop = queue.Queue(maxsize=1), threading.Event()
        worker = threading.Thread(target=self.produce, args=(q, stop), daemon=True)
        worker.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = q.get()
                self.waited += time.perf_counter() - t0
                if item is self._END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():    # unblock a producer waiting to put
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(0.05)


def pin(obj: Inputs) -> Inputs:
    if isinstance(obj, dict):
        return {k: pin(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(pin(v) for v in obj)
    return obj.pin_memory()


class StreamedSet:
    """This rank's shard of a set, read again for each point (same batches, same order), prefetched.
    Each pass must yield `count` examples, as the first did."""

    streamed = True

    def __init__(self, batches: Iterable[Any], count: int, total: int, device: Device, name: str = "",
                 transform: Optional[Transform] = None, convert: Optional[Convert] = None) -> None:
        self.batches, self.count, self.total, self.device = batches, count, total, torch.device(device)
        self.name, self.transform, self.convert = name, transform, convert
        self.waited = 0.0         # seconds spent waiting for data, all passes

    def __iter__(self) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        feed = Prefetcher(self.batches, f"the {self.name} data", self.convert, pin=cuda)
        n = 0
        try:
            for xb, yb in feed:
                n += len(yb)
                yield to_device(xb, self.device, self.transform, cuda), yb.to(self.device, non_blocking=cuda)
        finally:
            self.waited += feed.waited
        if n != self.count:
            raise LandscapeError(f"the {self.name} data yielded {n} examples on this pass but {self.count} on the "
                                 "first; it must give the same batches every time it is iterated")


def on_device(hs: Union[HostSet, Sequence[Any]], device: Device, batch_size: int,
              transform: Optional[Transform] = None) -> Union[DeviceSet, StreamedSet]:
    """A HostSet (or an (inputs, targets) pair) on `device`: a DeviceSet or a StreamedSet."""
    if isinstance(hs, (tuple, list)):
        hs = HostSet("", tensors=tuple(hs), count=len(hs[1]), total=len(hs[1]))
    if hs.in_memory:
        x, y = hs.tensors
        return DeviceSet(to_device(x, device, transform), y.to(device), batch_size, hs.total)
    return StreamedSet(hs.batches, hs.count, hs.total, device, hs.name, transform, hs.convert)

"""Which grid point is computed by which rank, and when.

Rank 0 keeps the queue of missing points. Every rank, rank 0 included, computes chunks of points;
the other ranks ask rank 0 for their next chunk when they return a finished one (dynamic
scheduling), so fast and slow ranks finish together. Each worker holds one chunk in reserve, so it
never idles while rank 0 is busy with a point of its own. Chunks are sized from the worker's own
time per point (about CHUNK_SECONDS of work each), shrinking near the end of the queue.

Results travel to rank 0 with each request: O(chunk) messages, never a whole-array reduce.

With data-parallel points (groups of K ranks, parallel/dist.py) the group leaders (group rank 0)
take the part of ranks above: under MPI they run the same loops over a leaders' communicator
(run_groups), and the other ranks of each group compute the chunks their leader broadcasts. Under
torchrun there is no MPI: the leaders claim chunks from the rendezvous store's atomic counter and
file the results there for rank 0 (run_store). `run` picks the right one.
"""
from __future__ import annotations

import math
import pickle
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt
    import torch.distributed

    from landscape.parallel.dist import PointGroup

    Indices = Union[np.ndarray, Sequence[int]]          # flat indices of grid points
    Compute = Callable[[np.ndarray], np.ndarray]        # compute(indices) -> values (len(indices), nvalues)
    Store = Callable[[np.ndarray, np.ndarray], None]    # store(indices, values): records results on rank 0
    Tick = Callable[[], None]                           # runs between chunks (periodic file writes)

TAG_REQUEST, TAG_WORK, TAG_BYE = 11, 12, 13
CHUNK_SECONDS = 0.25
MAX_CHUNK = 4096


# ----------------------------------------------------------------------------- pure helpers
def get_unplotted_indices(vals: npt.ArrayLike, xcoordinates: npt.ArrayLike,
                          ycoordinates: Optional[npt.ArrayLike] = None,
                          missing: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices of points still at `missing`, their coordinates): the reference's helper, exact test."""
    inds = np.flatnonzero(np.asarray(vals).ravel() == missing)
    if ycoordinates is None:
        return inds, np.asarray(xcoordinates).ravel()[inds]
    xx, yy = np.meshgrid(xcoordinates, ycoordinates)
    return inds, np.c_[xx.ravel()[inds], yy.ravel()[inds]]


def split_inds(num_inds: int, nproc: int) -> list[range]:
    """Contiguous, near-equal slices of range(num_inds), one per rank (the reference's static split)."""
    chunk, rem = divmod(num_inds, nproc)
    return [range(r * chunk + min(r, rem), (r + 1) * chunk + min(r + 1, rem)) for r in range(nproc)]


def get_job_indices(vals: npt.ArrayLike, xcoordinates: npt.ArrayLike, ycoordinates: Optional[npt.ArrayLike],
                    comm: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(this rank's missing indices, their coordinates, the number of points of every rank): the
    reference's static split of the missing points (split_inds) over comm's ranks (comm None: one)."""
    inds, coords = get_unplotted_indices(vals, xcoordinates, ycoordinates)
    rank, nproc = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    splits = split_inds(len(inds), nproc)
    return inds[splits[rank]], coords[splits[rank]], [len(r) for r in splits]


def chunk_size(want: int, remaining: int, nproc: int, multiple: int) -> int:
    """Points to hand out: what the rank asks for, at most half a fair share of what is left,
    at least one pass of `multiple` points, rounded up to a multiple of it."""
    fair = math.ceil(remaining / (2 * nproc))
    size = max(multiple, min(want, fair, MAX_CHUNK))
    return min(remaining, math.ceil(size / multiple) * multiple)


class RateMeter:
    """Seconds per point (moving average) -> the chunk size that takes about CHUNK_SECONDS."""

    def __init__(self, multiple: int = 1) -> None:
        self.multiple = multiple
        self.sec_per_point = None

    def record(self, seconds: float, points: int) -> None:
        s = seconds / max(points, 1)
        self.sec_per_point = s if self.sec_per_point is None else 0.7 * self.sec_per_point + 0.3 * s

    def want(self) -> int:
        if self.sec_per_point is None:
            return self.multiple
        return max(self.multiple, int(CHUNK_SECONDS / max(self.sec_per_point, 1e-6)))


# ----------------------------------------------------------------------------- the loops
class Outbox:
    """Non-blocking sends. A blocking send of a message above MPI's eager limit waits for the
    matching receive, so rank 0 replying to a worker while that worker sends its next request
    would deadlock; with isend both sides go on and the messages complete in the background."""

    def __init__(self, comm: Any) -> None:
        self.comm, self.pending = comm, []

    def post(self, obj: Any, dest: int, tag: int) -> None:
        self.pending.append(self.comm.isend(obj, dest=dest, tag=tag))
        self.pending = [r for r in self.pending if not r.Test()]  # forget the completed ones

    def flush(self) -> None:
        for r in self.pending:
            r.wait()
        self.pending = []


def timed(compute: Compute, meter: RateMeter, chunk: np.ndarray) -> np.ndarray:
    t0 = time.perf_counter()
    values = compute(chunk)
    meter.record(time.perf_counter() - t0, len(chunk))
    return values


def run_root(comm: Any, nproc: int, pending: Iterable[int], compute: Compute, store: Store, tick: Tick,
             multiple: int = 1) -> None:
    """Rank 0: hand out chunks of `pending` flat indices, compute its own, store every result.

    compute(indices) -> values (len, nvalues); store(indices, values) records results (rank 0 only);
    tick() runs between chunks (periodic file writes). Returns when every point is stored and
    every worker has said goodbye.
    """
    queue = deque(int(i) for i in pending)
    meter = RateMeter(multiple)
    byes = 0

    def take(want):
        n = chunk_size(want, len(queue), nproc, multiple) if queue else 0
        return np.array([queue.popleft() for _ in range(n)], dtype=np.int64)

    sends = Outbox(comm)

    def serve(block):
        nonlocal byes
        if comm is None:
            return
        from mpi4py import MPI
        status = MPI.Status()
        while block or comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            msg = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
            block = False
            if status.Get_tag() == TAG_BYE:
                byes += 1
                continue
            idx, vals, want = msg
            if len(idx):
                store(idx, vals)
            sends.post(take(want), status.Get_source(), TAG_WORK)

    while queue:
        serve(block=False)
        chunk = take(meter.want())
        if len(chunk):
            store(chunk, timed(compute, meter, chunk))
        tick()
    while byes < nproc - 1:
        serve(block=True)
        tick()
    sends.flush()


def run_worker(comm: Any, compute: Compute, multiple: int = 1) -> None:
    """Ranks > 0: ask for chunks, compute them, send results back with the next request."""
    meter = RateMeter(multiple)
    outstanding = 0
    empty = np.zeros(0, dtype=np.int64)

    sends = Outbox(comm)

    def request(idx, vals):
        nonlocal outstanding
        sends.post((idx, vals, meter.want()), 0, TAG_REQUEST)
        outstanding += 1

    request(empty, None)
    request(empty, None)  # one chunk to work on, one in reserve
    queue = deque()
    while True:
        while outstanding and (not queue or comm.Iprobe(source=0, tag=TAG_WORK)):
            chunk = comm.recv(source=0, tag=TAG_WORK)
            outstanding -= 1
            if len(chunk):
                queue.append(chunk)
        if not queue:
            break
        chunk = queue.popleft()
        request(chunk, timed(compute, meter, chunk))  # deliver results; rank 0 answers [] once it is out of work
    sends.post(None, 0, TAG_BYE)
    sends.flush()


# ----------------------------------------------------------------------------- groups of ranks per point
def run(comm: Any, group: Optional[PointGroup], pending: Optional[Indices], compute: Compute,
        store: Optional[Store], tick: Optional[Tick]) -> None:
    """Every rank: compute the `pending` points (rank 0's list) over the ranks, and record them on
    rank 0 with store(indices, values) and tick(). `group`: this rank's PointGroup, or None."""
    if getattr(comm, "is_torch", False):
        return run_store(comm.job_store(), group, comm.bcast(pending), compute, store, tick, comm.Get_rank() == 0)
    if group is None or group.size == 1:
        if comm is None or comm.Get_rank() == 0:
            return run_root(comm, 1 if comm is None else comm.Get_size(), pending, compute, store, tick)
        return run_worker(comm, compute)
    return run_groups(comm, group, pending, compute, store, tick)


def follow(group: PointGroup, compute: Compute) -> None:
    """A group's other ranks: compute each chunk the leader broadcasts, until an empty one."""
    while True:
        chunk = group.bcast(None)
        if not len(chunk):
            return
        compute(chunk)


def run_groups(comm: Any, group: PointGroup, pending: Optional[Indices], compute: Compute,
               store: Optional[Store], tick: Optional[Tick]) -> None:
    """MPI, K > 1: the leaders split the grid among themselves as ranks do (run_root / run_worker over
    a leaders' communicator); before computing a chunk a leader broadcasts it to its group."""
    from mpi4py import MPI
    leaders = comm.Split(0 if group.rank == 0 else MPI.UNDEFINED, comm.Get_rank())
    if group.rank != 0:
        return follow(group, compute)

    def led(chunk):
        group.bcast(chunk)
        return compute(chunk)
    try:
        if leaders.Get_rank() == 0:
            run_root(leaders, leaders.Get_size(), pending, led, store, tick)
        else:
            run_worker(leaders, led)
    finally:
        leaders.Free()
    group.bcast(np.zeros(0, dtype=np.int64))     # the group's end


def run_store(kv: torch.distributed.Store, group: Optional[PointGroup], pending: Indices, compute: Compute,
              store: Optional[Store], tick: Optional[Tick], writer: bool) -> None:
    """torchrun: every rank. Leaders claim chunks of `pending` (the same list everywhere) from the store.

    Claim: end = kv.add("claimed", n) gives positions [end - n, end): one atomic round trip, any chunk
    size (sized by RateMeter, at most half a fair share of what is left). The leader broadcasts the
    chunk to its group. Results: a leader files them under res/<i>, i from the counter "posted";
    rank 0 (`writer`, group 0's leader) stores them between its own chunks, and once out of work
    until every point is stored. The store is served by a thread of torchrun's agent (or of rank 0),
    so nobody waits for a rank to serve it.
    """
    total, groups = len(pending), max(1, group.count if group is not None else 1)
    meter = RateMeter()
    seen = {"read": 0, "stored": 0}

    def collect(block):
        while seen["stored"] < total:
            if seen["read"] == kv.add("posted", 0):
                if not block:
                    return
                tick()
                time.sleep(0.002)
                continue
            key = f"res/{seen['read']}"
            idx, vals = pickle.loads(kv.get(key))       # waits until the leader's set lands
            kv.delete_key(key)
            seen["read"] += 1
            store(idx, vals)
            seen["stored"] += len(idx)
            tick()

    lead = group is None or group.rank == 0
    while True:
        claim = None
        if lead:
            left = total - kv.add("claimed", 0)
            n = max(1, min(meter.want(), math.ceil(max(left, 1) / (2 * groups)), MAX_CHUNK))
            end = kv.add("claimed", n)
            claim = (end - n, min(end, total))
        start, end = group.bcast(claim) if group is not None else claim
        if start >= total:
            break
        chunk = np.asarray(pending[start:end], dtype=np.int64)
        values = timed(compute, meter, chunk)
        if lead and writer:
            store(chunk, values)
            seen["stored"] += len(chunk)
            tick()
        elif lead:
            kv.set(f"res/{kv.add('posted', 1) - 1}", pickle.dumps((chunk, np.asarray(values))))
        if writer:
            collect(block=False)
    if writer:
        collect(block=True)

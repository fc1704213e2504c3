"""torch.distributed at the edge: the launcher's ranks, the rendezvous, and the groups of ranks that
evaluate one point together (data-parallel points, `--ranks_per_point K`).

Which launcher started the ranks (`setup_ranks`):
- mpirun / mpiexec / srun with MPI (`--mpi`): MPI's ranks (parallel/mpi.py). torch.distributed is
  joined from the MPI world only where device tensors must be summed over ranks (K > 1 on GPUs,
  NCCL): rank 0 opens a TCPStore on a port the OS picks and broadcasts its address with MPI.
- torchrun (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, WORLD_SIZE > 1):
  the ranks join torch.distributed's default group through the launcher's store, and `TorchComm`
  makes the few communicator calls the package makes (bcast, allgather, barrier, abort) over it.
  No MPI is needed. The default group is gloo's (objects, host tensors); the point groups add NCCL
  for CUDA tensors where each rank of a group has a GPU of its own (NCCL refuses two ranks on one
  card: ranks sharing cards sum device tensors with gloo, through the host).
Joining has its own short timeout (--rendezvous_timeout): every rank counts itself in on the store's
atomic counter, and a rank that does not arrive in time is one line and exit 2, before any file is
touched. Once joined, collectives and store waits allow RUN_TIMEOUT (a grid point may be slow).

A PointGroup is the K consecutive ranks r with the same r // K. Each evaluates its own shard of the
data at the group's point; `sum_` adds a tensor over the group in place (host tensors with MPI where
the ranks are MPI's, device tensors and everything under torchrun with torch.distributed), and
`bcast` hands the leader's (group rank 0's) chunk of points to the others.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Mapping, NoReturn, Optional, Sequence, Union

from landscape.errors import UserError

if TYPE_CHECKING:
    import torch
    import torch.distributed

    Env = Mapping[str, str]        # the launcher's environment (os.environ by default)

RENDEZVOUS_SECONDS = 60.0                       # default --rendezvous_timeout
RUN_TIMEOUT = datetime.timedelta(hours=24)      # collectives once joined: a slow point must not time out
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ----------------------------------------------------------------------------- which launcher
def torchrun_world(env: Optional[Env] = None) -> int:
    """WORLD_SIZE when torchrun (or a launcher that sets RANK and WORLD_SIZE) started this process with
    more than one rank, else 0. A torchrun job of one process needs no rendezvous."""
    env = os.environ if env is None else env
    if not (env.get("TORCHELASTIC_RUN_ID") or ("RANK" in env and "WORLD_SIZE" in env)):
        return 0
    try:
        world = int(env.get("WORLD_SIZE", ""))
    except ValueError:
        raise UserError(f"WORLD_SIZE={env.get('WORLD_SIZE')!r} is not a whole number") from None
    return world if world > 1 else 0


def setup_ranks(use_mpi: bool, rendezvous_timeout: float = RENDEZVOUS_SECONDS,
                env: Optional[Env] = None) -> tuple[Any, int, int]:
    """(comm, rank, nproc): MPI's world with --mpi, torchrun's ranks (a TorchComm) when its environment
    says so, else (None, 0, 1). Under torchrun --mpi is accepted and changes nothing."""
    if torchrun_world(env):
        comm = join_torchrun(rendezvous_timeout, env)
        return comm, comm.Get_rank(), comm.Get_size()
    from landscape.parallel import mpi
    return mpi.setup_mpi(use_mpi)


def leave(comm: Any) -> None:
    """Leave torch.distributed's group at the end of a torchrun job (all ranks, nothing failed)."""
    if getattr(comm, "is_torch", False):
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def _ints(env: Env, names: Sequence[str]) -> list[int]:
    try:
        return [int(env[n]) for n in names]
    except ValueError:
        bad = next(n for n in names if not env[n].lstrip("-").isdigit())
        raise UserError(f"{bad}={env[bad]!r} is not a whole number") from None


# ----------------------------------------------------------------------------- joining
def connect_store(addr: str, port: int, world: int, is_server: bool, wait_for_workers: bool, timeout_s: float,
                  rank: int) -> torch.distributed.TCPStore:
    """A TCPStore client (or server) that must connect within timeout_s; UserError (one line) if not."""
    import torch.distributed as dist
    try:
        return dist.TCPStore(addr, port, world, is_master=is_server, wait_for_workers=wait_for_workers,
                             timeout=datetime.timedelta(seconds=timeout_s), multi_tenant=True)
    except (RuntimeError, ValueError, OSError) as e:      # DistStoreError / DistNetworkError are RuntimeErrors
        raise UserError(f"rank {rank} of {world}: no torch.distributed rendezvous at {addr}:{port} within "
                        f"{timeout_s:g} s ({type(e).__name__}: {_first_line(e)})") from None


def count_in(store: torch.distributed.Store, key: str, world: int, timeout_s: float, rank: int) -> None:
    """Every rank adds itself to `key` on the store and waits until all `world` have: the rendezvous
    check that also holds when the store is torchrun's agent (which is there whoever is missing)."""
    arrived = store.add(key, 1)
    deadline = time.monotonic() + timeout_s
    while arrived < world:
        if time.monotonic() > deadline:
            raise UserError(f"rank {rank}: only {arrived} of {world} ranks joined the torch.distributed "
                            f"rendezvous within {timeout_s:g} s; start every rank (or raise --rendezvous_timeout)")
        time.sleep(0.01)
        arrived = store.add(key, 0)


def join_torchrun(timeout_s: float = RENDEZVOUS_SECONDS, env: Optional[Env] = None) -> TorchComm:
    """Join torch.distributed's default group from torchrun's environment; a TorchComm over it."""
    import torch.distributed as dist
    env = os.environ if env is None else env
    missing = [v for v in TORCHRUN_VARIABLES if not env.get(v)]
    if missing:
        raise UserError(f"torch.distributed rendezvous: {', '.join(missing)} not set (start the ranks with "
                        "torchrun, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)")
    rank, world, port = _ints(env, ("RANK", "WORLD_SIZE", "MASTER_PORT"))
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} must be below WORLD_SIZE={world}")
    if not timeout_s > 0:
        raise UserError(f"--rendezvous_timeout {timeout_s} must be > 0")
    addr = env["MASTER_ADDR"]
    run_id = f"{env.get('TORCHELASTIC_RUN_ID', port)}.{env.get('TORCHELASTIC_RESTART_COUNT', 0)}"
    if dist.is_initialized():            # the user's own script joined already (the Python API)
        if (dist.get_rank(), dist.get_world_size()) != (rank, world):
            raise UserError(f"torch.distributed is initialised as rank {dist.get_rank()} of "
                            f"{dist.get_world_size()}, but RANK={rank}, WORLD_SIZE={world}")
        store = connect_store(addr, port, world, False, False, timeout_s, rank)
        store.set_timeout(RUN_TIMEOUT)
        return TorchComm(store, run_id)
    agent = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"    # torchrun's agent serves the store
    store = connect_store(addr, port, world, rank == 0 and not agent, False, timeout_s, rank)
    count_in(store, f"landscape/{run_id}/joined", world, timeout_s, rank)
    store.set_timeout(RUN_TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=RUN_TIMEOUT)
    return TorchComm(store, run_id)


def host_address(env: Optional[Env] = None) -> str:
    """The address the other ranks reach rank 0 at: MASTER_ADDR, else this host's name resolved."""
    env = os.environ if env is None else env
    return env.get("MASTER_ADDR") or socket.gethostbyname(socket.gethostname())


def join_from_mpi(comm: Any, timeout_s: float = RENDEZVOUS_SECONDS) -> None:
    """Join torch.distributed's default group from an MPI world (collective; errors agreed through MPI).

    Rank 0 serves a TCPStore on a port the OS picks as it binds (no race for the port) and broadcasts
    where it is; multi-node jobs need a routable MASTER_ADDR (and GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME).
    """
    import torch.distributed as dist
    from landscape.parallel import mpi
    if dist.is_initialized():
        return
    rank, world = comm.Get_rank(), comm.Get_size()
    server = None

    def serve():
        nonlocal server
        server = connect_store("0.0.0.0", 0, world, True, False, timeout_s, rank)
        return host_address(), server.port
    addr, port = comm.bcast(mpi.agree(comm, serve if rank == 0 else (lambda: None)), root=0)

    def join():
        store = server if rank == 0 else connect_store(addr, port, world, False, False, timeout_s, rank)
        count_in(store, "landscape/mpi/joined", world, timeout_s, rank)
        return store
    store = mpi.agree(comm, join)
    store.set_timeout(RUN_TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=RUN_TIMEOUT)


# ----------------------------------------------------------------------------- a communicator over torch.distributed
class TorchComm:
    """The mpi4py communicator calls this package makes (parallel/mpi.py, grid/job.py), over
    torch.distributed's default group: for ranks started by torchrun, without MPI. Object collectives
    go through gloo. `store` is the rendezvous store (scheduling uses its atomic counter)."""

    is_torch = True

    def __init__(self, store: torch.distributed.Store, run_id: str) -> None:
        import torch.distributed as dist
        self.dist, self.store, self.run_id = dist, store, run_id

    def Get_rank(self) -> int:
        return self.dist.get_rank()

    def Get_size(self) -> int:
        return self.dist.get_world_size()

    def allgather(self, obj: Any) -> list[Any]:
        out = [None] * self.Get_size()
        self.dist.all_gather_object(out, obj)
        return out

    def bcast(self, obj: Any, root: int = 0) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=root)
        return box[0]

    def gather(self, obj: Any, root: int = 0) -> Optional[list[Any]]:
        out = self.allgather(obj)
        return out if self.Get_rank() == root else None

    def Barrier(self) -> None:
        self.dist.barrier()

    def Abort(self, code: int = 1) -> NoReturn:
        """End this rank now; torchrun's agent then stops the others (and itself exits 1)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)       # no interpreter teardown: a gloo group whose peer failed can abort() at exit

    def Split_type(self, _kind: Any = None) -> NodeView:
        return NodeView(self)

    def job_store(self) -> torch.distributed.PrefixStore:
        """A fresh key space on the store for one grid job (collective): rank 0 numbers the jobs."""
        import torch.distributed as dist
        n = self.bcast(self.store.add(f"landscape/{self.run_id}/jobs", 1) if self.Get_rank() == 0 else None)
        return dist.PrefixStore(f"landscape/{self.run_id}/job{n}/", self.store)


class NodeView:
    """The ranks of a TorchComm on this rank's host: what MPI's Split_type(COMM_TYPE_SHARED) gives."""

    def __init__(self, comm: TorchComm) -> None:
        host = socket.gethostname()
        self.world = comm
        self.members = [r for r, h in enumerate(comm.allgather(host)) if h == host]
        self.rank = self.members.index(comm.Get_rank())

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return len(self.members)

    def allgather(self, obj: Any) -> list[Any]:
        everyone = self.world.allgather(obj)
        return [everyone[r] for r in self.members]

    def Free(self) -> None:
        pass


# ----------------------------------------------------------------------------- groups of ranks per point
def check_ranks_per_point(k: Any, nproc: int, name: str = "--ranks_per_point") -> int:
    """K must be a whole number >= 1 that divides the number of ranks; `name`: the setting, as the caller
    names it (the flag, or the API's argument)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise UserError(f"{name} {k!r} must be a whole number >= 1")
    if nproc % k:
        raise UserError(f"{name} {k} must divide the number of ranks ({nproc})")
    return k


class PointGroup:
    """The ranks that evaluate each point together, each on its own shard of the data.

    size: K; rank: this rank's place in the group (0 leads: it takes the chunks and reports the
    results); index: the group's number, count: the number of groups. One process: PointGroup().
    """

    def __init__(self, size: int = 1, rank: int = 0, index: int = 0, count: int = 1, mpi_comm: Any = None,
                 torch_group: Optional[torch.distributed.ProcessGroup] = None, leader: int = 0) -> None:
        self.size, self.rank, self.index, self.count = size, rank, index, count
        self.mpi_comm, self.torch_group, self.leader = mpi_comm, torch_group, leader

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """t += t of every other rank of the group, in place, and t. One call per tensor."""
        if self.size == 1:
            return t
        assert t.is_contiguous(), "sum_ adds one flat buffer: make it contiguous first"
        if self.mpi_comm is not None and t.device.type == "cpu":
            from mpi4py import MPI
            self.mpi_comm.Allreduce(MPI.IN_PLACE, t.detach().numpy(), op=MPI.SUM)   # shares t's memory
        else:
            import torch.distributed as dist
            if self.torch_group is None:
                raise RuntimeError("summing device tensors over MPI ranks needs torch.distributed (join_from_mpi)")
            dist.all_reduce(t, group=self.torch_group)
        return t

    def bcast(self, obj: Any) -> Any:
        """The leader's obj, on every rank of the group."""
        if self.size == 1:
            return obj
        if self.mpi_comm is not None:
            return self.mpi_comm.bcast(obj, root=0)
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=self.leader, group=self.torch_group)
        return box[0]

    def describe(self, nproc: int) -> str:
        return f"{nproc} rank(s)" if self.size == 1 else f"{nproc} rank(s), {self.count} group(s) of {self.size}"


def card_identity(device: Union[str, int, torch.device]) -> tuple[str, str]:
    """(host, UUID) of this rank's GPU: the same for every rank that uses that card."""
    import torch
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return socket.gethostname(), str(uuid if uuid is not None else torch.device(device).index)


def group_backend(comm: Any, k: int, device: Union[str, torch.device]) -> str:
    """The point groups' backend: gloo, plus NCCL for CUDA tensors when no group has two ranks on one
    card (every rank reaches the same verdict from the gathered card identities). Collective."""
    import torch
    if torch.device(device).type != "cuda":
        return "gloo"
    cards = comm.allgather(card_identity(device))
    own = all(len(set(cards[g:g + k])) == k for g in range(0, len(cards), k))
    return "cpu:gloo,cuda:nccl" if own else "gloo"


def point_groups(comm: Any, k: int, device: Union[str, torch.device] = "cpu",
                 rendezvous_timeout: float = RENDEZVOUS_SECONDS,
                 name: str = "--ranks_per_point") -> PointGroup:
    """This rank's PointGroup (world ranks [g K, (g + 1) K) form group g). Collective over comm.

    MPI ranks sum host tensors with MPI (a communicator split by group); on GPUs they also join
    torch.distributed for device tensors. torchrun's ranks use torch.distributed subgroups.
    """
    rank, nproc = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    check_ranks_per_point(k, nproc, name)
    index, count = rank // k, nproc // k
    if k == 1:
        return PointGroup(1, 0, index, count)
    mpi_comm = None if getattr(comm, "is_torch", False) else comm.Split(index, rank)
    cuda = str(device).startswith("cuda")
    if mpi_comm is not None and cuda:
        join_from_mpi(comm, rendezvous_timeout)
    import torch.distributed as dist
    torch_group = None
    if dist.is_initialized():    # every rank creates every group, in order
        torch_group, _ = dist.new_subgroups(group_size=k, backend=group_backend(comm, k, device) if cuda else "gloo")
    return PointGroup(k, rank % k, index, count, mpi_comm, torch_group, leader=index * k)

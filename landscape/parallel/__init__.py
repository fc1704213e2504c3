"""Parallel launch: MPI set-up, node-local ranks, threads and GPUs per rank, errors on every rank (mpi.py)."""

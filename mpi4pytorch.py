"""MPI set-up, node-local ranks, threads and GPUs per rank: the reference's `mpi4pytorch.py`, kept as a front door; the code is landscape/parallel/mpi.py."""
from landscape.cli.commands import front_door

front_door(__name__, "landscape.parallel.mpi", __file__)

"""HDF5 files on file systems without working flock, simulated by a preloaded shim whose flock()
fails as those file systems answer: ENOLCK (NFS without a lock daemon) and ENOSYS (Lustre mounted
without flock). HDF5 locks every file it opens and refuses to open it when locking fails (HDF5's
best-effort mode forgives ENOSYS only); the tool opens its files with best-effort locking and falls
back to none when locks are unavailable. Its own lock file (surface_lock.py, O_EXCL) still guards
against two runs on one surface.
"""
import os
import shutil
import subprocess
import sys

import h5py
import pytest

from helpers import run_script

SHIM = r"""
#include <errno.h>
int flock(int fd, int operation) { (void)fd; (void)operation; errno = %s; return -1; }
"""


@pytest.fixture(scope="module", params=["ENOLCK", "ENOSYS"])
def no_flock(tmp_path_factory, request):
    """The environment of a process whose flock() fails with ENOLCK (NFS) or ENOSYS (Lustre)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the flock shim")
    folder = tmp_path_factory.mktemp("shim")
    (folder / "noflock.c").write_text(SHIM % request.param)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(folder / "noflock.so"), str(folder / "noflock.c")], check=True)
    return dict(os.environ, LD_PRELOAD=str(folder / "noflock.so"), OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def test_strict_hdf5_locking_refuses_such_a_file(tmp_path, no_flock):
    """The simulation is real: h5py with locking on cannot open a file there (the failure the tool avoids)."""
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    code = f"import h5py; h5py.File({str(path)!r}, 'r', locking=True)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=no_flock)
    assert r.returncode != 0 and "unable to lock file" in r.stderr, r.stderr[-500:]


def test_the_tool_computes_resumes_and_plots_there(tmp_path, mlp_ckpt, no_flock):
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", "--x=-1:1:5", "--y=-1:1:3",
            "--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn",
            "--surf_file", "s.h5", "--threads", "1"]
    r = run_script("plot_surface.py", args, cwd=tmp_path, env=no_flock)
    assert r.returncode == 0, r.stderr[-1000:]
    with h5py.File(tmp_path / "s.h5", "r") as f:   # this process has a working flock
        done = f["train_loss"][()]
    assert (done != -1).all()
    r = run_script("plot_surface.py", args, cwd=tmp_path, env=no_flock)  # resume: reads both files back
    assert r.returncode == 0 and "computing 0 on" in r.stdout, r.stderr[-1000:]
    r = run_script("plot_2D.py", ["--surf_file", "s.h5", "--format", "png"], cwd=tmp_path, env=no_flock)
    assert r.returncode == 0 and os.path.exists(tmp_path / "s.h5_train_loss_2dcontour.png"), r.stderr[-1000:]
    r = run_script("plot_surface.py", ["--mpi", *args, "--surf_file", "m.h5"], cwd=tmp_path, mpi_ranks=2, env=no_flock)
    assert r.returncode == 0, r.stderr[-1000:]
    with h5py.File(tmp_path / "m.h5", "r") as f:
        assert (f["train_loss"][()] == done).all()

"""Two runs on one surface file: the second is refused naming the lock; stale locks do not block; an
MPI run that aborts leaves no lock."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import h5py
import pytest

from landscape.grid import lock as surface_lock
from helpers import FILTER_X, MLP, REPO, copy_ckpt, mpiexec, run_script

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


def args(ckpt, surf, n=81):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", ckpt, f"--x=-1:1:{n}", f"--y=-1:1:{n}",
            *FILTER, "--threads", "1", "--surf_file", surf]


def test_second_run_is_refused_and_a_killed_runs_lock_does_not_block(tmp_path, mlp_ckpt):
    surf = str(tmp_path / "s.h5")
    first = subprocess.Popen([sys.executable, os.path.join(REPO, "plot_surface.py"), *args(mlp_ckpt, surf)],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not os.path.exists(surf + ".lock") and time.time() < deadline:
        time.sleep(0.05)
    owner = json.load(open(surf + ".lock"))
    assert owner["pid"] == first.pid

    second = run_script("plot_surface.py", args(mlp_ckpt, surf), cwd=tmp_path)
    assert second.returncode == 2
    assert surf + ".lock" in second.stderr and f"pid {first.pid}" in second.stderr
    assert first.poll() is None  # the first run went on undisturbed

    first.send_signal(signal.SIGKILL)
    first.wait()
    assert os.path.exists(surf + ".lock")  # a stale lock is left behind
    third = run_script("plot_surface.py", args(mlp_ckpt, surf), cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert not os.path.exists(surf + ".lock")
    with h5py.File(surf, "r") as f:
        assert (f["train_loss"][()] != -1).all()


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    path = str(tmp_path / "s.h5")
    with open(path + ".lock", "w") as f:
        json.dump({"host": "some-other-node", "pid": 12345, "started": "earlier"}, f)
    lock = surface_lock.SurfaceLock(path)
    try:
        lock.acquire()
        raise AssertionError("a fresh lock of another host must block")
    except surface_lock.UserError as e:
        assert "some-other-node" in str(e)
    old = time.time() - surface_lock.STALE_AFTER - 5
    os.utime(path + ".lock", (old, old))
    lock.acquire()  # no heartbeat for STALE_AFTER seconds: its owner is gone
    assert json.load(open(path + ".lock"))["host"] == socket.gethostname()
    lock.release()
    assert not os.path.exists(path + ".lock")


def test_lock_heartbeat_keeps_it_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(surface_lock, "HEARTBEAT", 0.1)
    lock = surface_lock.SurfaceLock(str(tmp_path / "s.h5")).acquire()
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    time.sleep(0.5)
    assert time.time() - os.path.getmtime(lock.path) < 5
    lock.release()


def test_taking_the_lock_removes_a_killed_writers_temp_files_only(tmp_path):
    """kill -9 during a write leaves '<surf>.tmp<pid>'; the next owner of the lock removes it, and
    nothing else (another surface's temp, a user's file with a similar name)."""
    from landscape.grid.lock import SurfaceLock
    surf = tmp_path / "s.h5"
    keep = ["s.h5", "s.h5.tmpnotes", "t.h5.tmp123", "s.h5.tmp123.bak"]
    for name in keep + ["s.h5.tmp29227", "s.h5.tmp1"]:
        (tmp_path / name).write_text("x")
    lock = SurfaceLock(str(surf)).acquire()
    try:
        assert sorted(os.listdir(tmp_path)) == sorted(keep + ["s.h5.lock"])
    finally:
        lock.release()


def test_an_mpi_abort_leaves_no_lock(tmp_path, mlp_ckpt):
    """A rank failing mid-run aborts every rank; rank 0 releases the surface's lock first."""
    if not mpiexec():
        pytest.skip("no mpiexec")
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    (tmp_path / "bad.py").write_text("import torch.nn.functional as F\n\n\ndef loss():\n    n = [0]\n\n"
                                     "    def f(out, t):\n        n[0] += 1\n        if n[0] > 3:\n"
                                     "            raise RuntimeError('boom')\n        return F.cross_entropy(out, t)\n"
                                     "    return f\n")
    r = run_script("plot_surface.py", ["--mpi"] + MLP + ["--model_file", "m.t7", "--x=-1:1:9", *FILTER_X,
                                                         "--loss_name", "bad.py:loss", "--surf_file", "s.h5"],
                   cwd=tmp_path, mpi_ranks=2, timeout=240)
    assert r.returncode != 0 and "boom" in r.stderr, r.stderr[-3000:]
    assert not os.path.exists(tmp_path / "s.h5.lock")

"""Crash safety, tested by killing real processes (-9) at random moments and resuming.

After every kill the surface file must open; rerunning the same command must complete the grid
with exactly the values of an uninterrupted run.
"""
import os
import random
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import h5_util
from helpers import REPO, mpi_env, mpiexec, run_script

KEYS = ("train_loss", "train_acc")


N = 61  # a 61 x 61 digits_mlp grid: several seconds of work, flushed to disk every 0.3 s


def args(ckpt, surf):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", ckpt, f"--x=-1:1:{N}", f"--y=-1:1:{N}",
            "--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn",
            "--threads", "1", "--flush_seconds", "0.3", "--surf_file", surf]


def start(cmd, cwd):
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=mpi_env(), start_new_session=True)


def values(path):
    with h5py.File(path, "r") as f:  # must open, whatever moment the writer died at
        return {k: f[k][()] for k in KEYS if k in f}


def done_count(path):
    if not os.path.exists(path):
        return 0
    v = values(path)
    return int((v["train_loss"] != -1).sum()) if v else 0


@pytest.fixture(scope="module")
def clean(tmp_path_factory, mlp_ckpt):
    """The uninterrupted run's values, and how long its computation took (to aim the kills)."""
    path = str(tmp_path_factory.mktemp("clean") / "clean.h5")
    r = run_script("plot_surface.py", args(mlp_ckpt, path))
    assert r.returncode == 0, r.stderr
    seconds = float(re.search(r"computed \d+ points in ([\d.]+) s", r.stdout).group(1))
    return values(path), seconds


def wait_for_lock(surf, proc, timeout=60):
    """Until this run has taken the surface's lock (a killed run's stale lock is older than `since`)."""
    since, deadline = time.time() - 0.5, time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if os.stat(surf + ".lock").st_mtime >= since:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.05)


def kill_and_resume(tmp_path, mlp_ckpt, clean, make_cmd, victim, seed, ranks=1):
    clean, seconds = clean
    window = 0.8 * seconds / ranks  # strike while the grid is being computed, at a random moment
    rng = random.Random(seed)
    surf = str(tmp_path / "s.h5")
    counts = []
    for attempt in range(5):
        proc = start(make_cmd(surf), tmp_path)
        wait_for_lock(surf, proc)  # set-up done (torch imported, files checked); now strike at random
        time.sleep(rng.uniform(0.0, window))
        if proc.poll() is not None:
            break  # it finished before we struck
        victim(proc)
        proc.wait()
        counts.append(done_count(surf))  # the file opens (or does not exist yet)
        if len(counts) >= 3 and 0 < counts[-1]:
            break
    assert any(0 < c < N * N for c in counts), counts  # at least one kill hit a run mid-grid
    assert counts == sorted(counts)  # no computed point was ever lost to a later kill
    r = subprocess.run(make_cmd(surf), cwd=tmp_path, capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    got = values(surf)
    for k in KEYS:
        np.testing.assert_array_equal(got[k], clean[k])
    assert not os.path.exists(surf + ".lock")
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # no temp file is left to be trusted later


def kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)


def test_kill_9_single_process_at_random_moments(tmp_path, mlp_ckpt, clean):
    cmd = lambda surf: [sys.executable, os.path.join(REPO, "plot_surface.py"), *args(mlp_ckpt, surf)]
    kill_and_resume(tmp_path, mlp_ckpt, clean, cmd, kill_group, seed=1)


def test_kill_9_whole_mpirun_at_random_moments(tmp_path, mlp_ckpt, clean):
    cmd = lambda surf: [mpiexec(), "-n", "2", "--oversubscribe", sys.executable,
                        os.path.join(REPO, "plot_surface.py"), "--mpi", *args(mlp_ckpt, surf)]
    kill_and_resume(tmp_path, mlp_ckpt, clean, cmd, kill_group, seed=2, ranks=2)


def test_kill_9_one_rank_at_random_moments(tmp_path, mlp_ckpt, clean):
    cmd = lambda surf: [mpiexec(), "-n", "2", "--oversubscribe", sys.executable,
                        os.path.join(REPO, "plot_surface.py"), "--mpi", *args(mlp_ckpt, surf)]
    rng = random.Random(3)

    def kill_one_rank(proc):
        ranks = subprocess.run(["pgrep", "-s", str(proc.pid), "-f", "plot_surface.py"], capture_output=True,
                               text=True).stdout.split()
        ranks = [int(p) for p in ranks if int(p) != proc.pid]
        if ranks:
            os.kill(rng.choice(ranks), signal.SIGKILL)  # mpirun then takes the rest of the job down
        time.sleep(2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    kill_and_resume(tmp_path, mlp_ckpt, clean, cmd, kill_one_rank, seed=4, ranks=2)


def test_sigterm_saves_points_and_releases_the_lock(tmp_path, mlp_ckpt):
    surf = str(tmp_path / "t.h5")
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "plot_surface.py"), *args(mlp_ckpt, surf),
                             "--flush_seconds", "100"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    wait_for_lock(surf, proc)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and "terminated" in err
    assert 0 < done_count(surf) < N * N  # flushed on the way out despite the 100 s flush period
    assert not os.path.exists(surf + ".lock")


def test_interrupted_atomic_write_leaves_the_old_file(tmp_path):
    path = str(tmp_path / "d.h5")
    h5_util.write_direction_file(path, [[np.ones(3, dtype=np.float32)]], {"model": "a"})
    before = open(path, "rb").read()

    def crash(f):
        f["half"] = np.zeros(10)
        raise KeyboardInterrupt  # dies mid-write

    with pytest.raises(KeyboardInterrupt):
        h5_util.atomic_write(path, crash)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["d.h5"]


def test_half_written_direction_file_is_not_trusted(tmp_path, mlp_ckpt):
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                       "--x=-1:1:3", "--xnorm", "filter", "--dir_file", "d.h5", "--surf_file", "s.h5"],
                   cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    good = str(tmp_path / "good.h5")
    h5_util.write_direction_file(good, [[np.ones((32, 64), np.float32)] * 4], {})
    data = open(good, "rb").read()
    open(tmp_path / "d.h5", "wb").write(data[: len(data) // 3])  # what a non-atomic writer could leave
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                       "--x=-1:1:3", "--dir_file", "d.h5", "--surf_file", "s.h5"], cwd=tmp_path)
    assert r.returncode == 2 and "d.h5" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "s.h5")

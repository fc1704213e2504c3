"""Real MPI ranks: results identical to one rank, node-local ranks, and no mpi4py without --mpi."""
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import REPO, mpi_env, run_script

FILTER = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


def grid_args(ckpt, surf):
    return ["--dataset", "digits", "--model", "digits_cnn", "--model_file", ckpt, "--x=-1:1:7", "--y=-1:1:5",
            *FILTER, "--eval_test", "--threads", "1", "--surf_file", surf]


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory, cnn_ckpt):
    path = str(tmp_path_factory.mktemp("mpi") / "one.h5")
    r = run_script("plot_surface.py", grid_args(cnn_ckpt, path))
    assert r.returncode == 0, r.stderr
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_ranks_give_the_same_surface_as_one(tmp_path, cnn_ckpt, one_rank, ranks):
    path = str(tmp_path / f"mpi{ranks}.h5")
    r = run_script("plot_surface.py", ["--mpi", *grid_args(cnn_ckpt, path)], mpi_ranks=ranks)
    assert r.returncode == 0, r.stderr + r.stdout
    assert f"on {ranks} rank(s)" in r.stdout
    with h5py.File(path, "r") as f:
        for k, v in one_rank.items():
            np.testing.assert_array_equal(f[k][()], v)


def test_mpi_error_on_every_rank_is_reported_once(tmp_path):
    r = run_script("plot_surface.py", ["--mpi", "--dataset", "digits", "--model", "digits_cnn",
                                       "--model_file", str(tmp_path / "missing.t7")], mpi_ranks=2)
    assert r.returncode == 2
    assert r.stderr.count("does not exist") == 1


def test_node_local_rank_under_mpiexec():
    code = ("import sys; sys.path.insert(0, %r); import mpi4pytorch as m; c, r, n = m.setup_mpi(True); "
            "print('rank', r, 'local', m.local_rank(c))" % REPO)
    cmd = [sys.executable, "-c", code]
    from helpers import mpiexec
    r = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", *cmd], capture_output=True, text=True,
                       env=mpi_env(), timeout=120)
    assert sorted(r.stdout.split("\n")[:2]) == ["rank 0 local 0", "rank 1 local 1"], r.stdout + r.stderr


def test_without_mpi_flag_mpi4py_is_never_imported(tmp_path, mlp_ckpt):
    code = ("import sys; sys.path.insert(0, %r); import plot_surface; "
            "plot_surface.main(['--dataset', 'digits', '--model', 'digits_mlp', '--model_file', %r, "
            "'--x=-1:1:3', '--surf_file', 's.h5']); print('mpi4py loaded:', 'mpi4py' in sys.modules)"
            % (REPO, mlp_ckpt))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert "mpi4py loaded: False" in r.stdout, r.stdout + r.stderr


def test_large_chunks_do_not_deadlock(tmp_path, mlp_ckpt):
    """A cheap model on a big grid: chunks of ~1,000 points make messages beyond MPI's eager limit,
    where blocking sends in both directions deadlocked (found by the benchmark at 201x201)."""
    common = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:121",
              "--y=-1:1:121", *FILTER, "--data_split", "10", "--batch_size", "2048", "--threads", "1"]
    two = run_script("plot_surface.py", ["--mpi", *common, "--surf_file", str(tmp_path / "two.h5")], mpi_ranks=2,
                     timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    one = run_script("plot_surface.py", [*common, "--surf_file", str(tmp_path / "one.h5")], timeout=180)
    assert one.returncode == 0, one.stderr[-2000:]
    with h5py.File(tmp_path / "one.h5", "r") as a, h5py.File(tmp_path / "two.h5", "r") as b:
        np.testing.assert_array_equal(a["train_loss"][()], b["train_loss"][()])

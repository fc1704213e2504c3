"""The fixtures the test files share. Plain helper functions and constants (run_script, mpi_env,
assert_refused, snapshot, small models and data, ...) are in helpers.py, the one module test files
import shared code from (`from helpers import ...`); no test file imports another. REPO is also
reachable here (test_evaluation_fast_paths.py takes it with `from conftest import REPO`), so keep the
import of REPO below.

Everything a test needs is made here, from the project alone: a fake CIFAR-10 folder written in the
real pickle format (both key styles), digits models trained in seconds with the real trainer, the
digits tensors, a temporary working folder, one torch thread for a module, and `cli`, which runs
plot_surface.py's or plot_hessian_eigen.py's command line in this process.

The test files are named after the part of the package they test: test_api*, test_spec, test_cli_*,
test_directions*, test_trajectory, test_curves, test_evaluation_*, test_grid_*, test_io_*,
test_parallel_*, test_curvature_*, test_plots*, test_zoo_*, test_compat_* (the reference's module
names), plus test_install, test_security, test_examples and test_gpu*.
"""
import os
import shutil
import subprocess
import sys

import pytest

# Two workers on two cores each start torch processes (and MPI ranks) that use every core: OpenMP's
# threads then spin while they wait for a core the other worker holds. Idle threads that sleep at once
# took a fifth off the MPI-heavy test files' time here (tests only; what users run keeps the default).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from helpers import REPO, train  # noqa: E402  (after the environment above: helpers imports torch)


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory):
    """A digits_cnn trained for 4 epochs (checkpoints every epoch)."""
    return train(tmp_path_factory.mktemp("cnn"), "digits_cnn", epochs=4)


@pytest.fixture(scope="session")
def cnn_ckpt(cnn_run):
    return os.path.join(cnn_run, "model_4.t7")


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory):
    """A digits_mlp trained for 6 epochs (checkpoints every epoch): cheap to evaluate anywhere."""
    return train(tmp_path_factory.mktemp("mlp"), "digits_mlp", epochs=6, batch_size=32)


@pytest.fixture(scope="session")
def mlp_ckpt(mlp_run):
    return os.path.join(mlp_run, "model_6.t7")


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory):
    """Two fake CIFAR-10 folders with identical content: str keys and bytes keys."""
    root = tmp_path_factory.mktemp("cifar")
    folders = {}
    for style, flag in (("str", []), ("bytes", ["--bytes-keys"])):
        path = os.path.join(str(root), style)
        subprocess.run([sys.executable, os.path.join(REPO, "tests", "fake_cifar10.py"), path,
                        "--train", "60", "--test", "20", "--seed", "3", *flag], check=True)
        folders[style] = path
    return folders


@pytest.fixture
def work(tmp_path, mlp_ckpt, monkeypatch):
    """A temporary working directory holding the digits_mlp checkpoint as m.t7 (commands run in-process
    there keep pytest's own SIGTERM handling)."""
    import signal
    shutil.copy(mlp_ckpt, tmp_path / "m.t7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    return tmp_path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: tiny ops on a busy 2-core machine are many times slower
    with two (OpenMP waits). Use with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """The digits tensors (train_x, train_y, test_x, test_y), loaded once for a module."""
    import dataloader
    return dataloader.load_tensors("digits")


@pytest.fixture
def cli(capsys, monkeypatch):
    """run(args, cwd, script=..., env={...}) -> (returncode, stdout, stderr) of a command line, in this process:
    plot_surface.py's or plot_hessian_eigen.py's main through errors.run_cli, as the script would run it."""
    import signal
    import types

    import plot_hessian_eigen
    import plot_surface
    from landscape import errors
    SCRIPTS = {"plot_surface.py": plot_surface, "plot_hessian_eigen.py": plot_hessian_eigen}
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling

    def run(args, cwd, script="plot_surface.py", env=None):
        monkeypatch.chdir(cwd)
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        capsys.readouterr()
        rc = errors.run_cli(SCRIPTS[script].main, [str(a) for a in args])
        out = capsys.readouterr()
        return types.SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)
    return run


# The longest tests (each over 20 s in CI) are collected first, so that pytest-xdist starts them at once
# and spreads the short ones around them; started last, one of them keeps a worker busy while the other
# idles. Only the order changes; every test still runs.
LONG_FIRST = ("test_demo_quick_mode_runs_and_resumes", "test_benchmark_quick_mode_runs",
              "test_slurm_job_terminated_mid_grid_requeues_and_resumes", "test_kill_9_one_rank_at_random_moments",
              "test_kill_9_whole_mpirun_at_random_moments", "test_large_chunks_do_not_deadlock",
              "test_every_command_is_on_the_path_with_version_and_help",
              "test_eigenvalue_maps_away_from_the_centre_match_the_dense_matrix_of_the_moved_model")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.name.split("[")[0]
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)
    items.sort(key=rank)   # (a stable sort: the rest keep their order)

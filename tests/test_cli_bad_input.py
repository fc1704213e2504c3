"""Bad input: one line on stderr naming the problem, exit code 2, no traceback, files untouched."""
import builtins
import contextlib
import errno
import os
import shutil
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from landscape import errors
import h5_util
import plot_1D
import plot_2D
import plot_surface
from helpers import REPO, run_script, snapshot, trainer

FILTER = ["--xnorm", "filter", "--xignore", "biasbn"]


SCRIPTS = {"plot_surface.py": plot_surface, "plot_1D.py": plot_1D, "plot_2D.py": plot_2D,
           "cifar10/main.py": trainer}


@pytest.fixture
def work(tmp_path, mlp_run, monkeypatch):
    """A folder with checkpoints, a finished 1D surface and its direction file; the working directory."""
    shutil.copy(os.path.join(mlp_run, "model_6.t7"), tmp_path / "m.t7")
    shutil.copy(os.path.join(mlp_run, "model_2.t7"), tmp_path / "m2.t7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling
    assert plot_surface.main(["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7",
                              "--x=-1:1:3", *FILTER]) == 0
    return tmp_path


def run_cli(script, args, capsys, subprocess_run=False, env=None, cwd=None):
    """(exit code, stderr) of a CLI, in this process (fast) or as a real subprocess."""
    if subprocess_run:
        r = run_script(script, args, cwd=cwd, env=env)
        return r.returncode, r.stderr
    capsys.readouterr()
    rc = errors.run_cli(SCRIPTS[script].main, [str(a) for a in args])
    return rc, capsys.readouterr().err


def expect_refusal(work, capsys, args, *words, script="plot_surface.py", subprocess_run=False, env=None):
    before = snapshot(work)
    rc, err = run_cli(script, args, capsys, subprocess_run, env, cwd=work)
    assert rc == 2, (rc, err)
    assert "Traceback" not in err
    err = err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert snapshot(work) == before  # byte for byte, and nothing new
    return err


def base(*extra):
    return ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7", *extra]


@pytest.mark.parametrize("bad", ["a:b:c", "-1:1", "-1:1:0", "-1:1:2.5", "nan:1:3"])
def test_malformed_ranges(work, capsys, bad):
    expect_refusal(work, capsys, base(f"--x={bad}"), "--x", bad, subprocess_run=bad == "a:b:c")
    expect_refusal(work, capsys, base("--x=-1:1:3", f"--y={bad}"), "--y")


def test_missing_model_file(work, capsys):
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "nope.t7"], "nope.t7",
                   "does not exist")


def test_unknown_model_name(work, capsys):
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_mpl", "--model_file", "m.t7"], "digits_mpl")


def test_checkpoint_of_another_architecture(work, capsys):
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "m.t7"],
                   "does not fit model 'digits_cnn'", "m.t7")


def test_truncated_checkpoint(work, capsys):
    data = open(work / "m.t7", "rb").read()
    (work / "cut.t7").write_bytes(data[:200])
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "cut.t7"],
                   "cut.t7", "corrupt")


def test_checkpoint_holding_code_is_refused_unexecuted(work, capsys):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {work / 'pwned'}",))
    torch.save({"state_dict": torch.load(work / "m.t7", weights_only=True)["state_dict"], "x": Exploit()},
               work / "evil.t7")
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "evil.t7"],
                   "objects other than tensors", subprocess_run=True)
    assert not (work / "pwned").exists()


def test_nan_weights_warn_but_run(work, capsys):
    ckpt = torch.load(work / "m.t7", weights_only=True)
    ckpt["state_dict"]["fc1.weight"][0, 0] = float("nan")
    torch.save(ckpt, work / "nan.t7")
    rc, err = run_cli("plot_surface.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "nan.t7",
                                          "--x=0:0:1"], capsys)
    assert rc == 0 and "warning" in err and "NaN" in err


def test_surface_file_of_another_grid_model_or_direction(work, capsys):
    surf = "m.t7_weights_xignore=biasbn_xnorm=filter.h5_[-1.0,1.0,3].h5"
    expect_refusal(work, capsys, base("--x=-1:1:5", *FILTER, "--surf_file", surf), "different x grid")
    expect_refusal(work, capsys, base("--x=-1:1:3", *FILTER, "--y=-1:1:3", "--ynorm", "filter", "--surf_file", surf), "1D")
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m2.t7", "--x=-1:1:3",
                          *FILTER, "--surf_file", surf, "--dir_file", "m.t7_weights_xignore=biasbn_xnorm=filter.h5"],
                   "another checkpoint")
    expect_refusal(work, capsys, base("--x=-1:1:3", "--xnorm", "layer", "--surf_file", surf), "other directions")


def test_direction_file_of_another_model_or_dir_type(work, capsys):
    d = "m.t7_weights_xignore=biasbn_xnorm=filter.h5"
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "cnn.t7", "--x=-1:1:3",
                          "--dir_file", d], "cnn.t7")  # (the checkpoint is checked first)
    net = __import__("model_loader").build("digits_cnn")
    torch.save(net.state_dict(), work / "cnn.t7")
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "cnn.t7", "--x=-1:1:3",
                          "--dir_file", d, "--surf_file", "new.h5"], "made for model 'digits_mlp'")
    expect_refusal(work, capsys, base("--x=-1:1:3", "--dir_type", "states", "--dir_file", d, "--surf_file", "new.h5"),
                   "--dir_type weights")


def test_reference_direction_file_of_another_dir_type(work, capsys, cnn_ckpt):
    """A reference-made file has no attributes: the entry count tells weights from states."""
    shutil.copy(cnn_ckpt, work / "cnn.t7")
    net = __import__("model_loader").load("digits", "digits_cnn", cnn_ckpt)
    with h5py.File(work / "ref_dirs.h5", "w") as f:
        h5_util.write_list(f, "xdirection", [np.zeros(p.shape, np.float32) for p in net.parameters()])
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_cnn", "--model_file", "cnn.t7", "--x=-1:1:3",
                          "--dir_type", "states", "--dir_file", "ref_dirs.h5", "--surf_file", "new.h5"],
                   "--dir_type weights?")


def test_2d_run_with_a_1d_direction_file(work, capsys):
    expect_refusal(work, capsys, base("--x=-1:1:3", "--y=-1:1:3", "--dir_file", "m.t7_weights_xignore=biasbn_xnorm=filter.h5",
                              "--surf_file", "new.h5"), "only an x direction")


RO_BIND = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'


def readonly_bind_prefix(folder):
    """A command prefix that runs its command with `folder` read-only: a bind mount in a private mount
    namespace, which ends with the command and which even root cannot write through. None where this
    machine allows neither `unshare --mount` (root) nor a user namespace."""
    for unshare in (["unshare", "--mount"], ["unshare", "--user", "--map-root-user", "--mount"]):
        prefix = [*unshare, "sh", "-c", RO_BIND, str(folder)]
        try:
            probe = subprocess.run(prefix + ["sh", "-c", 'echo > "$0/probe"', str(folder)], capture_output=True,
                                   text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if probe.returncode != 0 and "Read-only file system" in probe.stderr:
            return prefix
    return None


@contextlib.contextmanager
def writes_refused_under(folder):
    """Last resort (root, no namespaces): in this process, opening a file under `folder` for writing
    fails with EACCES, and os.access says it is not writable, as for a read-only folder."""
    inside = lambda path: (os.path.abspath(os.fspath(path)) + os.sep).startswith(os.path.abspath(folder) + os.sep)
    real_open, real_os_open, real_access = builtins.open, os.open, os.access

    def refuse(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def fake_open(path, mode="r", *a, **k):
        return refuse(path) if inside(path) and set(mode) & set("wax+") else real_open(path, mode, *a, **k)

    def fake_os_open(path, flags, *a, **k):
        writing = flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        return refuse(path) if inside(path) and writing else real_os_open(path, flags, *a, **k)

    def fake_access(path, mode, *a, **k):
        return False if inside(path) and mode & os.W_OK else real_access(path, mode, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "open", fake_open)
        mp.setattr(os, "open", fake_os_open)
        mp.setattr(os, "access", fake_access)
        yield


def test_output_folder_that_cannot_be_written(work, capsys):
    (work / "afile").write_text("x")
    expect_refusal(work, capsys, base("--x=-1:1:3", "--surf_file", "afile/out.h5"), "afile", "does not exist")
    ro = work / "ro"
    ro.mkdir()
    (ro / "kept.txt").write_text("an existing file")
    args = base("--x=-1:1:3", "--surf_file", "ro/out.h5")  # would also write m.t7_weights.h5 next to m.t7
    if os.geteuid() != 0:  # a normal user cannot write into a read-only-mode folder
        ro.chmod(0o555)
        err = expect_refusal(work, capsys, args, "not writable")
    elif prefix := readonly_bind_prefix(ro):  # root ignores modes: make the folder read-only for this run
        before = snapshot(work)
        r = subprocess.run(prefix + [sys.executable, os.path.join(REPO, "plot_surface.py"), *args],
                           cwd=work, capture_output=True, text=True, timeout=300)
        err = r.stderr.strip()
        assert r.returncode == 2 and "Traceback" not in err, (r.returncode, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: ") and "not writable" in err, err
        assert snapshot(work) == before  # byte for byte, and nothing new
    else:
        with writes_refused_under(ro):
            err = expect_refusal(work, capsys, args, "not writable")
    assert str(ro) in err or "'ro'" in err, err  # names the folder


def test_model_file3_without_y(work, capsys):
    expect_refusal(work, capsys, base("--model_file3", "m2.t7"), "--model_file3", "--y")


def test_cuda_without_a_gpu(work, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so --cuda is valid here")
    expect_refusal(work, capsys, base("--x=-1:1:3", "--cuda"), "--cuda", "no CUDA GPU")


def test_mpi_without_an_mpi_runtime(work, capsys, tmp_path_factory):
    fake = tmp_path_factory.mktemp("nompi")
    (fake / "mpi4py").mkdir()
    (fake / "mpi4py" / "__init__.py").write_text("raise ImportError('libmpi.so.40: cannot open shared object file')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    expect_refusal(work, capsys, base("--x=-1:1:3", "--mpi"), "--mpi needs an MPI runtime", "libmpi", env=env,
                   subprocess_run=True)


def test_missing_or_corrupt_dataset(work, capsys, fake_cifar):
    expect_refusal(work, capsys, ["--model", "resnet20", "--model_file", "r.t7", "--x=-1:1:3"], "r.t7")
    torch.save(__import__("model_loader").build("resnet20").state_dict(), work / "r.t7")
    expect_refusal(work, capsys, ["--model", "resnet20", "--model_file", "r.t7", "--x=-1:1:3", "--datapath", "nodata"],
                   "CIFAR-10 not found", "nodata")
    shutil.copytree(fake_cifar["str"], work / "cifar")
    (work / "cifar" / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x04garbage")
    expect_refusal(work, capsys, ["--model", "resnet20", "--model_file", "r.t7", "--x=-1:1:3", "--datapath", "cifar"],
                   "data_batch_2")


def test_model_that_does_not_fit_the_data(work, capsys):
    torch.save(__import__("model_loader").build("resnet20").state_dict(), work / "r.t7")
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "resnet20", "--model_file", "r.t7", "--x=-1:1:3"],
                   "cannot take digits inputs")


def test_plot_scripts_refuse_non_surface_files(work, capsys):
    (work / "junk.h5").write_bytes(b"this is not hdf5")
    expect_refusal(work, capsys, ["--surf_file", "junk.h5"], "junk.h5", "HDF5", script="plot_1D.py")
    expect_refusal(work, capsys, ["--surf_file", "m.t7_weights_xignore=biasbn_xnorm=filter.h5"], "not a surface file",
                   script="plot_2D.py")


def test_trainer_bad_input(work, capsys):
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "nonet", "--epochs", "1", "--save", "nets"], "nonet",
                   script="cifar10/main.py")
    expect_refusal(work, capsys, ["--dataset", "digits", "--model", "digits_mlp", "--batch_size", "0"], "--batch_size",
                   script="cifar10/main.py")


@pytest.mark.parametrize("which", ["dataset", "model"])
def test_a_users_dataset_or_model_function_that_raises(work, capsys, which):
    """The user's own factory failing is one line naming it, as their loss or forward failing is."""
    code = work.parent / f"{work.name}_user.py"
    code.write_text("import torch.nn as nn\nfrom landscape.zoo import data\n\n"
                    "def bad():\n    raise ValueError('no such shard')\n\n"
                    "def digits():\n    d = data.load_digits()\n    return (d.train_x, d.train_y), None\n\n"
                    "def mlp():\n    from landscape.zoo.models.digits import DigitsMLP\n    return DigitsMLP()\n")
    spec = {"dataset": ["--dataset", f"{code}:bad", "--model", f"{code}:mlp"],
            "model": ["--dataset", f"{code}:digits", "--model", f"{code}:bad"]}[which]
    what = {"dataset": "dataset function", "model": "model factory"}[which]
    expect_refusal(work, capsys, [*spec, "--model_file", "m.t7", "--x=-1:1:3"], what, "ValueError: no such shard")

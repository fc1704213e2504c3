"""Nothing a file holds is ever executed: checkpoints, label files, CIFAR pickles, HDF5 strings.

Every place the project deserialises a file gets a crafted file whose unpickling would run code
(`RunsCode`, which touches a marker file), through the command line or function that reads it.
The file must be refused with one `error: ...` line and exit code 2, the marker must not exist,
and no file may change. The places (`torch.load` / `pickle` in the project's code):

- `model_loader.read_checkpoint` (torch.load, weights_only=True): `plot_surface.py --model_file`,
  `--model_file2`, `--model_file3`, `--path_files`, `plot_hessian_eigen.py --model_file`, `model_loader.load`,
  `plot_trajectory.py` (the final and every other checkpoint), `cifar10/main.py --resume_model`,
  `--resume_opt`.
- `dataloader.load_loader_file` (torch.load, weights_only=True; weights_only=False only under
  `--allow_pickle`): `--trainloader` / `--testloader` of `plot_surface.py` and `cifar10/main.py`.
- `dataloader.read_cifar_batch` (pickle.Unpickler admitting only NumPy arrays): the CIFAR-10
  batches read by `plot_surface.py` and `cifar10/main.py`.

`test_allow_pickle_runs_the_file_as_documented` is the positive control: with the opt-in, the same
kind of file does run, so a marker that stays absent elsewhere means the file was refused.
"""
import os
import pickle
import shlex
import shutil
import signal

import h5py
import numpy as np
import pytest
import torch

from landscape import errors
import model_loader
import plot_hessian_eigen
import plot_surface
import plot_trajectory
from helpers import run_script, snapshot, trainer
from landscape.errors import UserError


class RunsCode:
    """Unpickling this runs `touch <marker>`: the marker's existence proves the file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


@pytest.fixture
def work(tmp_path, mlp_run, monkeypatch):
    """The working directory: good checkpoints g.t7 (epoch 6) and g2.t7 (epoch 2), and a marker path."""
    shutil.copy(os.path.join(mlp_run, "model_6.t7"), tmp_path / "g.t7")
    shutil.copy(os.path.join(mlp_run, "model_2.t7"), tmp_path / "g2.t7")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's own SIGTERM handling
    return tmp_path


def evil_checkpoint(path, marker, state=None):
    """A checkpoint whose state_dict is real (when given) but that also holds code."""
    torch.save({"state_dict": state or {}, "epoch": 1, "x": RunsCode(marker)}, path)


def expect_refused_unrun(work, capsys, main, argv, *words):
    """`main(argv)` through the CLI wrapper: exit 2, one error line naming `words`, no marker, no change."""
    before = snapshot(work)
    capsys.readouterr()
    rc = errors.run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert not (work / "pwned").exists(), "the file's code ran"
    assert rc == 2, (rc, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for w in words:
        assert w in err, (w, err)
    assert snapshot(work) == before  # byte for byte, and nothing new


MLP = ["--dataset", "digits", "--model", "digits_mlp"]
REFUSED = "refusing to load"


def good_state(work):
    return torch.load(work / "g.t7", weights_only=True)["state_dict"]


@pytest.mark.parametrize("flag", ["--model_file", "--model_file2", "--model_file3"])
def test_plot_surface_refuses_a_checkpoint_holding_code(work, capsys, flag):
    evil_checkpoint(work / "evil.t7", work / "pwned", good_state(work))
    files = {"--model_file": "g.t7", "--model_file2": "g2.t7", "--model_file3": "g2.t7", flag: "evil.t7"}
    argv = MLP + ["--model_file", files["--model_file"], "--x=0:1:3", "--dir_type", "states",
                  "--model_file2", files["--model_file2"]]
    if flag == "--model_file3":
        argv += ["--model_file3", files["--model_file3"], "--y=0:1:3"]
    expect_refused_unrun(work, capsys, plot_surface.main, argv, REFUSED, "evil.t7")


def test_plot_surface_refuses_a_path_checkpoint_holding_code(work, capsys):
    evil_checkpoint(work / "evil.t7", work / "pwned", good_state(work))
    argv = MLP + ["--model_file", "g.t7", "--path_files", "g2.t7", "evil.t7", "g.t7", "--x=0:1:5"]
    expect_refused_unrun(work, capsys, plot_surface.main, argv, REFUSED, "evil.t7")


def test_plot_hessian_eigen_refuses_a_checkpoint_holding_code(work, capsys):
    evil_checkpoint(work / "evil.t7", work / "pwned", good_state(work))
    expect_refused_unrun(work, capsys, plot_hessian_eigen.main, MLP + ["--model_file", "evil.t7", "--at_center"],
                         REFUSED, "evil.t7")


def test_model_loader_load_refuses_a_checkpoint_holding_code(work):
    evil_checkpoint(work / "evil.t7", work / "pwned", good_state(work))
    with pytest.raises(UserError, match=REFUSED):
        model_loader.load("digits", "digits_mlp", str(work / "evil.t7"))
    assert not (work / "pwned").exists()


@pytest.mark.parametrize("epoch", [6, 3], ids=["final", "intermediate"])
def test_plot_trajectory_refuses_a_checkpoint_holding_code(work, capsys, mlp_run, epoch):
    folder = work / "run"
    os.mkdir(folder)
    for e in range(7):
        shutil.copy(os.path.join(mlp_run, f"model_{e}.t7"), folder / f"model_{e}.t7")
    evil_checkpoint(folder / f"model_{epoch}.t7", work / "pwned", good_state(work))
    expect_refused_unrun(work, capsys, plot_trajectory.main, MLP + ["--model_folder", "run", "--max_epoch", "6"],
                         REFUSED, f"model_{epoch}.t7")


def test_trainer_refuses_a_resume_model_holding_code(work, capsys):
    evil_checkpoint(work / "evil.t7", work / "pwned", good_state(work))
    expect_refused_unrun(work, capsys, trainer.main, MLP + ["--epochs", "1", "--save", "nets",
                                                            "--resume_model", "evil.t7"], REFUSED, "evil.t7")


def test_trainer_refuses_a_resume_opt_holding_code(work, capsys):
    torch.save({"optimizer": RunsCode(work / "pwned")}, work / "evil_opt.t7")
    expect_refused_unrun(work, capsys, trainer.main, MLP + ["--epochs", "1", "--save", "nets",
                                                            "--resume_model", "g.t7", "--resume_opt", "evil_opt.t7"],
                         REFUSED, "evil_opt.t7")


@pytest.mark.parametrize("script", ["plot_surface.py", "cifar10/main.py"])
@pytest.mark.parametrize("flag", ["--trainloader", "--testloader"])
def test_label_file_holding_code_is_refused_without_allow_pickle(work, capsys, script, flag):
    torch.save(RunsCode(work / "pwned"), work / "labels.dat")
    if script == "plot_surface.py":
        main, argv = plot_surface.main, MLP + ["--model_file", "g.t7", "--x=0:0:1"]
    else:
        main, argv = trainer.main, MLP + ["--epochs", "1", "--save", "nets"]
    expect_refused_unrun(work, capsys, main, argv + [flag, "labels.dat"], "labels.dat", "--allow_pickle")


@pytest.mark.parametrize("script", ["plot_surface.py", "cifar10/main.py"])
@pytest.mark.parametrize("batch", ["data_batch_1", "test_batch"])
def test_cifar_batch_holding_code_is_refused(work, capsys, fake_cifar, script, batch):
    shutil.copytree(fake_cifar["str"], work / "cifar")
    path = work / "cifar" / "cifar-10-batches-py" / batch
    with open(path, "wb") as f:  # a batch with the real keys and one extra object that runs code
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": RunsCode(work / "pwned")}, f)
    torch.save(model_loader.build("resnet20").state_dict(), work / "r.t7")
    if script == "plot_surface.py":
        main, argv = plot_surface.main, ["--model", "resnet20", "--model_file", "r.t7", "--x=0:0:1"]
    else:
        main, argv = trainer.main, ["--model", "resnet20", "--epochs", "1", "--save", "nets"]
    expect_refused_unrun(work, capsys, main, argv + ["--datapath", "cifar"], batch)


def test_pickled_dataloader_needs_the_opt_in_flag(tmp_path, mlp_ckpt):
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    torch.save(Exploit(), tmp_path / "trainloader.dat")
    r = run_script("plot_surface.py", ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                       "--x=0:0:1", "--trainloader", "trainloader.dat"], cwd=tmp_path)
    assert r.returncode == 2 and "--allow_pickle" in r.stderr
    assert not (tmp_path / "pwned").exists()


def test_allow_pickle_runs_the_file_as_documented(work, capsys):
    """The one opt-in: a pickled DataLoader carrying code loads, and its code runs (the marker appears)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    loader.payload = RunsCode(work / "pwned")
    torch.save(loader, work / "trainloader.dat")
    rc = errors.run_cli(plot_surface.main, MLP + ["--model_file", "g.t7", "--x=0:0:1", "--trainloader",
                                                  "trainloader.dat", "--allow_pickle", "--surf_file", "s.h5"])
    assert rc == 0, capsys.readouterr().err
    assert (work / "pwned").exists()
    with h5py.File(work / "s.h5", "r") as f:
        assert f.attrs["train_size"] == 20  # the loader's 20 images were evaluated, not the digits


def test_strings_in_hdf5_files_are_data(tmp_path):
    """dir_file and attributes holding code are read as text, never evaluated."""
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f["dir_file"] = code
        f["xcoordinates"] = np.linspace(-1, 1, 5)
        f["train_loss"] = np.linspace(1, 2, 5)
        f["train_acc"] = np.linspace(90, 80, 5)
        f.attrs["command"] = code
        f.attrs["model"] = code
    r = run_script("plot_1D.py", ["--surf_file", str(path), "--format", "png"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import h5_util
    surf = h5_util.read_surface(str(path))
    assert surf.dir_file == code and surf.attrs["command"] == code
    assert not marker.exists()

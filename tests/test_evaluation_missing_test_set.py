"""A custom dataset with no test set (its function returns (train, None)), in every data mode.

The user's case: a map-style Dataset over np.load(..., mmap_mode="r") arrays of shape (N, 4096) with
no test set, a matching MLP from --model file.py:fn, --data_in_memory no. Here the memmap is a few
MB of the same row shape. The test maps are simply not computed; the file records test_size 'none',
--eval_test says so in one line, the 1D plot says so, and the train maps equal a plain loop over
the memmap.
"""
import os

import h5py
import numpy as np
import pytest
import torch

import plot_1D
import plot_surface
from cifar10 import main as trainer
from helpers import run_script
from landscape.errors import UserError

ROWS, DIM = 300, 4096    # 4.9 MB of float32 rows, the user's row shape

CODE = '''
import os
import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))


class MemmapRows(torch.utils.data.Dataset):
    def __init__(self, stem):
        self.x = np.load(os.path.join(HERE, stem + "_x.npy"), mmap_mode="r")
        self.y = np.load(os.path.join(HERE, stem + "_y.npy"), mmap_mode="r")

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(int(self.y[i]))


def stream_no_test():
    return MemmapRows("train"), None


def stream_with_test():
    return MemmapRows("train"), MemmapRows("test")


def tensors_no_test():
    d = MemmapRows("train")
    return (torch.from_numpy(np.array(d.x)), torch.from_numpy(np.array(d.y))), None


def loader_no_test():
    return torch.utils.data.DataLoader(MemmapRows("train"), batch_size=64), None


class Rows(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from (MemmapRows("train")[i] for i in range(len(MemmapRows("train").y)))


def iterable_no_test():
    return Rows(), None


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4096, 16), nn.ReLU(), nn.Linear(16, 10))
'''


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """data.py (three dataset functions and the model), its memmapped arrays, and a checkpoint."""
    root = tmp_path_factory.mktemp("notest")
    rng = np.random.default_rng(0)
    for stem, n in (("train", ROWS), ("test", 60)):
        x = np.lib.format.open_memmap(str(root / f"{stem}_x.npy"), mode="w+", dtype=np.float32, shape=(n, DIM))
        x[:] = rng.standard_normal((n, DIM), dtype=np.float32)
        x.flush()
        del x
        np.save(root / f"{stem}_y.npy", rng.integers(0, 10, n))
    (root / "data.py").write_text(CODE)
    import importlib.util
    spec = importlib.util.spec_from_file_location("notest_data", root / "data.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.save(mod.mlp().state_dict(), root / "m.t7")
    return root, mod


def plain_loss(mod, at=0.0):
    """Cross-entropy and accuracy (%) of the checkpoint over the whole memmap, by a plain loop."""
    net = mod.mlp().eval()
    d = mod.MemmapRows("train")
    with torch.no_grad():
        out = net(torch.from_numpy(np.array(d.x)))
        y = torch.from_numpy(np.array(d.y))
        return float(torch.nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean() * 100)


def argv(root, fn, *extra):
    return ["--dataset", f"{root}/data.py:{fn}", "--model", f"{root}/data.py:mlp", "--model_file", str(root / "m.t7"),
            "--x=-0.5:0.5:3", "--xnorm", "filter", "--xignore", "biasbn", "--threads", "1", *extra]


def check_file(surf, mod, with_test):
    with h5py.File(surf, "r") as f:
        keys = set(f.keys())
        loss, acc = f["train_loss"][1], f["train_acc"][1]    # x = 0: the checkpoint itself
        test_size = f.attrs["test_size"]
        test_size = test_size.decode() if isinstance(test_size, bytes) else str(test_size)
    want_loss, want_acc = plain_loss(mod)
    assert loss == pytest.approx(want_loss, rel=1e-5) and acc == pytest.approx(want_acc, abs=1e-6)
    if with_test:
        assert {"test_loss", "test_acc"} <= keys and test_size == "60"
    else:
        assert not any(k.startswith("test_") for k in keys) and test_size == "none", (keys, test_size)


MODES = {"in memory (tensors)": ("tensors_no_test", []),
         "in memory (Dataset)": ("stream_no_test", ["--data_in_memory", "yes"]),
         "streamed": ("stream_no_test", ["--data_in_memory", "no"])}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("eval_test", [False, True], ids=["", "eval_test"])
def test_no_test_set_in_one_process(user_files, tmp_path, monkeypatch, capsys, mode, eval_test):
    root, mod = user_files
    monkeypatch.chdir(tmp_path)
    fn, extra = MODES[mode]
    flags = extra + (["--eval_test"] if eval_test else []) + ["--surf_file", "s.h5"]
    assert plot_surface.main(argv(root, fn, *flags)) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (err.count("has no test set: --eval_test computes no test maps") == 1) == eval_test, err
    check_file("s.h5", mod, with_test=False)


def test_with_a_test_set_streamed_the_test_maps_are_computed(user_files, tmp_path, monkeypatch):
    root, mod = user_files
    monkeypatch.chdir(tmp_path)
    assert plot_surface.main(argv(root, "stream_with_test", "--data_in_memory", "no", "--eval_test",
                                  "--surf_file", "s.h5")) == 0
    check_file("s.h5", mod, with_test=True)


@pytest.mark.parametrize("ranks_per_point", ["1", "2"], ids=["sharded grid", "ranks_per_point 2"])
@pytest.mark.parametrize("fn", ["stream_no_test", "stream_with_test"])
def test_no_test_set_under_mpiexec(user_files, tmp_path, fn, ranks_per_point):
    root, mod = user_files
    r = run_script("plot_surface.py", ["--mpi", *argv(root, fn, "--data_in_memory", "no", "--eval_test",
                                                     "--ranks_per_point", ranks_per_point, "--surf_file", "s.h5")],
                   cwd=tmp_path, mpi_ranks=2)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("has no test set") == (fn == "stream_no_test"), r.stderr
    check_file(tmp_path / "s.h5", mod, with_test=fn == "stream_with_test")


def test_the_plots_say_there_is_no_test_set(user_files, tmp_path, monkeypatch):
    root, mod = user_files
    monkeypatch.chdir(tmp_path)
    assert plot_surface.main(argv(root, "stream_no_test", "--eval_test", "--surf_file", "s.h5", "--plot",
                                  "--format", "png")) == 0
    assert os.path.exists("s.h5_1d_loss_acc.png")
    import matplotlib
    matplotlib.use("Agg")
    from landscape.plots import plot_1d
    texts = []
    real = plot_1d.save_figure
    monkeypatch.setattr(plot_1d, "save_figure",
                        lambda fig, *a: texts.extend(t.get_text() for ax in fig.axes for t in ax.texts) or real(fig, *a))
    plot_1d.plot_1d_loss_err("s.h5", fmt="png")
    assert "no test set" in texts
    with pytest.raises(UserError, match="has no test set"):
        plot_1D.main(["--surf_file", "s.h5", "--surf_name", "test_loss"])


def test_a_testloader_file_without_a_test_set_is_refused(user_files, tmp_path, monkeypatch):
    root, _ = user_files
    monkeypatch.chdir(tmp_path)
    torch.save({"targets": torch.zeros(5, dtype=torch.long)}, "labels.dat")
    with pytest.raises(UserError, match="--testloader 'labels.dat': the dataset has no test set"):
        plot_surface.main(argv(root, "tensors_no_test", "--testloader", "labels.dat", "--surf_file", "s.h5"))
    assert not os.path.exists("s.h5")


def test_a_dataset_function_returning_no_training_set_is_refused(user_files, tmp_path, monkeypatch):
    root, _ = user_files
    monkeypatch.chdir(tmp_path)
    (tmp_path / "none.py").write_text("def fn():\n    return None, None\n")
    with pytest.raises(UserError, match="returned no training set"):
        plot_surface.main(argv(root, "x", "--surf_file", "s.h5")[:0] + [
            "--dataset", "none.py:fn", "--model", f"{root}/data.py:mlp", "--model_file", str(root / "m.t7"),
            "--x=0:0:1", "--surf_file", "s.h5"])
    assert not os.path.exists("s.h5")


@pytest.mark.parametrize("fn", ["tensors_no_test", "loader_no_test", "iterable_no_test"])
def test_the_trainer_runs_without_a_test_set(user_files, tmp_path, fn):
    """Any kind of training set the surface takes (the trainer holds it in memory), no test set."""
    root, _ = user_files
    save = tmp_path / "nets"
    assert trainer.main(["--dataset", f"{root}/data.py:{fn}", "--model", f"{root}/data.py:mlp",
                         "--epochs", "1", "--batch_size", "64", "--save", str(save), "--threads", "1"]) == 0
    run = next(save.iterdir())
    log = (run / "log.out").read_text()
    assert "test_top1: nan" in log and (run / "model_1.t7").exists()
    assert not (run / "testloader.dat").exists()


def test_the_api_records_that_there_is_no_test_set(user_files, tmp_path):
    import landscape
    root, mod = user_files
    data = mod.tensors_no_test()[0]
    res = landscape.surface(mod.mlp().eval(), data, x="-0.5:0.5:3", out=str(tmp_path / "api.h5"), device="cpu")
    assert res.attrs["test_size"] == "none" and not any(k.startswith("test_") for k in res.values)
    want_loss, _ = plain_loss(mod)
    assert res["train_loss"][1] == pytest.approx(want_loss, rel=1e-5)

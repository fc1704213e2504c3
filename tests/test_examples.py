"""A real task end to end: the character-level transformer of examples/charlm.py, trained
by examples/train_charlm.py (its --quick mode), its landscape through the CLI (--model, --dataset,
--loss_name and --metrics as file.py:fn) and through the Python API, checked against the model's
own loss computed directly.
"""
import math
import os

import h5py
import numpy as np
import pytest
import torch

import dataloader
import h5_util
import landscape
import model_loader
from landscape import user_code
from helpers import REPO, run_script

LM = os.path.join(REPO, "examples", "charlm.py")
SPECS = ["--model", LM + ":model", "--dataset", LM + ":dataset", "--loss_name", LM + ":loss",
         "--metrics", LM + ":metrics"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A quickly trained checkpoint of the example, and the example's own functions."""
    folder = tmp_path_factory.mktemp("lm")
    ckpt = str(folder / "model.t7")
    r = run_script(os.path.join("examples", "train_charlm.py"), ["--quick", "--out", ckpt], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    fns = {name: user_code.load_callable(f"{LM}:{name}", name) for name in ("model", "dataset", "loss", "metrics")}
    return folder, ckpt, fns


def direct(fns, ckpt, x, y):
    """The checkpoint's loss and bits per character on (x, y), computed directly in float64."""
    net = model_loader.load("lm", LM + ":model", ckpt).double()
    with torch.no_grad():
        out = net(x)
    loss = fns["loss"]()(out, y).item()
    return loss, fns["metrics"]()["bits_per_char"](out, y).item()


def test_lm_landscape_through_the_cli(lm):
    folder, ckpt, fns = lm
    surf = str(folder / "lm.h5")
    r = run_script("plot_surface.py", [*SPECS, "--model_file", ckpt, "--x=-1:1:5", "--y=-1:1:5", "--xnorm", "filter",
                                       "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn",
                                       "--data_split", "4", "--surf_file", surf, "--plot", "--format", "png"],
                   cwd=folder, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with h5py.File(surf, "r") as f:
        assert {"train_loss", "train_acc", "train_bits_per_char", "train_char_accuracy"} <= set(f)
        Z, bits = f["train_loss"][()], f["train_bits_per_char"][()]
        assert f.attrs["loss_name"] == LM + ":loss" and f.attrs["metrics"] == LM + ":metrics"
    (tx, ty), _ = fns["dataset"]()
    idx = dataloader.split_indices(len(ty), 4, 0)           # --data_split 4: the reference's subset
    loss, ref_bits = direct(fns, ckpt, tx[idx], ty[idx])
    assert Z[2, 2] == pytest.approx(loss, rel=1e-5)
    assert bits[2, 2] == pytest.approx(ref_bits, rel=1e-5)
    np.testing.assert_allclose(bits, Z / math.log(2), rtol=1e-5)   # the metric map is the loss in bits
    assert (Z > Z[2, 2]).sum() >= 20                               # a minimum in the middle of the plot
    assert os.path.getsize(surf + "_train_loss_2dcontour.png") > 5000


def test_lm_landscape_through_the_api_equals_the_cli(lm):
    folder, ckpt, fns = lm
    surf = str(folder / "lm.h5")
    with h5py.File(surf, "r") as f:
        cli = f["train_loss"][()]
        dir_file = f["dir_file"][()].decode()
    (tx, ty), _ = fns["dataset"]()
    idx = dataloader.split_indices(len(ty), 4, 0)
    net = model_loader.load("lm", LM + ":model", ckpt)
    res = landscape.surface(net, (tx[idx], ty[idx]), loss=fns["loss"](), metrics=fns["metrics"](), x="-1:1:5",
                            y="-1:1:5", directions=h5_util.read_direction_file(dir_file), device="cpu")
    np.testing.assert_allclose(res["train_loss"], cli, rtol=1e-5)
    assert res["train_loss"][2, 2] == pytest.approx(direct(fns, ckpt, tx[idx], ty[idx])[0], rel=1e-5)

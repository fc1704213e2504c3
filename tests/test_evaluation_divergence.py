"""Diverged points are results: stored as inf/NaN, drawn as gaps, never recomputed."""
import os

import h5py
import numpy as np
import torch

import plot_1D
import plot_2D
import plot_surface


def test_overflowing_points_are_kept_plotted_and_not_recomputed(in_tmp, mlp_ckpt, capsys):
    ckpt = torch.load(mlp_ckpt, weights_only=True)
    ckpt["state_dict"]["fc2.weight"] *= 1e37  # large steps along the direction overflow float32 logits
    torch.save(ckpt, "big.t7")
    args = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "big.t7", "--x=-1:1:5", "--y=-1:1:5",
            "--xnorm", "weight", "--ynorm", "weight", "--surf_file", "div.h5", "--threads", "1"]
    assert plot_surface.main(args) == 0
    with h5py.File("div.h5", "r") as f:
        loss = f["train_loss"][()]
    assert (~np.isfinite(loss)).any() and np.isfinite(loss).any()
    assert (loss != -1).all()

    capsys.readouterr()
    assert plot_surface.main(args) == 0
    assert "computing 0 on" in capsys.readouterr().out  # NaN/inf are results, not gaps to fill
    with h5py.File("div.h5", "r") as f:
        np.testing.assert_array_equal(f["train_loss"][()], loss)

    paths = plot_2D.plot_2d_contour("div.h5", "train_loss", fmt="png")
    assert all(os.path.getsize(p) > 2000 for p in paths)


def test_nan_in_1d_is_a_gap(in_tmp):
    x = np.linspace(-1, 1, 7)
    with h5py.File("d1.h5", "w") as f:
        f["dir_file"] = "d.h5"
        f["xcoordinates"] = x
        f["train_loss"] = np.array([1, 0.5, np.nan, 0.1, np.inf, 0.6, 1.2])
        f["train_acc"] = np.array([50, 70, 0, 95, 0, 70, 40.0])
    assert plot_1D.plot_1d_loss_err("d1.h5", fmt="png")

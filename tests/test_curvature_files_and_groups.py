"""Curvature maps with files and groups of ranks: eigenvalue maps joining the loss surface file
(plot_surface.py's flags, each map family's own --precision; any matrix, a loss-only file), sum
losses (warned for the Hessian and GGN, refused for the Fisher), iterable datasets of batches, named
direction files of GGN eigenvectors with the curvature flags, one JSON per matrix at the centre,
per-layer traces short of their target, and a data-parallel shard's gradient."""
import os
import warnings

import h5py
import numpy as np
import pytest
import torch

import landscape
import model_loader
from helpers import FILTER_X, MLP, assert_refused, copy_ckpt, ok, read_map, run_script, snapshot, surf_dir_file

GRID = ["--x=-1:1:3", "--y=-1:1:3", "--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter",
        "--yignore", "biasbn"]


def test_eigen_maps_go_into_the_loss_surface_file_with_the_same_flags(tmp_path, mlp_ckpt, cli):
    """README: plot_hessian_eigen.py takes plot_surface.py's flags and writes into the same surface file;
    each map family records its own --precision."""
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = MLP + ["--model_file", "m.t7", "--x=-1:1:2", *FILTER_X, "--batch_size", "2000", "--surf_file", "s.h5"]
    ok(cli(args, tmp_path))
    loss = read_map(tmp_path / "s.h5")
    ok(cli(args, tmp_path, script="plot_hessian_eigen.py"))
    with h5py.File(tmp_path / "s.h5", "r") as f:
        np.testing.assert_array_equal(f["train_loss"][()], loss)
        assert (f["max_eig"][()] >= f["min_eig"][()]).all() and np.isfinite(f["max_eig"][()]).all()
        assert f.attrs["precision"] == "default" and f.attrs["eig_precision"] == "fp32"


def test_eigenvalue_maps_of_any_matrix_join_a_loss_only_surface_file(tmp_path, mlp_ckpt):
    """A loss surface records no curvature: a GGN or finite-difference map may join it, and a later
    map of another matrix is still refused."""
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = [*MLP, "--model_file", ckpt, *GRID, "--surf_file", "s.h5"]
    ok(run_script("plot_surface.py", args, cwd=tmp_path))
    ok(run_script("plot_hessian_eigen.py", [*args, "--curvature", "ggn", "--hvp", "finite_difference"], cwd=tmp_path))
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["curvature"] == "ggn" and f.attrs["hvp"] == "finite_difference"
        assert (f["max_eig"][()] > 0).all() and (f["train_loss"][()] > 0).all()
    before = snapshot(tmp_path)
    assert_refused(run_script("plot_hessian_eigen.py", [*args, "--curvature", "ef"], cwd=tmp_path), tmp_path, before,
                   "--curvature")


def test_a_sum_loss_warns_for_the_hessian_and_ggn_and_is_refused_for_the_fisher(mlp_ckpt, digits):
    net = model_loader.load("digits", "digits_mlp", mlp_ckpt)
    data = (digits.train_x[:300], digits.train_y[:300])
    total = torch.nn.CrossEntropyLoss(reduction="sum")
    for curvature in ("hessian", "ggn"):
        with pytest.warns(landscape.CurvatureWarning, match="not the mean over examples"):
            landscape.hessian(net, data, total, curvature=curvature, trace=False, device="cpu")
    with pytest.raises(landscape.LandscapeError, match="mean over examples"):
        landscape.hessian(net, data, total, curvature="ef", trace=False, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", landscape.CurvatureWarning)       # a mean: no warning
        landscape.hessian(net, data, curvature="ggn", trace=False, device="cpu")


class Batches(torch.utils.data.IterableDataset):
    """An IterableDataset that yields whole batches (the last one short), not examples."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size = x, y, size

    def __iter__(self):
        for s in range(0, len(self.y), self.size):
            yield self.x[s:s + self.size], self.y[s:s + self.size]


def test_an_iterable_dataset_of_batches_is_refused_in_one_line(mlp_ckpt, digits, tmp_path):
    net = model_loader.load("digits", "digits_mlp", mlp_ckpt)
    data = Batches(digits.train_x[:237], digits.train_y[:237], 100)
    for call in (lambda: landscape.hessian(net, data, trace=False, device="cpu", data_in_memory="no"),
                 lambda: landscape.surface(net, data, x="-1:1:3", device="cpu")):
        with pytest.raises(landscape.LandscapeError, match="single examples") as e:
            call()
        assert "\n" not in str(e.value)
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    (tmp_path / "batches.py").write_text(
        "import dataloader, torch\n"
        "class B(torch.utils.data.IterableDataset):\n"
        "    def __init__(self, x, y): self.x, self.y = x, y\n"
        "    def __iter__(self):\n"
        "        for s in range(0, len(self.y), 100): yield self.x[s:s + 100], self.y[s:s + 100]\n"
        "def dataset():\n"
        "    d = dataloader.load_tensors('digits')\n"
        "    return B(d.train_x, d.train_y), B(d.test_x, d.test_y)\n")
    before = snapshot(tmp_path)
    r = run_script("plot_hessian_eigen.py", ["--dataset", "batches.py:dataset", "--model", "digits_mlp",
                                             "--model_file", ckpt, "--at_center", "--threads", "1",
                                             "--data_in_memory", "no"], cwd=tmp_path)
    assert_refused(r, tmp_path, before, "single examples")


def test_a_named_direction_file_of_ggn_eigenvectors_and_the_curvature_flags(tmp_path, mlp_ckpt):
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    base = [*MLP, "--model_file", ckpt, "--x=-1:1:3", "--y=-1:1:3"]
    ok(run_script("plot_surface.py", [*base, "--xdir", "hessian", "--ydir", "hessian", "--curvature", "ggn",
                                      "--surf_file", "a.h5"], cwd=tmp_path))
    dir_file = ckpt + "_weights_xdir=hessian_ydir=hessian_curvature=ggn.h5"
    assert os.path.exists(dir_file)
    ok(run_script("plot_surface.py", [*base, "--dir_file", dir_file, "--curvature", "ggn", "--surf_file", "b.h5"],
                  cwd=tmp_path))
    before = snapshot(tmp_path)
    assert_refused(run_script("plot_surface.py", [*base, "--dir_file", dir_file, "--hvp", "finite_difference",
                                                  "--surf_file", "d.h5"], cwd=tmp_path), tmp_path, before, "--hvp")
    # a file of random directions: --curvature cannot change them
    ok(run_script("plot_surface.py", [*base, *GRID[2:], "--surf_file", "r.h5"], cwd=tmp_path))
    random_file = surf_dir_file(tmp_path / "r.h5", tmp_path)
    before = snapshot(tmp_path)
    assert_refused(run_script("plot_surface.py", [*base, "--dir_file", random_file, "--curvature", "ggn",
                                                  "--surf_file", "e.h5"], cwd=tmp_path), tmp_path, before,
                   "--curvature")


def test_random_directions_made_by_a_ggn_map_record_no_curvature(tmp_path, mlp_ckpt):
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    ok(run_script("plot_hessian_eigen.py", [*MLP, "--model_file", ckpt, *GRID, "--curvature", "ggn",
                                            "--surf_file", "g.h5"], cwd=tmp_path))
    dir_file = surf_dir_file(tmp_path / "g.h5", tmp_path)
    with h5py.File(dir_file, "r") as f:
        assert "spec_curvature" not in f.attrs
    # ... so a loss surface and a Hessian map reuse them
    ok(run_script("plot_surface.py", [*MLP, "--model_file", ckpt, *GRID, "--surf_file", "g.h5"], cwd=tmp_path))


def test_each_matrix_at_the_centre_has_its_own_json(tmp_path, mlp_ckpt):
    ckpt = copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    for curvature in ("hessian", "ggn", "ef"):
        ok(run_script("plot_hessian_eigen.py", [*MLP, "--model_file", ckpt, "--at_center", "--curvature", curvature,
                                                "--trace_samples", "4", "--trace_rel_se", "0"], cwd=tmp_path))
    import json
    got = {c: json.load(open(f"{ckpt}_{c}.json"))["curvature"] for c in ("hessian", "ggn", "ef")}
    assert got == {"hessian": "hessian", "ggn": "ggn", "ef": "ef"}


def test_a_per_layer_trace_short_of_its_target_is_flagged(mlp_ckpt, digits):
    net = model_loader.load("digits", "digits_mlp", mlp_ckpt)
    with pytest.warns(landscape.CurvatureWarning) as caught:
        r = landscape.hessian(net, (digits.train_x[:300], digits.train_y[:300]), per_layer=True, params="(weight|bias)",
                              trace_samples=3, trace_rel_se=1e-6, device="cpu")
    assert any("per-layer trace of weight, bias" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert all(layer.trace_stderr > 1e-6 * abs(layer.trace) for layer in r.per_layer)


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_a_shards_gradient_is_its_share_of_the_whole_sets(mlp_ckpt, digits, curvature):
    """A rank's shard of 200 of N = 600 examples: its operator's gradient (Lanczos' start, summed over
    the group) is the sum of its examples' loss gradients over N, not their mean."""
    from landscape.curvature import model as curvature_model
    from landscape.evaluation import DeviceSet
    net = model_loader.load("digits", "digits_mlp", mlp_ckpt)
    x, y = digits.train_x[:200], digits.train_y[:200]
    named = curvature_model.covered_params(net)
    op = curvature_model.data_operator(net, DeviceSet(x, y, 64, total=600), torch.nn.CrossEntropyLoss(), named,
                                       curvature)
    got = op.gradient()
    net.zero_grad()
    (torch.nn.functional.cross_entropy(net(x), y, reduction="sum") / 600).backward()
    want = torch.cat([p.grad.reshape(-1) for _, p in named])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)

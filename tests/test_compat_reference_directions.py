"""A default command line draws exactly the reference's random directions.

tests/data/reference_directions.json (copied from ../shared/reference/) records, for seven
(model, --dir_type) cases, what the reference's own plot_surface.py wrote into its direction file on
the CPU for `--x=-1:1:3 --y=-1:1:3 --xnorm filter --xignore biasbn --ynorm filter --yignore biasbn`:
per entry its shape, sum, L2 norm and first four values. The reference seeds torch's global
generator with 123, builds the model (whose initialisation consumes draws), loads the checkpoint,
then draws every entry with torch.randn, x before y. The checkpoint's weights follow the file's note.
"""
import json
import os

import h5py
import numpy as np
import pytest
import torch

import models
import plot_surface
from helpers import run_script

CASES = json.load(open(os.path.join(os.path.dirname(__file__), "data", "reference_directions.json")))


def reference_checkpoint(name, path):
    """The note's recipe: randn(shape) * 0.1 from one Generator(seed 0), state_dict order; running_var
    entries abs() + 0.5; integer entries zero."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, v in models.ZOO[name]().state_dict().items():
        if v.is_floating_point():
            t = torch.randn(v.shape, generator=g) * 0.1
            state[key] = t.abs() + 0.5 if key.endswith("running_var") else t
        else:
            state[key] = torch.zeros_like(v)
    torch.save({"state_dict": state, "epoch": 0, "acc": 0.0}, path)


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cifar"))
    r = run_script(os.path.join("tests", "fake_cifar10.py"), [root, "--train", "4", "--test", "2"])
    assert r.returncode == 0, r.stderr
    return root


@pytest.mark.parametrize("case", sorted(CASES["cases"]))
def test_default_command_writes_the_references_directions(case, tmp_path, tiny_cifar, monkeypatch):
    name, dir_type = case.split("/")
    ckpt = str(tmp_path / "model.t7")
    reference_checkpoint(name, ckpt)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(999)  # whatever the caller's random state, the directions are the reference's
    args = ["--model", name, "--model_file", ckpt, "--datapath", tiny_cifar, "--dir_type", dir_type,
            "--x=-1:1:3", "--y=-1:1:3", "--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter",
            "--yignore", "biasbn", "--threads", "1"]
    assert plot_surface.main(args) == 0
    dir_file = f"{ckpt}_{dir_type}_xignore=biasbn_xnorm=filter_yignore=biasbn_ynorm=filter.h5"
    with h5py.File(dir_file, "r") as f:
        for group in ("xdirection", "ydirection"):
            expected = CASES["cases"][case][group]
            assert len(f[group]) == len(expected)
            for i, (shape, total, norm, first) in enumerate(expected):
                d = f[group][str(i)][()]
                assert list(d.shape) == shape, (group, i)
                np.testing.assert_array_equal(d.ravel()[:4].astype(np.float32),
                                              np.asarray(first, dtype=np.float32)[:d.size], err_msg=f"{group}[{i}]")
                assert float(d.astype(np.float64).sum()) == pytest.approx(total, rel=1e-5, abs=1e-5), (group, i)
                assert float(np.linalg.norm(d.astype(np.float64))) == pytest.approx(norm, rel=1e-6, abs=1e-7)


def test_the_api_leaves_the_callers_random_state_alone():
    import landscape
    net = models.ZOO["digits_mlp"]()
    data = (torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    landscape.surface(net, data, x="-1:1:3", device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_another_seed_draws_other_directions_into_another_file(tmp_path, tiny_cifar, monkeypatch):
    ckpt = str(tmp_path / "model.t7")
    reference_checkpoint("resnet20", ckpt)
    monkeypatch.chdir(tmp_path)
    base = ["--model", "resnet20", "--model_file", ckpt, "--datapath", tiny_cifar, "--x=0:0:1", "--xnorm", "filter",
            "--threads", "1"]
    assert plot_surface.main(base) == 0
    assert plot_surface.main(base + ["--seed", "7"]) == 0
    with h5py.File(f"{ckpt}_weights_xnorm=filter.h5", "r") as a, h5py.File(f"{ckpt}_weights_xnorm=filter_seed=7.h5",
                                                                            "r") as b:
        assert a.attrs["seed"] == 123 and b.attrs["seed"] == 7
        assert not np.array_equal(a["xdirection"]["0"][()], b["xdirection"]["0"][()])

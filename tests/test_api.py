"""The Python API (landscape.py): any model, loss, metrics and data; files, resume and MPI as the CLI.

Each value is checked against an independent computation: the model evaluated directly, in float64,
at the point the surface claims to hold.
"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import h5_util
import landscape
import plot_surface
from helpers import REPO, load_net, mpi_env, mpiexec
from landscape import LandscapeError


def regression_task(seed=0, n=96):
    """A small MLP regressor (float targets, MSE): no accuracy exists for it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    y = (x[:, :1] * 2 - x[:, 1:2] ** 2 + 0.1 * torch.randn(n, 1, generator=g))
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 1))
    return net, (x, y)


def moved(net, directions, coord):
    """An independent copy of `net` moved to w + x dx (+ y dy), from direction tensors."""
    import copy
    m = copy.deepcopy(net).double()
    with torch.no_grad():
        for step, d in zip(coord, directions):
            for p, di in zip(m.parameters(), d):
                p.add_(step * torch.as_tensor(di).double())
    return m


def read_dirs(dir_file):
    return h5_util.read_direction_file(dir_file)


def test_regression_surface_centre_is_the_direct_loss_and_has_no_accuracy(tmp_path):
    net, (x, y) = regression_task()
    res = landscape.surface(net, (x, y), loss=nn.MSELoss(), x="-1:1:5", y="-1:1:3", out=str(tmp_path / "r.h5"),
                            device="cpu")
    assert set(res.values) == {"train_loss"}        # no fake accuracy for a regression
    assert res["train_loss"].shape == (3, 5) and res.x.shape == (5,) and res.y.shape == (3,)
    with torch.no_grad():
        direct = F.mse_loss(net.double()(x.double()), y.double()).item()
    assert res["train_loss"][1, 2] == pytest.approx(direct, rel=1e-5)
    dirs = read_dirs(res.dir_file)
    for j, yy in enumerate(res.y):
        for i, xx in enumerate(res.x):
            with torch.no_grad():
                ref = F.mse_loss(moved(net, dirs, (xx, yy))(x.double()), y.double()).item()
            assert res["train_loss"][j, i] == pytest.approx(ref, rel=1e-5), (j, i)


def test_data_as_tensors_dataset_or_loader_give_one_surface(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    import dataloader
    d = dataloader.load_tensors("digits")
    x, y = d.train_x[:300], d.train_y[:300]
    ds = torch.utils.data.TensorDataset(x, y)
    runs = [landscape.surface(net, data, x="-1:1:3", device="cpu") for data in
            ((x, y), ds, torch.utils.data.DataLoader(ds, batch_size=64))]
    for r in runs[1:]:
        np.testing.assert_array_equal(r["train_loss"], runs[0]["train_loss"])
        np.testing.assert_array_equal(r["train_acc"], runs[0]["train_acc"])
    with torch.no_grad():
        out = net.double()(x.double())
    assert runs[0]["train_loss"][1] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert runs[0]["train_acc"][1] == pytest.approx(100 * (out.argmax(1) == y).double().mean().item())


def test_metrics_and_tuple_dict_or_object_outputs(cnn_ckpt):
    base = load_net("digits_cnn", cnn_ckpt)
    import dataloader
    d = dataloader.load_tensors("digits")
    x, y = d.train_x[:200], d.train_y[:200]

    class Wrap(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.net, self.kind = base, kind

        def forward(self, inp):
            z = self.net(inp)
            if self.kind == "tuple":
                return z, z.sum()
            if self.kind == "dict":
                return {"logits": z, "aux": z.mean()}
            return type("Out", (), {"logits": z})()

    metrics = {"margin": lambda out, t: (out.gather(1, t[:, None]) - out.logsumexp(1, keepdim=True)).mean()}
    ref = landscape.surface(base, (x, y), x="-0.5:0.5:3", metrics=metrics, device="cpu")
    assert set(ref.values) == {"train_loss", "train_acc", "train_margin"}
    assert ref["train_margin"][1] == pytest.approx(-ref["train_loss"][1], rel=1e-5)  # log p(y) = -CE
    for kind in ("tuple", "dict", "object"):
        r = landscape.surface(Wrap(kind), (x, y), x="-0.5:0.5:3", metrics=metrics, device="cpu")
        np.testing.assert_allclose(r["train_loss"], ref["train_loss"], rtol=1e-6)


def test_explicit_directions_and_test_data(mlp_ckpt):
    net = load_net("digits_mlp", mlp_ckpt)
    import dataloader
    d = dataloader.load_tensors("digits")
    g = torch.Generator().manual_seed(1)
    dx = [torch.randn(p.shape, generator=g) * 0.1 for p in net.parameters()]
    dy = {"fc2.weight": torch.randn(net.fc2.weight.shape, generator=g) * 0.1}   # by name; the rest stays
    res = landscape.surface(net, (d.train_x, d.train_y), x="-1:1:3", y="-1:1:3", directions=[dx, dy],
                            test_data=(d.test_x, d.test_y), device="cpu")
    assert {"train_loss", "train_acc", "test_loss", "test_acc"} == set(res.values)
    full_dy = [dy.get(n, torch.zeros(p.shape)) for n, p in net.named_parameters()]
    with torch.no_grad():
        ref = F.cross_entropy(moved(net, [dx, full_dy], (1.0, -1.0))(d.test_x.double()), d.test_y).item()
    assert res["test_loss"][0, 2] == pytest.approx(ref, rel=1e-5)


def test_interpolation_reaches_model2(cnn_run):
    a, b = load_net("digits_cnn", f"{cnn_run}/model_1.t7"), load_net("digits_cnn", f"{cnn_run}/model_4.t7")
    import dataloader
    d = dataloader.load_tensors("digits")
    res = landscape.interpolation(a, b, (d.train_x, d.train_y), x="0:1:2", device="cpu")
    for net, v in ((a, res["train_loss"][0]), (b, res["train_loss"][1])):
        with torch.no_grad():
            assert v == pytest.approx(F.cross_entropy(net.double()(d.train_x.double()), d.train_y).item(), rel=1e-5)


def test_the_users_model_is_left_untouched(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    landscape.surface(net, (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))), x="-1:1:3", y="-1:1:3", device="cpu")
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert net.conv1.weight.is_contiguous()  # no layout change leaked


def test_out_writes_the_clis_files_and_resumes(tmp_path, capsys):
    net, data = regression_task()
    out = str(tmp_path / "r.h5")
    first = landscape.surface(net, data, loss=nn.MSELoss(), x="-1:1:4", y="-1:1:3", out=out, device="cpu",
                              progress=True)
    assert "computed 12 points" in capsys.readouterr().out
    with h5py.File(out, "r") as f:
        assert {"dir_file", "xcoordinates", "ycoordinates", "train_loss"} <= set(f)
        assert f["dir_file"][()].decode() == first.dir_file and os.path.exists(first.dir_file)
        assert f.attrs["loss_name"].startswith("MSELoss") and f.attrs["model_sha256"]
    with h5py.File(out, "r+") as f:
        f["train_loss"][0, :2] = -1
    again = landscape.surface(net, data, loss=nn.MSELoss(), x="-1:1:4", y="-1:1:3", out=out, device="cpu",
                              progress=True)
    assert "computing 2 on" in capsys.readouterr().out
    np.testing.assert_array_equal(again["train_loss"], first["train_loss"])
    other, _ = regression_task(seed=1)
    with pytest.raises(LandscapeError, match="another model weights"):
        landscape.surface(other, data, loss=nn.MSELoss(), x="-1:1:4", y="-1:1:3", out=out, device="cpu")
    with pytest.raises(LandscapeError, match="loss"):
        landscape.surface(net, data, loss=nn.L1Loss(), x="-1:1:4", y="-1:1:3", out=out, device="cpu")


@pytest.mark.parametrize("kwargs,words", [
    (dict(loss=lambda out, t: out.sum(1)), "must return the mean over the batch"),
    (dict(loss=lambda out, t: 1 / 0), "ZeroDivisionError"),
    (dict(metrics={"bad": lambda out, t: out}), "metric 'bad'"),
    (dict(metrics={"loss": lambda out, t: out.mean()}), "metric name 'loss'"),
    (dict(metrics="nofile.py:fn"), "nofile.py"),
    (dict(directions="sideways"), "normalisation"),
    (dict(params="^nothing$"), "matches none"),
    (dict(params="(unclosed"), "not a valid regular expression"),
    (dict(device="gpu7"), "not a device"),
    (dict(model2=nn.Linear(3, 3)), "same architecture"),
    (dict(directions=[[torch.zeros(2)]]), "has 1 tensors"),
    (dict(out="s.txt"), ".h5"),
])
def test_bad_arguments_raise_one_landscape_error(kwargs, words):
    net, data = regression_task()
    kwargs = dict({"loss": nn.MSELoss(), "device": "cpu"}, **kwargs)
    with pytest.raises(LandscapeError, match=words.replace("(", r"\(")):
        landscape.surface(net, data, x=kwargs.pop("x", "-1:1:3"), **kwargs)


def test_the_api_error_is_the_clis_error(mlp_ckpt, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from landscape import errors
    rc = errors.run_cli(plot_surface.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt,
                                            "--x=-1:1:3", "--params", "^nothing$"])
    cli = capsys.readouterr().err.strip()
    with pytest.raises(LandscapeError) as e:
        landscape.surface(load_net("digits_mlp", mlp_ckpt), (torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))),
                          x="-1:1:3", params="^nothing$", device="cpu")
    assert rc == 2 and cli == f"error: {e.value}"


API_UNDER_MPI = r'''
import sys, torch, numpy as np
sys.path.insert(0, {repo!r})
import landscape, model_loader, dataloader
net = model_loader.load("digits", "digits_cnn", {ckpt!r})
d = dataloader.load_tensors("digits")
res = landscape.surface(net, (d.train_x, d.train_y), x="-1:1:5", y="-1:1:3", device="cpu", out={out!r})
np.save({out!r} + f".rank{{landscape.api.auto_comm('auto').Get_rank()}}.npy", res["train_loss"])
'''


def test_under_mpirun_the_grid_is_split_and_every_rank_gets_the_result(tmp_path, cnn_ckpt):
    one = landscape.surface(load_net("digits_cnn", cnn_ckpt), (lambda d: (d.train_x, d.train_y))(
        __import__("dataloader").load_tensors("digits")), x="-1:1:5", y="-1:1:3", device="cpu")
    out = str(tmp_path / "mpi.h5")
    code = API_UNDER_MPI.format(repo=REPO, ckpt=cnn_ckpt, out=out)
    r = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", sys.executable, "-c", code], capture_output=True,
                       text=True, env=mpi_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(f"{out}.rank{rank}.npy"), one["train_loss"])
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["train_loss"][()], one["train_loss"])


# ----------------------------------------------------------------------------- directions regenerated from their seed
def test_regenerated_directions_are_identical_everywhere_and_match_their_saved_file(tmp_path, cnn_ckpt):
    import dataloader
    net = load_net("digits_cnn", cnn_ckpt)
    d = dataloader.load_tensors("digits")
    data = (d.train_x[:400], d.train_y[:400])
    out = str(tmp_path / "regen.h5")
    saved = str(tmp_path / "saved_dirs.h5")
    a = landscape.surface(net, data, x="-1:1:3", y="-1:1:3", regenerate=True, out=out, save_directions=saved,
                          device="cpu", dir_type="states")
    with h5py.File(a.dir_file, "r") as f:   # the direction file holds the recipe, not the tensors
        assert f.attrs["regenerated"] == 1 and len(f["xdirection"]) == 0
    with h5py.File(out, "r+") as f:
        f["train_loss"][1, :] = -1          # resume: the regenerated directions must be the same again
    b = landscape.surface(net, data, x="-1:1:3", y="-1:1:3", regenerate=True, out=out, device="cpu",
                          dir_type="states")
    np.testing.assert_array_equal(b["train_loss"], a["train_loss"])
    stored = landscape.surface(net, data, x="-1:1:3", y="-1:1:3", directions=read_dirs(saved), device="cpu",
                               dir_type="states")
    np.testing.assert_allclose(stored["train_loss"], a["train_loss"], rtol=1e-6)
    plain = landscape.surface(net, data, x="-1:1:3", y="-1:1:3", device="cpu", dir_type="states")
    assert not np.allclose(plain["train_loss"], a["train_loss"])   # another scheme: other draws
    # the saved directions are filter-normalised and zero where --ignore biasbn says
    dirs = read_dirs(saved)
    for (name, w), dx in zip(net.state_dict().items(), dirs[0]):
        if w.dim() > 1:
            torch.testing.assert_close(dx.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-4, atol=1e-6)
        else:
            assert dx.abs().sum() == 0, name


REGEN_UNDER_MPI = r'''
import sys, numpy as np
sys.path.insert(0, {repo!r})
import landscape, model_loader, dataloader
net = model_loader.load("digits", "digits_cnn", {ckpt!r})
d = dataloader.load_tensors("digits")
res = landscape.surface(net, (d.train_x[:400], d.train_y[:400]), x="-1:1:5", y="-1:1:3", regenerate=True,
                        device="cpu")
if landscape.api.auto_comm('auto').Get_rank() == 0:
    np.save({out!r}, res["train_loss"])
'''


def test_regenerated_directions_under_mpi_equal_one_rank(tmp_path, cnn_ckpt):
    import dataloader
    d = dataloader.load_tensors("digits")
    one = landscape.surface(load_net("digits_cnn", cnn_ckpt), (d.train_x[:400], d.train_y[:400]), x="-1:1:5",
                            y="-1:1:3", regenerate=True, device="cpu")
    out = str(tmp_path / "regen_mpi.npy")
    r = subprocess.run([mpiexec(), "-n", "2", "--oversubscribe", sys.executable, "-c",
                        REGEN_UNDER_MPI.format(repo=REPO, ckpt=cnn_ckpt, out=out)],
                       capture_output=True, text=True, env=mpi_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_array_equal(np.load(out), one["train_loss"])


def test_explicit_directions_never_mix_with_a_stored_file(tmp_path):
    net, data = regression_task()
    g = torch.Generator().manual_seed(0)
    a = [[torch.randn(p.shape, generator=g) for p in net.parameters()]]
    b = [[torch.randn(p.shape, generator=g) for p in net.parameters()]]
    out = str(tmp_path / "e.h5")
    first = landscape.surface(net, data, loss=nn.MSELoss(), x="-1:1:3", directions=a, out=out, device="cpu")
    again = landscape.surface(net, data, loss=nn.MSELoss(), x="-1:1:3", directions=a, out=out, device="cpu")
    np.testing.assert_array_equal(again["train_loss"], first["train_loss"])
    with pytest.raises(LandscapeError, match="holds other directions"):
        landscape.surface(net, data, loss=nn.MSELoss(), x="-1:1:3", directions=b, out=out, device="cpu")

"""The first review's findings, each fixed at its root and checked against an independent computation:
BN folding of weight-normalised layers, callables fingerprinted for resume, the API's argument checks,
BN recalibration's last batch, direction-file names of unrelated folders, the reference's front doors
and helper names, the viewer without plotly, the arithmetic in the provenance table."""
import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from landscape.evaluation import fast_model


# ----------------------------------------------------------------------------- 1. BN folding of weight-normalised layers
class ConvBN(nn.Module):
    """conv -> BatchNorm -> linear; the conv weight-normalised (new parametrization or old hook) or plain."""

    def __init__(self, norm=""):
        super().__init__()
        conv = nn.Conv2d(1, 8, 3, padding=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # the old weight_norm is deprecated
            self.conv = {"": lambda c: c, "parametrization": nn.utils.parametrizations.weight_norm,
                         "hook": nn.utils.weight_norm}[norm](conv)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 64, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).relu().flatten(1))


def conv_bn(norm, seed=0):
    """A ConvBN with non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    torch.manual_seed(seed)
    net = ConvBN(norm)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net.bn.running_mean.copy_(torch.randn(8, generator=g))
        net.bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
        net.bn.weight.copy_(torch.randn(8, generator=g))
        net.bn.bias.copy_(torch.randn(8, generator=g))
    return net.eval()


def digits_batch(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm", ["parametrization", "hook"])
def test_weight_normalised_convs_are_never_folded_and_evaluate_as_the_model(norm):
    net = conv_bn(norm)
    x, _ = digits_batch(6)
    fast = fast_model.FastModel(net, fold_bn=True, sample=((x[:2],), {}))
    assert fast.pairs == []
    with torch.no_grad():
        torch.testing.assert_close(fast(x), net(x))


def test_a_plain_conv_before_batchnorm_still_folds():
    net = conv_bn("")
    x, _ = digits_batch(6)
    fast = fast_model.FastModel(net, fold_bn=True, sample=((x[:2],), {}))
    assert len(fast.pairs) == 1
    with torch.no_grad():
        ref = net(x)
        torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_the_set_up_check_falls_back_to_the_model_when_the_folded_graph_differs(monkeypatch):
    """The general guard alone: with the structural rule disabled, the check on the sample still refuses the fold."""
    monkeypatch.setattr(fast_model, "computes_plainly", lambda module: True)
    net = conv_bn("parametrization")
    x, _ = digits_batch(6)
    unchecked = fast_model.FastModel(copy.deepcopy(net), fold_bn=True)   # no sample: folded, and wrong
    with torch.no_grad():
        assert len(unchecked.pairs) == 1 and not torch.allclose(unchecked(x), net(x), atol=1e-3)
    checked = fast_model.FastModel(net, fold_bn=True, sample=((x[:2],), {}))
    assert checked.pairs == [] and checked.graph is net
    with torch.no_grad():
        torch.testing.assert_close(checked(x), net(x))


@pytest.mark.parametrize("norm", ["parametrization", "hook"])
def test_surface_of_a_weight_normalised_model_is_its_plain_loss(norm):
    net = conv_bn(norm)
    x, y = digits_batch(64)
    with torch.no_grad():
        plain = F.cross_entropy(net.double()(x.double()), y).item()
    net.float()
    res = landscape.surface(net, (x, y), x="0:0:1", directions="filter")   # fold_bn=True, the default
    assert res.values["train_loss"][0] == pytest.approx(plain, rel=1e-5)


# ----------------------------------------------------------------------------- 4. BN recalibration's last batch
class LinBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn, self.fc = nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.bn(self.lin(x.flatten(1))).relu())


def test_recalibration_batches_merge_a_last_batch_of_one_example():
    from landscape.evaluation import recalibration_batches
    assert recalibration_batches(1437, 1436) == [(0, 1437)]
    assert recalibration_batches(9, 4) == [(0, 4), (4, 9)]
    assert recalibration_batches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert recalibration_batches(2, 128) == [(0, 2)]
    with pytest.raises(landscape.LandscapeError, match="at least 2"):
        recalibration_batches(1, 128)


def test_bn_recalibrate_with_a_last_batch_of_one_on_batchnorm1d_equals_the_whole_set_statistics():
    """1437 examples in batches of 1436: one batch of 1437, so the statistics are the set's own
    (mean, unbiased variance of the Linear's outputs), computed here directly."""
    from landscape.zoo.data import load_digits
    d = load_digits()
    torch.manual_seed(0)
    net = LinBN().eval()
    res = landscape.surface(net, (d.train_x, d.train_y), x="0:0:1", directions="filter", bn_recalibrate=True,
                            batch_size=1436)
    ref = copy.deepcopy(net).double()
    with torch.no_grad():
        h = ref.lin(d.train_x.double().flatten(1))                           # (1437, 32)
        ref.bn.running_mean.copy_(h.mean(0))
        ref.bn.running_var.copy_(h.var(0, unbiased=True))
        loss = F.cross_entropy(ref(d.train_x.double()), d.train_y).item()
    assert res.values["train_loss"][0] == pytest.approx(loss, rel=1e-5)


def test_bn_recalibrate_on_a_training_set_of_one_example_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    one = (torch.randn(1, 1, 8, 8), torch.tensor([3]))
    with pytest.raises(landscape.LandscapeError, match="at least 2"):
        landscape.surface(LinBN(), one, x="0:1:2", bn_recalibrate=True, out="s.h5")
    (tmp_path / "mine.py").write_text(
        "import torch, torch.nn as nn\n"
        "class LinBN(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.lin, self.bn, self.fc = nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.bn(self.lin(x.flatten(1))))\n"
        "def model():\n    return LinBN()\n"
        "def data():\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    return (torch.randn(1, 1, 8, 8, generator=g), torch.tensor([3])), (torch.randn(4, 1, 8, 8), torch.zeros(4).long())\n")
    torch.save({"state_dict": LinBN().state_dict()}, tmp_path / "m.t7")   # the file's LinBN has the same entries
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = run_cli(plot_surface.main, ["--model", "mine.py:model", "--dataset", "mine.py:data", "--model_file", "m.t7",
                                     "--x=-1:1:3", "--bn_recalibrate"])
    err = capsys.readouterr().err
    assert rc == 2 and "at least 2" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- 5. direction-file names of unrelated folders
@pytest.mark.parametrize("file2,name", [
    ("/tmp/rv/copy2.t7", "m1_model_2.t7__tmp_rv_copy2.t7_weights.h5"),
    ("../rv/copy2.t7", "m1_model_2.t7_.._rv_copy2.t7_weights.h5"),
    ("m2/deeper/copy2.t7", "m1_model_2.t7_m2_deeper_copy2.t7_weights.h5"),
    ("m2/copy2.t7", "m1_model_2.t7_m2_copy2.t7_weights.h5"),          # the reference's own case, unchanged
])
def test_a_model_file2_in_an_unrelated_folder_is_named_without_folders_of_its_own(file2, name):
    from landscape.cli import plot_surface
    from landscape.compat import net_plotter as directions   # the reference's name_direction_file(args)
    cfg = plot_surface.parse_config(["--model_file", "m1/model_2.t7", "--model_file2", file2, "--x=0:1:3"])
    assert directions.name_direction_file(cfg) == name


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_interpolation_to_a_checkpoint_in_an_unrelated_folder_runs(mlp_ckpt, tmp_path, monkeypatch, where):
    import shutil
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    work = tmp_path / "work"
    (work / "m1").mkdir(parents=True)
    shutil.copy(mlp_ckpt, work / "m1" / "model_2.t7")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(mlp_ckpt, tmp_path / "elsewhere" / "copy2.t7")
    monkeypatch.chdir(work)
    file2 = str(tmp_path / "elsewhere" / "copy2.t7") if where == "absolute" else "../elsewhere/copy2.t7"
    rc = run_cli(plot_surface.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m1/model_2.t7",
                                     "--model_file2", file2, "--x=0:1:3"])
    assert rc == 0
    made = sorted(p.name for p in work.iterdir() if p.suffix == ".h5")
    assert len(made) == 2 and all(p.startswith("m1_model_2.t7_") for p in made)


# ----------------------------------------------------------------------------- 7. the viewer without plotly
class DigitsMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(self.fc1(x.flatten(1)).relu())


def mlp_and_data(seed=0):
    torch.manual_seed(seed)
    return DigitsMLP(), digits_batch(64, seed)


def without_plotly(monkeypatch):
    import sys
    for name in [m for m in sys.modules if m == "plotly" or m.startswith("plotly.")] + ["plotly"]:
        monkeypatch.setitem(sys.modules, name, None)   # every `import plotly...` now fails


def test_html_without_plotly_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from landscape.errors import run_cli
    from landscape.plots import plot_2d, viewer
    net, data = mlp_and_data()
    surf = str(tmp_path / "s.h5")
    landscape.surface(net, data, x="-1:1:2", y="-1:1:2", out=surf)
    before = sorted(p.name for p in tmp_path.iterdir())
    without_plotly(monkeypatch)
    assert run_cli(plot_2d.main, ["--surf_file", surf, "--html"]) == 2
    assert capsys.readouterr().err == "error: --html needs plotly: pip install 'loss-landscape[viewer]'\n"
    with pytest.raises(landscape.LandscapeError, match=r"pip install 'loss-landscape\[viewer\]'"):
        viewer.write_html(surf)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ----------------------------------------------------------------------------- 6. the reference's front doors and helper names
REFERENCE_NAMES = {   # module at the clone root: public helpers users' scripts call (hess_vec_prod's are the curvature's)
    "net_plotter": "get_weights set_weights set_states get_random_weights get_random_states get_diff_weights "
                   "get_diff_states normalize_direction normalize_directions_for_weights "
                   "normalize_directions_for_states ignore_biasbn create_target_direction create_random_direction "
                   "setup_direction name_direction_file load_directions",
    "h5_util": "write_list read_list",
    "projection": "tensorlist_to_tensor nplist_to_tensor npvec_to_tensorlist cal_angle project_1D project_2D "
                  "project_trajectory setup_PCA_directions",
    "model_loader": "load",
    "dataloader": "get_relative_path load_dataset",
    "evaluation": "eval_loss",
    "mpi4pytorch": "setup_MPI print_once reduce_max reduce_min barrier allreduce_max allreduce_min",
    "scheduler": "get_unplotted_indices split_inds get_job_indices",
}
REFERENCE_FACTORIES = {"resnet": "ResNet18 ResNet18_noshort ResNet34 ResNet34_noshort ResNet50 ResNet50_noshort "
                                 "ResNet101 ResNet101_noshort ResNet152 ResNet152_noshort ResNet20 ResNet20_noshort "
                                 "ResNet32_noshort ResNet44_noshort ResNet50_16_noshort ResNet56 ResNet56_noshort "
                                 "ResNet110 ResNet110_noshort WRN56_2 WRN56_2_noshort WRN56_4 WRN56_4_noshort "
                                 "WRN56_8 WRN56_8_noshort WRN110_2_noshort WRN110_4_noshort",
                       "vgg": "VGG9", "densenet": "DenseNet121"}


def test_import_evaluation_from_the_clone_root_is_the_package_module():
    import subprocess
    import sys
    from conftest import REPO
    code = "import evaluation, landscape.evaluation as e; assert evaluation is e; print(evaluation.eval_loss.__name__)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "eval_loss"


@pytest.mark.parametrize("module", sorted(REFERENCE_NAMES))
def test_the_reference_helper_names_resolve_through_the_front_doors(module):
    import importlib
    m = importlib.import_module(module)
    assert [n for n in REFERENCE_NAMES[module].split() if not callable(getattr(m, n, None))] == []


@pytest.mark.parametrize("family", sorted(REFERENCE_FACTORIES))
def test_the_reference_model_factories_build_the_reference_state_dicts(family):
    """Each factory's state_dict has the names, shapes and dtypes the reference's checkpoints have."""
    import importlib
    import json
    import os
    from conftest import REPO
    manifest = json.load(open(os.path.join(REPO, "tests", "data", "model_state_dicts.json")))
    module = importlib.import_module(f"models.{family}")
    for name in REFERENCE_FACTORIES[family].split()[:4]:   # the deep ones cost seconds each; the table covers all
        got = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in getattr(module, name)().state_dict().items()]
        assert got == manifest[name.lower()]["state_dict"], name
    assert {n.lower() for n in REFERENCE_FACTORIES[family].split()} <= set(manifest)
    import models
    assert all(models.ZOO[n.lower()] is getattr(module, n) for n in REFERENCE_FACTORIES[family].split())


def small_cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 10))
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def filter_normalised(d, w):
    """Li et al.'s filter normalisation of one random tensor, filter by filter, written out with loops."""
    out = d.clone()
    for i in range(d.shape[0]):
        out[i] = d[i] * (w[i].norm() / (d[i].norm() + 1e-10))
    return out


def test_net_plotter_random_directions_are_the_reference_draws_filter_normalised():
    import net_plotter
    net = small_cnn()
    torch.manual_seed(7)
    got = net_plotter.create_random_direction(net, "weights", "biasbn", "filter")
    torch.manual_seed(7)
    raw = [torch.randn(p.shape) for p in net.parameters()]
    want = [filter_normalised(d, p.data) if p.dim() > 1 else torch.zeros_like(d) for d, p in zip(raw, net.parameters())]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    torch.manual_seed(7)
    assert all(torch.equal(a, b) for a, b in zip(net_plotter.get_random_weights(net_plotter.get_weights(net)), raw))
    states = net.state_dict()
    torch.manual_seed(7)
    d = net_plotter.get_random_states(states)
    net_plotter.normalize_directions_for_states(d, states, "filter", "")   # entries of dim <= 1 become the states
    for (k, s), di in zip(states.items(), d):
        if s.is_floating_point() and s.dim() <= 1:
            assert torch.equal(di, s), k


def test_net_plotter_targets_and_set_weights_move_to_w_plus_x_dx_plus_y_dy():
    import net_plotter
    net, net2 = small_cnn(), small_cnn()
    with torch.no_grad():
        for p in net2.parameters():
            p.add_(1.0)
    w = [p.detach().clone() for p in net.parameters()]
    dx = net_plotter.create_target_direction(net, net2, "weights")
    assert all(torch.allclose(d, torch.ones_like(d)) for d in dx)
    assert all(torch.equal(a, b) for a, b in zip(dx, net_plotter.get_diff_weights(w, [p.data for p in net2.parameters()])))
    torch.manual_seed(1)
    dy = [torch.randn(p.shape) for p in net.parameters()]
    net_plotter.set_weights(net, w, [dx, dy], (0.5, -0.25))
    for p, w0, a, b in zip(net.parameters(), w, dx, dy):
        torch.testing.assert_close(p.data, w0 + 0.5 * a - 0.25 * b)
    net_plotter.set_weights(net, w, [dy], 2.0)
    for p, w0, b in zip(net.parameters(), w, dy):
        torch.testing.assert_close(p.data, w0 + 2.0 * b)
    net_plotter.set_weights(net, w)
    assert all(torch.equal(p.data, w0) for p, w0 in zip(net.parameters(), w))


def test_net_plotter_set_states_moves_float_entries_and_keeps_integers():
    import net_plotter
    net = small_cnn()
    states = copy.deepcopy(net.state_dict())
    torch.manual_seed(2)
    d = [torch.randn(v.shape) for v in states.values()]
    net_plotter.set_states(net, states, [d], 0.3)
    for (k, v), di, now in zip(states.items(), d, net.state_dict().values()):
        torch.testing.assert_close(now, v + 0.3 * di if v.is_floating_point() else v, msg=k)
    diff = net_plotter.get_diff_states(states, net.state_dict())
    for (k, v), di, dd in zip(states.items(), d, diff):
        torch.testing.assert_close(dd, 0.3 * di if v.is_floating_point() else torch.zeros(v.shape), msg=k)


def test_net_plotter_setup_direction_writes_the_reference_layout_once(tmp_path, capsys):
    import argparse
    import h5py
    import net_plotter
    net = small_cnn()
    args = argparse.Namespace(dir_type="weights", xignore="biasbn", xnorm="filter", y="-1:1:3", same_dir=True,
                              model_file2="", model_file3="", yignore="", ynorm="", dataset="digits", model="small")
    path = str(tmp_path / "d.h5")
    torch.manual_seed(3)
    net_plotter.setup_direction(args, path, net)
    torch.manual_seed(3)
    want = net_plotter.create_random_direction(net, "weights", "biasbn", "filter")
    with h5py.File(path, "r") as f:
        for g in ("xdirection", "ydirection"):
            assert len(f[g]) == len(want)
            for i, w in enumerate(want):
                assert torch.equal(torch.from_numpy(f[g][str(i)][()]), w)
    stamp = open(path, "rb").read()
    net_plotter.setup_direction(args, path, net)
    assert "already set up" in capsys.readouterr().out and open(path, "rb").read() == stamp


def test_projection_helpers_against_numpy():
    import numpy as np
    import projection
    g = torch.Generator().manual_seed(0)
    ts = [torch.randn(3, 2, generator=g), torch.randn(4, generator=g), torch.tensor(1.5)]
    flat = np.concatenate([t.numpy().ravel() for t in ts])
    assert np.array_equal(projection.tensorlist_to_tensor(ts).numpy(), flat)
    v = projection.nplist_to_tensor([t.numpy() for t in ts])
    assert v.dtype == torch.float64 and np.array_equal(v.numpy(), flat[:-1])   # the 0-d entry is left out
    back = projection.npvec_to_tensorlist(flat, [t.clone() for t in ts])
    assert all(torch.equal(a, b) for a, b in zip(back, ts))
    net = small_cnn()
    sd = net.state_dict()
    vec = np.arange(sum(t.numel() for t in sd.values()), dtype=np.float64)
    back = projection.npvec_to_tensorlist(vec, sd)
    assert [tuple(b.shape) for b in back] == [tuple(t.shape) for t in sd.values()]
    assert np.array_equal(np.concatenate([b.numpy().ravel() for b in back]), vec.astype(np.float32))
    w, d = np.random.RandomState(0).randn(2, 50)
    assert projection.project_1D(torch.from_numpy(w), torch.from_numpy(d)) == pytest.approx(w @ d / np.linalg.norm(d))
    assert projection.cal_angle(w, d) == pytest.approx(w @ d / np.linalg.norm(w) / np.linalg.norm(d))


def test_scheduler_get_job_indices_splits_the_missing_points_over_the_ranks():
    import numpy as np
    import scheduler

    class Comm:
        def __init__(self, rank, size):
            self.rank, self.size = rank, size

        def Get_rank(self):
            return self.rank

        def Get_size(self):
            return self.size
    vals = np.array([[-1.0, 0.5, -1.0], [-1.0, -1.0, 2.0]])            # (ny, nx): missing at flat 0, 2, 3, 4
    x, y = np.array([-1.0, 0.0, 1.0]), np.array([0.0, 1.0])
    inds, coords, counts = scheduler.get_job_indices(vals, x, y, None)
    assert inds.tolist() == [0, 2, 3, 4] and counts == [4]
    assert coords.tolist() == [[-1.0, 0.0], [1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]]
    got = [scheduler.get_job_indices(vals, x, y, Comm(r, 3)) for r in range(3)]
    assert [g[0].tolist() for g in got] == [[0, 2], [3], [4]] and got[0][2] == [2, 1, 1]


def test_mpi4pytorch_helpers_without_mpi(capsys):
    import numpy as np
    import mpi4pytorch
    a = np.array([1.0, -2.0])
    assert mpi4pytorch.reduce_max(None, a) is a and mpi4pytorch.allreduce_min(None, a) is a
    mpi4pytorch.print_once(None, "a", 1, "b")
    assert capsys.readouterr().out == "a1b\n"


def test_mpi4pytorch_helpers_reduce_over_two_ranks(tmp_path):
    from conftest import REPO, run_script
    script = tmp_path / "reduce.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "import numpy as np, mpi4pytorch\n"
        "comm = mpi4pytorch.setup_MPI(); r = comm.Get_rank()\n"
        "a = np.array([r, -r, 10 * r], dtype=float)\n"
        "mx, mn = mpi4pytorch.reduce_max(comm, a), mpi4pytorch.reduce_min(comm, a)\n"
        "amx, amn = mpi4pytorch.allreduce_max(comm, a), mpi4pytorch.allreduce_min(comm, a)\n"
        "mpi4pytorch.print_once(comm, 'size=', comm.Get_size())\n"
        "if r == 0: print('root', mx.tolist(), mn.tolist())\n"
        "print('all', r, amx.tolist(), amn.tolist())\n" % REPO)
    r = run_script(str(script), [], cwd=str(tmp_path), mpi_ranks=2, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines.count("size=2") == 1
    assert "root [1.0, 0.0, 10.0] [0.0, -1.0, 0.0]" in lines
    assert sorted(line for line in lines if line.startswith("all")) == [
        "all 0 [1.0, 0.0, 10.0] [0.0, -1.0, 0.0]", "all 1 [1.0, 0.0, 10.0] [0.0, -1.0, 0.0]"]


# ----------------------------------------------------------------------------- 2. the user's code is fingerprinted for resume
def test_code_fingerprints_tell_settings_code_and_closures_apart():
    from landscape.io.provenance import code_sha256
    assert code_sha256(nn.CrossEntropyLoss()) == code_sha256(nn.CrossEntropyLoss())
    assert code_sha256(nn.CrossEntropyLoss()) != code_sha256(nn.CrossEntropyLoss(label_smoothing=0.5))
    assert code_sha256(nn.CrossEntropyLoss(weight=torch.ones(10))) != code_sha256(nn.CrossEntropyLoss(weight=torch.arange(10.)))
    one = lambda o, t: F.cross_entropy(o, t)                                        # noqa: E731
    same = lambda o, t: F.cross_entropy(o, t)                                       # noqa: E731
    two = lambda o, t: 2 * F.cross_entropy(o, t)                                    # noqa: E731
    assert code_sha256(one) == code_sha256(same) != code_sha256(two)

    def scaled(k):
        return lambda o, t: k * F.cross_entropy(o, t)
    assert code_sha256(scaled(1.0)) == code_sha256(scaled(1.0)) != code_sha256(scaled(3.0))
    assert code_sha256({"m": one}) != code_sha256({"m": two})


def resume(loss=None, metrics=None, out="s.h5", **kw):
    net, data = mlp_and_data()
    return landscape.surface(net, data, loss=loss, metrics=metrics, x="-1:1:3", out=out, **kw)


@pytest.mark.parametrize("first,second", [
    (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.5)),
    (lambda o, t: F.cross_entropy(o, t), lambda o, t: 2 * F.cross_entropy(o, t)),
], ids=["label_smoothing", "lambda"])
def test_resume_with_another_loss_callable_is_refused_naming_the_loss(in_tmp, first, second):
    a = resume(first)
    b = resume(copy.deepcopy(first))                  # the same loss again: resumes, nothing recomputed
    assert b.stats["points"] == 0 and (b.values["train_loss"] == a.values["train_loss"]).all()
    before = open("s.h5", "rb").read()
    with pytest.raises(landscape.LandscapeError, match="another loss"):
        resume(second)
    assert open("s.h5", "rb").read() == before


def test_resume_with_another_metric_function_is_refused_naming_the_metrics(in_tmp):
    resume(metrics={"m": lambda o, t: o.mean()})
    resume(metrics={"m": lambda o, t: o.mean()})      # the same code
    with pytest.raises(landscape.LandscapeError, match="another metrics"):
        resume(metrics={"m": lambda o, t: 10 * o.mean()})


def test_a_hessian_direction_file_refuses_another_loss(in_tmp):
    net, data = mlp_and_data()
    kw = dict(x="-1:1:2", directions="hessian", dir_file="d.h5")
    landscape.surface(net, data, loss=nn.CrossEntropyLoss(), out="a.h5", **kw)
    with pytest.raises(landscape.LandscapeError, match="direction file 'd.h5'.*another loss"):
        landscape.surface(net, data, loss=nn.CrossEntropyLoss(label_smoothing=0.5), out="b.h5", **kw)


LOSS_FILE = "import torch.nn as nn\ndef loss():\n    return nn.CrossEntropyLoss(label_smoothing={})\n"


def test_cli_resume_with_an_edited_loss_file_is_refused_naming_the_loss(mlp_ckpt, in_tmp, capsys):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    (in_tmp / "myloss.py").write_text(LOSS_FILE.format(0.0))
    argv = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:3",
            "--loss_name", "myloss.py:loss", "--surf_file", "s.h5", "--dir_file", "", "--xnorm", "filter"]
    assert run_cli(plot_surface.main, argv) == 0
    assert run_cli(plot_surface.main, argv) == 0                       # unchanged: resumes
    (in_tmp / "myloss.py").write_text(LOSS_FILE.format(0.5))
    capsys.readouterr()
    assert run_cli(plot_surface.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert "another loss" in err and len(err.splitlines()) == 1


MODEL_FILE = ("import torch, torch.nn as nn\n"
              "def model():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
              "def data():\n"
              "    g = torch.Generator().manual_seed(0)\n"
              "    return (torch.randn(32, 1, 8, 8, generator=g), torch.randint(0, 10, (32,), generator=g)), \\\n"
              "           (torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))\n")


@pytest.mark.parametrize("edited,what", [("model", "--model code"), ("dataset", "--dataset code")])
def test_cli_resume_with_an_edited_model_or_dataset_file_is_refused(in_tmp, capsys, edited, what):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    for name in ("model", "dataset"):
        (in_tmp / f"{name}.py").write_text(MODEL_FILE)
    torch.manual_seed(0)
    torch.save({"state_dict": nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).state_dict()}, in_tmp / "m.t7")
    argv = ["--model", "model.py:model", "--dataset", "dataset.py:data", "--model_file", "m.t7", "--x=-1:1:3",
            "--xnorm", "filter", "--surf_file", "s.h5"]
    assert run_cli(plot_surface.main, argv) == 0
    (in_tmp / f"{edited}.py").write_text(MODEL_FILE.replace("Linear(64, 10))", "Linear(64, 10)).double().float()"))
    capsys.readouterr()
    assert run_cli(plot_surface.main, argv) == 2
    assert f"another {what}" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 3. every API argument is checked before anything is written
def _mlp():
    return mlp_and_data()[0]


def _data():
    return mlp_and_data()[1]


def _dirs(n=1, fill=None):
    g = torch.Generator().manual_seed(1)
    return [[torch.full_like(p, fill) if fill is not None else torch.randn(p.shape, generator=g)
             for p in _mlp().parameters()] for _ in range(n)]


S = dict(x="-1:1:3", out="s.h5")
BAD_CALLS = {
    "surface": [
        dict(x=None, out="s.h5"), dict(x=3, out="s.h5"), dict(S, y=5), dict(S, seed=2 ** 64), dict(S, seed=-1),
        dict(S, device="meta"), dict(S, directions=_dirs(2)), dict(S, y="-1:1:3", directions=_dirs(3)),
        dict(S, directions=_dirs(1, float("nan"))), dict(S, directions=_dirs(1, float("inf"))),
        dict(S, test_data=(torch.randn(10, 3), torch.zeros(10).long())), dict(S, model3=DigitsMLP()),
        dict(x="-1:1:3", out=""), dict(S, regenerate=True, save_directions="s.h5"), dict(S, dir_file="s.h5"),
        dict(S, foo=1), dict(S, bn_recalibrate=True), dict(S, model2=nn.Flatten()), dict(S, loss="nll2"),
        dict(S, metrics={"loss": lambda o, t: o.mean()}), dict(S, directions="filterz"), dict(S, params="^zz"),
    ],
    "interpolation": [dict(model2=None, x="0:1:3", out="s.h5"), dict(model2="m", x="0:1:3", out="s.h5"),
                      dict(model2=True, x="0:1:3", out="s.h5", foo=1), dict(model2=True, x=None, out="s.h5")],
    "path": [dict(x="0:1:3", out="s.h5", y="0:1:3"), dict(x="0:1:3", out="s.h5", seed=3), dict(x=None, out="s.h5"),
             dict(x="-1:1:3", out="s.h5"), dict(x="0:1:3", out="s.h5", device="meta"), dict(x="0:1:3", out="s")],
    "eigen_surface": [dict(S, tol=0), dict(S, precision="bf16"), dict(S, seed=2 ** 64), dict(x=None, out="s.h5"),
                      dict(S, foo=1), dict(S, device="meta"), dict(S, directions=_dirs(2))],
    "hessian": [dict(trace_rel_se=-1), dict(trace_rel_se="x"), dict(trace_rel_se=float("nan")), dict(seed=2 ** 64),
                dict(device="meta"), dict(top_k=0), dict(foo=1)],
    "pca": [dict(models=[DigitsMLP(), DigitsMLP(), ConvBN()]), dict(models=[DigitsMLP(), DigitsMLP()]),
            dict(models=[DigitsMLP()] * 3, foo=1), dict(models=[nn.Flatten()] * 3)],
}


def call_api(function, kwargs):
    kw = dict(kwargs)
    if function == "pca":
        return landscape.pca(kw.pop("models"), **kw)
    if function == "path":
        return landscape.path([_mlp(), DigitsMLP()], _data(), **kw)
    if function == "interpolation":
        model2 = kw.pop("model2")
        return landscape.interpolation(_mlp(), DigitsMLP() if model2 is True else model2, _data(), **kw)
    return getattr(landscape, function)(_mlp(), _data(), **kw)


@pytest.mark.parametrize("function,kwargs", [(f, kw) for f, calls in BAD_CALLS.items() for kw in calls],
                         ids=[f"{f}-{i}" for f, calls in BAD_CALLS.items() for i in range(len(calls))])
def test_every_api_function_refuses_bad_arguments_in_one_line_writing_nothing(in_tmp, function, kwargs):
    with pytest.raises(landscape.LandscapeError) as e:
        call_api(function, kwargs)
    assert "\n" not in str(e.value).strip()
    assert list(in_tmp.iterdir()) == []


def test_unknown_keyword_arguments_are_named():
    with pytest.raises(landscape.LandscapeError, match=r"path\(\): got an unexpected keyword argument 'seed'"):
        landscape.path([_mlp(), DigitsMLP()], _data(), seed=3)
    with pytest.raises(landscape.LandscapeError, match=r"interpolation\(\): got an unexpected keyword argument 'foo'"):
        landscape.interpolation(_mlp(), DigitsMLP(), _data(), foo=3)


def test_cli_refuses_one_file_for_the_surface_and_the_directions(mlp_ckpt, in_tmp, capsys):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    base = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:3", "--xnorm", "filter"]
    for extra in (["--regenerate_directions", "--save_directions", "x.h5", "--surf_file", "x.h5"],
                  ["--save_directions", "x.h5", "--surf_file", "x.h5"], ["--dir_file", "x.h5", "--surf_file", "x.h5"]):
        assert run_cli(plot_surface.main, base + extra) == 2
        err = capsys.readouterr().err
        assert "same file 'x.h5'" in err and len(err.strip().splitlines()) == 1
        assert list(in_tmp.iterdir()) == []


def test_a_list_of_x_is_coordinates_and_a_tuple_is_a_range():
    net, data = mlp_and_data()
    assert landscape.surface(net, data, x=[-1, 1, 3]).x.tolist() == [-1.0, 1.0, 3.0]
    assert landscape.surface(net, data, x=(-1, 1, 3)).x.tolist() == [-1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- 8. versions, packaging, arithmetic
def test_the_hessian_json_records_the_tool_version(mlp_ckpt, in_tmp):
    import json
    import shutil
    from landscape.cli import plot_hessian_eigen
    from landscape.errors import run_cli
    shutil.copy(mlp_ckpt, in_tmp / "m.t7")
    assert run_cli(plot_hessian_eigen.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m.t7",
                                             "--at_center", "--trace_samples", "2", "--max_iter", "20"]) == 0
    record = json.load(open(in_tmp / "m.t7_hessian.json"))
    assert record["landscape_version"] == landscape.__version__


@pytest.fixture
def tf32_switches():
    """PyTorch's TF32 switches, set by the test and restored after it (monkeypatch cannot: they are properties)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True   # PyTorch's defaults
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_the_arithmetic_follows_precision_and_device_type(tf32_switches):
    from landscape.evaluation import arithmetic_name
    assert [arithmetic_name(p, "cpu") for p in ("default", "fp32", "tf32", "bf16")] == \
        ["fp32", "fp32", "fp32", "bf16 autocast"]
    assert [arithmetic_name(p, "cuda") for p in ("default", "fp32", "tf32", "bf16")] == \
        ["tf32 convolutions", "fp32", "tf32", "bf16 autocast"]
    torch.backends.cuda.matmul.allow_tf32 = True
    assert arithmetic_name("default", torch.device("cuda", 1)) == "tf32"


def test_a_surface_begun_in_one_arithmetic_refuses_to_resume_in_another(in_tmp, monkeypatch, tf32_switches):
    """--precision default begun on a CPU (fp32), resumed where it means TF32 convolutions (a CUDA device)."""
    from landscape import evaluation
    first = resume()
    assert first.attrs["arithmetic"] == "fp32"
    real = evaluation.arithmetic_name
    monkeypatch.setattr(evaluation, "arithmetic_name", lambda precision, device: real(precision, "cuda"))
    with pytest.raises(landscape.LandscapeError, match=r"another arithmetic.*\(fp32 vs tf32 convolutions\)"):
        resume()

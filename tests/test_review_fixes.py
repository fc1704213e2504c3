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
    from landscape import directions
    from landscape.cli import plot_surface
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

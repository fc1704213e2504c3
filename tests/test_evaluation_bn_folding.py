"""BN folding (landscape/evaluation/fast_model.py): weight-normalised convolutions are never folded and
evaluate as the model; a plain conv before BatchNorm still folds; the folded graph is checked against the model;
a Linear before BatchNorm folds only in the 2D case (B, F), and every case evaluates as the unfolded model."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import landscape
from landscape.evaluation import fast_model
from helpers import ConvBN, digits_batch, loss_of, moved


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


class LinearBN3d(nn.Module):
    """Linear over the last dimension of (B, C, L), then BatchNorm1d over the C channels."""

    def __init__(self, channels, features, hidden):
        super().__init__()
        self.lin = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(channels)
        self.head = nn.Linear(channels * hidden, 3)

    def forward(self, x):
        return self.head(self.bn(self.lin(x)).relu().flatten(1))


class LinearBN4d(nn.Module):
    """Linear over the last dimension of (B, C, H, W), then BatchNorm2d over the C channels."""

    def __init__(self, channels, width):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels * 2 * width, 3)

    def forward(self, x):
        return self.head(self.bn(self.lin(x)).relu().flatten(1))


class LinearBN2d(nn.Module):
    """The foldable case: Linear on (B, F), BatchNorm1d over those F features."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 5)
        self.bn = nn.BatchNorm1d(5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(self.bn(self.lin(x)).relu())


def _randomized_bn(net):
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("case", ["bn1d_3d_same_size", "bn1d_3d_other_size", "bn2d_4d", "bn1d_2d"])
def test_linear_then_batchnorm_equals_the_unfolded_model(case):
    torch.manual_seed(0)
    net, x = {"bn1d_3d_same_size": (LinearBN3d(4, 6, 4), torch.randn(64, 4, 6)),
              "bn1d_3d_other_size": (LinearBN3d(3, 6, 4), torch.randn(64, 3, 6)),
              "bn2d_4d": (LinearBN4d(3, 4), torch.randn(64, 3, 2, 4)),
              "bn1d_2d": (LinearBN2d(), torch.randn(64, 6))}[case]
    net = _randomized_bn(net)
    y = torch.randint(0, 3, (64,))
    for fold_bn in (True, False):
        res = landscape.surface(net, (x, y), x="-0.5:0.5:3", directions="filter", ignore="biasbn", device="cpu",
                                fold_bn=fold_bn)
        assert res["train_loss"][1] == pytest.approx(loss_of(net, x, y), rel=1e-5)
        d = [torch.zeros(p.shape) for p in net.parameters()]
        d[0] = torch.ones_like(d[0]) * 0.1            # the Linear's weight moves: its fold must follow
        res = landscape.surface(net, (x, y), x="0:1:2", directions=[d], device="cpu", fold_bn=fold_bn)
        assert res["train_loss"][1] == pytest.approx(loss_of(moved(net, [d], (1.0,)), x, y), rel=1e-5)


def test_only_the_2d_linear_is_folded():
    from landscape.evaluation import fast_model
    folded = fast_model.FastModel(_randomized_bn(LinearBN2d()), sample=((torch.randn(2, 6),), {}))
    kept = fast_model.FastModel(_randomized_bn(LinearBN3d(4, 6, 4)), sample=((torch.randn(2, 4, 6),), {}))
    blind = fast_model.FastModel(_randomized_bn(LinearBN2d()))          # without a sample: not folded
    assert len(folded.pairs) == 1 and kept.pairs == [] and blind.pairs == []

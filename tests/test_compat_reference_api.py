"""The reference's Python helpers that notebooks and scripts call keep working."""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dataloader
from landscape import evaluation
import model_loader
import net_plotter
import scheduler


def whole_set(loader):
    """All of a DataLoader's batches as one (inputs, labels) pair."""
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def float64_loss_and_acc(net, x, y, criterion):
    """Independent reference: one float64 forward pass over the whole set, then the loss in closed form."""
    net64 = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        out = net64(x.double())  # (N, 10)
    if isinstance(criterion, nn.CrossEntropyLoss):
        loss = F.cross_entropy(out, y)
    else:  # the reference's MSE: mean over samples and classes of (softmax(outputs, 1) - onehot(targets))^2
        loss = ((F.softmax(out, 1) - F.one_hot(y, out.shape[1]).double()) ** 2).mean()
    return loss.item(), 100.0 * (out.argmax(1) == y).double().mean().item()


@pytest.mark.parametrize("criterion", [nn.CrossEntropyLoss(), nn.MSELoss()], ids=["crossentropy", "mse"])
def test_eval_loss_on_a_loader_equals_a_float64_pass_over_the_whole_set(cnn_ckpt, criterion):
    net = model_loader.load("digits", "digits_cnn", cnn_ckpt)
    train, _ = dataloader.load_dataset("digits", batch_size=100)  # 1437 images: the last batch has 37
    x, y = whole_set(train)
    assert len(y) % 100 != 0  # so the unequal last batch must be weighted by its size
    ref_loss, ref_acc = float64_loss_and_acc(net, x, y, criterion)
    loss, acc = evaluation.eval_loss(net, criterion, train)
    assert loss == pytest.approx(ref_loss, rel=1e-5)  # float32 sums against float64
    assert acc == pytest.approx(ref_acc, abs=1e-9)


def test_get_weights_are_the_live_parameters(cnn_ckpt):
    net = model_loader.load("digits", "digits_cnn", cnn_ckpt)
    w = net_plotter.get_weights(net)
    assert len(w) == len(list(net.parameters()))
    w[0].zero_()
    assert net.conv1.weight.abs().sum() == 0


def test_get_unplotted_indices_and_split_inds():
    vals = np.array([[0.5, -1.0, 0.0], [-1.0, np.nan, 2.0]])  # (ny, nx): only the -1 cells are missing
    x, y = np.array([-1.0, 0.0, 1.0]), np.array([0.0, 1.0])
    inds, coords = scheduler.get_unplotted_indices(vals, x, y)
    assert inds.tolist() == [1, 3] and coords.tolist() == [[0.0, 0.0], [-1.0, 1.0]]
    inds, coords = scheduler.get_unplotted_indices(np.array([1.0, -1.0]), np.array([3.0, 4.0]))
    assert inds.tolist() == [1] and coords.tolist() == [4.0]
    assert [list(r) for r in scheduler.split_inds(9, 4)] == [[0, 1, 2], [3, 4], [5, 6], [7, 8]]


def test_chunk_sizes_shrink_near_the_end_and_respect_passes():
    assert scheduler.chunk_size(want=1000, remaining=100, nproc=2, multiple=1) == 25
    assert scheduler.chunk_size(want=3, remaining=100, nproc=2, multiple=8) == 8
    assert scheduler.chunk_size(want=50, remaining=5, nproc=4, multiple=8) == 5

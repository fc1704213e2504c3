"""The reference's Python helpers that notebooks and scripts call keep working."""
import numpy as np
import pytest
import torch.nn as nn

import dataloader
import evaluation
import model_loader
import net_plotter
import scheduler


def test_eval_loss_on_a_loader_equals_evaluate(cnn_ckpt):
    net = model_loader.load("digits", "digits_cnn", cnn_ckpt)
    train, _ = dataloader.load_dataset("digits", batch_size=100)
    d = dataloader.load_tensors("digits")
    for criterion, name in ((nn.CrossEntropyLoss(), "crossentropy"), (nn.MSELoss(), "mse")):
        loss, acc = evaluation.eval_loss(net, criterion, train)
        ref_loss, ref_acc = evaluation.evaluate(net, d.train_x, d.train_y, name, 1437)
        assert loss == pytest.approx(ref_loss, rel=1e-5) and acc == pytest.approx(ref_acc)


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

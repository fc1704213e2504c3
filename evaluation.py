"""Loss and accuracy of a model over a whole in-memory set, with the reference's semantics.

- eval mode, so BatchNorm uses its running statistics;
- the loss is the mean over the whole set: cross-entropy, or (`mse`) the mean squared error between
  softmax(outputs, dim=1) and one-hot targets over the model's output classes;
- accuracy is in percent.

Sums are accumulated on the device and read back once per set, so a GPU is never stalled per batch.
"""
import contextlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_NAMES = ("crossentropy", "mse")
PRECISIONS = ("default", "fp32", "tf32", "bf16")


def per_point_sums(outputs, targets, loss_name):
    """outputs (K, B, C): K points (models) on one batch -> summed losses (K,), correct counts (K,).

    The one definition of the loss: cross-entropy, or (mse) the squared error between softmax over
    the classes and one-hot targets, averaged over the C classes as nn.MSELoss does.
    """
    k, b, c = outputs.shape
    outputs = outputs.float()
    if loss_name == "crossentropy":
        flat = F.cross_entropy(outputs.reshape(k * b, c), targets.repeat(k), reduction="none")
        loss = flat.view(k, b).sum(1)
    else:
        probs = F.softmax(outputs, dim=2)
        onehot = F.one_hot(targets, c).to(probs.dtype).unsqueeze(0)
        loss = (probs - onehot).pow(2).sum((1, 2)) / c
    correct = (outputs.argmax(dim=2) == targets.unsqueeze(0)).sum(1)
    return loss, correct


def batch_loss_sum(outputs, targets, loss_name):
    """(summed loss, number correct) for one batch; outputs (B, C) logits, targets (B,)."""
    loss, correct = per_point_sums(outputs.unsqueeze(0), targets, loss_name)
    return loss[0], correct[0]


def set_precision(precision, device):
    """Apply `--precision` globally; returns the autocast context to wrap forward passes in.

    default: PyTorch's own defaults (TF32 convolutions on GPUs that have it, as the reference ran);
    fp32: TF32 off everywhere; tf32: TF32 on everywhere; bf16: autocast to bfloat16.
    """
    if precision not in PRECISIONS:
        raise ValueError(precision)
    if precision in ("fp32", "tf32"):
        on = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
    if precision == "bf16":
        return lambda: torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def evaluate(net, x, y, loss_name="crossentropy", batch_size=128, autocast=contextlib.nullcontext):
    """Mean loss and accuracy (%) of `net` on (x, y), which already live on the model's device."""
    net.eval()
    n = len(y)
    total_loss = torch.zeros((), dtype=torch.float64, device=x.device)
    total_correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.inference_mode(), autocast():
        for start in range(0, n, batch_size):
            loss, correct = batch_loss_sum(net(x[start:start + batch_size]), y[start:start + batch_size], loss_name)
            total_loss += loss
            total_correct += correct
    return total_loss.item() / n, 100.0 * total_correct.item() / n


def eval_loss(net, criterion, loader, use_cuda=False):
    """The reference's signature, for notebooks: loss and accuracy over a DataLoader."""
    loss_name = "mse" if isinstance(criterion, nn.MSELoss) else "crossentropy"
    device = "cuda" if use_cuda else "cpu"
    net.to(device).eval()
    total_loss, correct, total = 0.0, 0, 0
    with torch.inference_mode():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            loss, c = batch_loss_sum(net(inputs), targets, loss_name)
            total_loss += loss.item()
            correct += c.item()
            total += len(targets)
    return total_loss / total, 100.0 * correct / total


# ----------------------------------------------------------------------------- many grid points
def evaluate_stacked(net, params, x, y, loss_name="crossentropy", batch_size=128, autocast=contextlib.nullcontext):
    """Loss and accuracy for K points at once: `params` maps names to (K, *shape) tensors.

    One pass over the data evaluates all K models with torch.func.vmap(functional_call), so the
    per-point overhead (kernel launches, Python) is paid once per batch instead of K times.
    """
    k = next(iter(params.values())).shape[0]
    model_fn = torch.func.vmap(lambda p, xb: torch.func.functional_call(net, p, (xb,)), in_dims=(0, None))
    total_loss = torch.zeros(k, dtype=torch.float64, device=x.device)
    total_correct = torch.zeros(k, dtype=torch.int64, device=x.device)
    net.eval()
    with torch.inference_mode(), autocast():
        for start in range(0, len(y), batch_size):
            loss, correct = per_point_sums(model_fn(params, x[start:start + batch_size]),
                                           y[start:start + batch_size], loss_name)
            total_loss += loss
            total_correct += correct
    n = len(y)
    return (total_loss / n).cpu().numpy(), (100.0 * total_correct.double() / n).cpu().numpy()


class GridEvaluator:
    """values(coords) -> (len(coords), 2 * len(sets)): [loss, acc] for each (x, y) data set.

    `setter` is a net_plotter.PointSetter that moves `net`; `runner` is what runs the forward pass
    (the net itself, or a fast_model.FastModel whose refresh() follows each move). With
    points_per_pass K > 1, K points share each pass (through `net`, vmapped).
    """

    def __init__(self, net, setter, sets, loss_name, batch_size, autocast, points_per_pass=1, runner=None):
        self.net, self.setter, self.sets = net, setter, sets
        self.runner = runner if runner is not None else net
        self.loss_name, self.batch_size, self.autocast = loss_name, batch_size, autocast
        self.k = points_per_pass

    def __call__(self, coords):
        coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
        out = np.empty((len(coords), 2 * len(self.sets)))
        if self.k == 1:
            for i, c in enumerate(coords):
                self.setter.set(c)
                if hasattr(self.runner, "refresh"):
                    self.runner.refresh()
                for s, (x, y) in enumerate(self.sets):
                    out[i, 2 * s:2 * s + 2] = evaluate(self.runner, x, y, self.loss_name, self.batch_size,
                                                       self.autocast)
            return out
        self.setter.restore()  # the stacked path leaves the model itself untouched
        for start in range(0, len(coords), self.k):
            params = self.setter.stacked(coords[start:start + self.k])
            for s, (x, y) in enumerate(self.sets):
                loss, acc = evaluate_stacked(self.net, params, x, y, self.loss_name, self.batch_size, self.autocast)
                out[start:start + len(loss), 2 * s] = loss
                out[start:start + len(loss), 2 * s + 1] = acc
        return out

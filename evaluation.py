"""Loss and accuracy of a model over a whole in-memory set, with the reference's semantics.

- eval mode, so BatchNorm uses its running statistics;
- the loss is the mean over the whole set: cross-entropy, or (`mse`) the mean squared error between
  softmax(outputs, dim=1) and one-hot targets over the model's output classes;
- accuracy is in percent.

Sums are accumulated on the device and read back once per set, so a GPU is never stalled per batch.
"""
import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

LOSS_NAMES = ("crossentropy", "mse")
PRECISIONS = ("default", "fp32", "tf32", "bf16")


def batch_loss_sum(outputs, targets, loss_name):
    """(summed loss, number correct) for one batch; outputs (B, C) logits, targets (B,)."""
    outputs = outputs.float()
    if loss_name == "crossentropy":
        loss = F.cross_entropy(outputs, targets, reduction="sum")
    else:  # mse on one-hot targets, averaged over the C classes as nn.MSELoss does
        probs = F.softmax(outputs, dim=1)
        onehot = F.one_hot(targets, outputs.shape[1]).to(probs.dtype)
        loss = (probs - onehot).pow(2).sum() / outputs.shape[1]
    correct = (outputs.argmax(dim=1) == targets).sum()
    return loss, correct


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

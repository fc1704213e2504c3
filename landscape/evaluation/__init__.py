"""Loss, accuracy and metrics of a model over whole in-memory sets, at one or many grid points.

What a point computes (a `Statistics`):
- the loss: any `criterion(outputs, targets) -> mean over the batch` (every torch.nn loss
  qualifies). The set's value is the batch means weighted by batch size, as the reference averages.
  The reference's two names keep their meaning: `crossentropy`, and `mse`, the mean squared error
  between softmax(outputs) over the classes and one-hot targets (averaged over the classes, as
  nn.MSELoss does);
- the accuracy (%), only where it is defined: class scores and integer labels, with the classes on
  the last dimension (outputs (B, C) or (B, T, C) for targets (B,) or (B, T)) or on dimension 1
  (outputs (B, C, H, W) for targets (B, H, W)). Elsewhere there is no accuracy map at all;
- any further metrics {name: fn(outputs, targets) -> mean}, weighted like the loss.
Models may return a tensor, a tuple or dict (the first entry, or 'logits'), or an object with
`.logits` (HuggingFace). Inputs may be a tensor, a tuple of tensors (model(*inputs)) or a dict of
tensors (model(**inputs)); the first dimension is the batch.

Sums are accumulated on the device and read back once per set, so a GPU is never stalled per batch.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import subprocess
import time
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from landscape import user_code
from landscape.errors import LandscapeError
from landscape.evaluation import batches, fast_model
from landscape.io import provenance
from landscape.evaluation.batches import DeviceSet, batch_count, on_device, take, to_device  # noqa: F401

if TYPE_CHECKING:
    import numpy.typing as npt

    from landscape.directions import PointSetter
    from landscape.evaluation.batches import Batch, Device, HostSet, Inputs, StreamedSet
    from landscape.parallel.dist import PointGroup
    from landscape.spec import BatchSize

    Criterion = Callable[[torch.Tensor, torch.Tensor], Any]   # criterion(outputs, targets) -> batch mean
    Metric = Callable[[torch.Tensor, torch.Tensor], Any]      # fn(outputs, targets) -> batch mean
    Runner = Callable[..., Any]          # the model, a fast_model.FastModel or a DataParallel: runner(*args)

LOSS_NAMES = ("crossentropy", "mse")
PRECISIONS = ("default", "fp32", "tf32", "bf16")
METRIC_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED_METRICS = ("loss", "acc", "err")


# ----------------------------------------------------------------------------- the reference's losses
class SoftmaxMSE(nn.Module):
    """The reference's `mse`: mean over batch and classes of (softmax(outputs, 1) - onehot(targets))^2."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(outputs.float(), dim=1)
        return (probs - F.one_hot(targets, outputs.shape[1]).to(probs.dtype)).pow(2).mean()


def per_point_sums(outputs: torch.Tensor, targets: torch.Tensor,
                   loss_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """outputs (K, B, C): K points on one batch -> summed losses (K,), correct counts (K,).

    The reference's two losses in one pass over K points: cross-entropy, or (mse) the squared
    error between softmax over the classes and one-hot targets, averaged over the C classes.
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


def batch_loss_sum(outputs: torch.Tensor, targets: torch.Tensor,
                   loss_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, number correct) for one batch; outputs (B, C) logits, targets (B,)."""
    loss, correct = per_point_sums(outputs.unsqueeze(0), targets, loss_name)
    return loss[0], correct[0]


def resolve_loss(spec: Union[None, str, Criterion]) -> tuple[Criterion, str]:
    """(criterion, name) for a loss given as None, a name, `file.py:fn` (fn() returns it) or a callable."""
    if spec is None or spec == "crossentropy":
        return nn.CrossEntropyLoss(), "crossentropy"
    if spec == "mse":
        return SoftmaxMSE(), "mse"
    if isinstance(spec, str):
        if not user_code.is_user_spec(spec):
            raise LandscapeError(f"loss '{spec}' must be crossentropy, mse, or path/to/file.py:function")
        criterion = call_user(user_code.load_callable(spec, "loss"), f"loss function '{spec}'")
        if not callable(criterion):
            raise LandscapeError(f"loss function '{spec}' must return a criterion (a callable), "
                                 f"not {type(criterion).__name__}")
        return criterion, spec
    if callable(spec):
        return spec, describe_callable(spec)
    raise LandscapeError(f"loss must be a name or a callable criterion(outputs, targets), not {type(spec).__name__}")


def resolve_metrics(spec: Union[None, str, dict[str, Metric]]) -> dict[str, Metric]:
    """{name: fn} from None, a dict, or `file.py:fn` whose fn() returns such a dict."""
    if spec is None or spec == "":
        return {}
    if isinstance(spec, str):
        spec_fn = user_code.load_callable(spec, "metrics")
        metrics = call_user(spec_fn, f"metrics function '{spec}'")
        where = f"metrics function '{spec}'"
    else:
        metrics, where = spec, "metrics"
    if not isinstance(metrics, dict):
        raise LandscapeError(f"{where} must give a dict {{name: fn(outputs, targets)}}, not {type(metrics).__name__}")
    for name, fn in metrics.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name) or name in RESERVED_METRICS:
            raise LandscapeError(f"{where}: metric name {name!r} must be a word of letters, digits and _ "
                                 f"(not {', '.join(RESERVED_METRICS)})")
        if not callable(fn):
            raise LandscapeError(f"{where}: metric '{name}' is {type(fn).__name__}, not a function")
    return dict(metrics)


def code_inputs(loss: Union[None, str, Criterion] = None,
                metrics: Union[None, str, dict[str, Metric]] = None) -> dict[str, str]:
    """Fingerprints of the user's own loss and metrics code (keys of io/provenance.py's tables), so a
    resume with other code is refused: a `file.py:fn` spec by its file's bytes, a callable by
    provenance.code_sha256 (a criterion's class and settings, a function's code and closure). The
    built-in names record nothing beyond their name."""
    out = {}
    for key, spec in (("loss_sha256", loss), ("metrics_sha256", metrics)):
        if spec is None or (isinstance(spec, str) and (spec in LOSS_NAMES or spec == "")):
            continue
        out[key] = user_code.spec_sha256(spec) if isinstance(spec, str) else provenance.code_sha256(spec)
    return {k: v for k, v in out.items() if v}


call_user = user_code.call_user      # (the user's code failing: one line naming it)
first_line = user_code.first_line


def describe_callable(fn: Callable[..., Any]) -> str:
    """A stable, readable name for a user's criterion (recorded in files, compared on resume)."""
    if isinstance(fn, nn.Module):
        return repr(fn).replace("\n", " ")
    return getattr(fn, "__qualname__", None) or type(fn).__name__


# ----------------------------------------------------------------------------- inputs and outputs
def call_args(inputs: Inputs) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) to call a model with: x, *x or **x."""
    if isinstance(inputs, dict):
        return (), inputs
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    return (inputs,), {}


def forward(model: Runner, inputs: Inputs) -> torch.Tensor:
    """model(x), model(*x) or model(**x), and the tensor of scores in what it returns."""
    args, kwargs = call_args(inputs)
    return unwrap(model(*args, **kwargs))


def unwrap(out: Any) -> torch.Tensor:
    """The scores in a model's output: the tensor itself, `.logits`, dict['logits'] or the first entry."""
    if torch.is_tensor(out):
        return out
    if hasattr(out, "logits") and torch.is_tensor(out.logits):
        return out.logits
    if isinstance(out, dict) and out:
        return unwrap(out["logits"] if "logits" in out else next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return unwrap(out[0])
    raise LandscapeError(f"the model returned {type(out).__name__}; expected a tensor, a tuple/dict of tensors "
                         "or an object with .logits")


def class_dim(outputs: torch.Tensor, targets: torch.Tensor) -> Optional[int]:
    """The class dimension of `outputs` for integer `targets`, or None where accuracy is undefined."""
    if not outputs.is_floating_point() or targets.is_floating_point() or targets.dtype == torch.bool:
        return None
    if outputs.dim() != targets.dim() + 1 or outputs.shape[-1 if outputs.dim() == 2 else 0] < 1:
        return None
    if outputs.shape[:-1] == targets.shape:
        return outputs.dim() - 1
    if outputs.shape[0] == targets.shape[0] and outputs.shape[2:] == targets.shape[1:]:
        return 1
    return None


# ----------------------------------------------------------------------------- what a point computes
class Statistics:
    """The values one grid point computes on one set: loss, accuracy (where defined), metrics.

    `batch_sums(outputs, targets)` -> a float64 vector of per-batch sums, accumulated on the device;
    `means(sums, n, n_targets)` turns the set's sums into the values, in the order of `names`.
    """

    def __init__(self, criterion: Criterion, loss_name: str, metrics: Optional[dict[str, Metric]] = None,
                 accuracy_dim: Optional[int] = None) -> None:
        self.criterion, self.loss_name = criterion, loss_name
        self.metrics = dict(metrics or {})
        self.accuracy_dim = accuracy_dim
        self.builtin = loss_name in LOSS_NAMES and accuracy_dim == 1
        self.names = ["loss"] + (["acc"] if accuracy_dim is not None else []) + list(self.metrics)

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        b = len(targets)
        if self.builtin and outputs.dim() == 2:  # the reference's losses: one fused pass
            loss, correct = batch_loss_sum(outputs, targets, self.loss_name)
            vals = [loss.double(), correct.double()]
        else:
            loss = call_user(self.criterion, f"loss '{self.loss_name}'", outputs, targets)
            vals = [torch.as_tensor(loss, device=outputs.device).double().reshape(()) * b]
            if self.accuracy_dim is not None:
                vals.append((outputs.argmax(dim=self.accuracy_dim) == targets).sum().double())
        for name, fn in self.metrics.items():
            vals.append(torch.as_tensor(call_user(fn, f"metric '{name}'", outputs, targets),
                                        device=outputs.device).double().reshape(()) * b)
        return torch.stack(vals)

    def means(self, sums: torch.Tensor, n: Union[torch.Tensor, float],
              n_targets: Union[torch.Tensor, float]) -> torch.Tensor:
        """Sums over the set -> loss and metrics per sample, accuracy in percent of targets."""
        out = sums / n
        if self.accuracy_dim is not None:
            out[1] = 100.0 * sums[1] / n_targets
        return out

    def check(self, model: Runner, inputs: Inputs, targets: torch.Tensor, model_name: str = "the model",
              data_name: str = "the") -> torch.Tensor:
        """Run the model, the loss and each metric on two samples: fail early, in one line."""
        try:
            with torch.no_grad():
                out = forward(model, take(inputs, 0, 2))
        except LandscapeError:
            raise
        except Exception as e:
            raise LandscapeError(f"{model_name} cannot take {data_name} inputs of {describe_inputs(inputs)}: "
                                 f"{first_line(e)}") from None
        y = targets[:2]
        with torch.no_grad():
            loss = call_user(self.criterion, f"loss '{self.loss_name}'", out, y)
            check_scalar(loss, f"loss '{self.loss_name}'", out, y)
            for name, fn in self.metrics.items():
                check_scalar(call_user(fn, f"metric '{name}'", out, y), f"metric '{name}'", out, y)
        return out


def check_scalar(value: Any, what: str, outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if not (torch.is_tensor(value) or isinstance(value, (float, int))) or torch.as_tensor(value).numel() != 1:
        shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise LandscapeError(f"{what} returned {shape} for outputs {tuple(outputs.shape)} and targets "
                             f"{tuple(targets.shape)}; it must return the mean over the batch (a scalar)")


def describe_inputs(inputs: Inputs) -> str:
    if isinstance(inputs, dict):
        return ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in inputs.items())
    if isinstance(inputs, (tuple, list)):
        return ", ".join(str(tuple(v.shape[1:])) for v in inputs)
    return f"shape {tuple(inputs.shape[1:])}"


def make_statistics(model: Runner, inputs: Inputs, targets: torch.Tensor,
                    loss: Union[None, str, Criterion] = None,
                    metrics: Union[None, str, dict[str, Metric]] = None, model_name: str = "the model",
                    data_name: str = "the") -> Statistics:
    """The Statistics for this model and data: resolves the loss and metrics, checks them on 2 samples."""
    criterion, loss_name = resolve_loss(loss)
    metrics = resolve_metrics(metrics)
    out = Statistics(criterion, loss_name, metrics).check(model, inputs, targets, model_name, data_name)
    acc_dim = class_dim(out, targets[:2])
    if loss_name in LOSS_NAMES:
        classes = int(targets.max()) + 1 if targets.numel() and not targets.is_floating_point() else 0
        if acc_dim is None or out.shape[acc_dim] < classes:
            raise LandscapeError(f"{model_name} outputs shape {tuple(out.shape)}, but loss '{loss_name}' needs one "
                                 f"score per class for {data_name} targets {tuple(targets.shape[1:]) or ''} of "
                                 f"{classes or targets.dtype} classes")
    return Statistics(criterion, loss_name, metrics, acc_dim)


# ----------------------------------------------------------------------------- precision
@contextlib.contextmanager
def arithmetic(precision: str, device: Device) -> Iterator[None]:
    """Apply `--precision` for the duration of a block, then restore PyTorch's switches.

    default: PyTorch's own defaults (TF32 convolutions on GPUs that have it, as the reference ran);
    fp32: TF32 off everywhere; tf32: TF32 on everywhere; bf16: autocast to bfloat16.
    """
    if precision not in PRECISIONS:
        raise LandscapeError(f"precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        if precision in ("fp32", "tf32"):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
        if precision == "bf16":
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def arithmetic_name(precision: str, device: Device) -> str:
    """The arithmetic a point's values are computed in, from --precision and the device type: 'fp32',
    'tf32', 'tf32 convolutions' or 'tf32 matmuls' (on CUDA, where TF32 exists; 'default' keeps
    PyTorch's switches as they are, by default TF32 convolutions only), or 'bf16 autocast'. Recorded
    and compared on resume: a surface begun on a CPU and resumed on a GPU would mix two arithmetics."""
    if precision == "bf16":
        return "bf16 autocast"
    if torch.device(device).type != "cuda" or precision == "fp32":
        return "fp32"
    if precision == "tf32":
        return "tf32"
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    return {(True, True): "tf32", (False, True): "tf32 convolutions", (True, False): "tf32 matmuls"}.get(
        (bool(matmul), bool(conv)), "fp32")


def cpu_has_native_bf16() -> Optional[bool]:
    """True if this CPU has bfloat16 instructions (x86: AVX-512 BF16 or AMX-BF16; Arm: BF16), False if
    it has not (PyTorch then emulates bf16 in float32, and it runs slower than float32 itself), None
    where the system does not say. LL_ASSUME_CPU_BF16=0/1 overrides."""
    forced = os.environ.get("LL_ASSUME_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo") as f:
            words = set(" ".join(line.split(":", 1)[1] for line in f
                                 if line.split(":", 1)[0].strip() in ("flags", "Features")).split())
        return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})
    except (OSError, IndexError):
        pass
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
            return out == "1" if out in ("0", "1") else None
        except (OSError, subprocess.SubprocessError):
            return None
    return None


def bf16_warning(precision: str, device: Device) -> Optional[str]:
    """A one-line warning when --precision bf16 would be emulated on this CPU (slower, not faster), or None."""
    if precision != "bf16" or torch.device(device).type != "cpu" or cpu_has_native_bf16() is not False:
        return None
    return ("warning: --precision bf16 on this CPU is emulated (no AVX-512 BF16 or AMX instructions): it runs "
            "slower than fp32 (about 9x on an AVX2-only CPU), with bf16's rounding; use --precision default here")


# ----------------------------------------------------------------------------- BatchNorm recalibration
BN_RECALIBRATE_BATCH = 128   # recalibration batch when --batch_size is auto (the reference's --batch_size)


def has_batchnorm(net: nn.Module) -> bool:
    """True if `net` has a BatchNorm layer that keeps running statistics."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in net.modules())


def recalibration_batch(batch_size: Optional[BatchSize]) -> int:
    """The batch size BatchNorm statistics are recomputed with: the evaluation's, or 128 with 'auto'."""
    return BN_RECALIBRATE_BATCH if batch_size in (None, "auto") else int(batch_size)


def recalibration_batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """[(start, stop)] of the recalibration batches over n examples: batches of batch_size, except that a
    last batch of 1 example is merged into the one before (BatchNorm in train mode cannot take a batch of
    one sample per channel, e.g. BatchNorm1d on (1, C)). A set of 1 example is refused."""
    if n < 2:
        raise LandscapeError(f"bn_recalibrate (--bn_recalibrate) recomputes BatchNorm's statistics from the training "
                             f"data, which holds {n} example(s): it needs at least 2")
    starts = list(range(0, n, batch_size))
    if n - starts[-1] == 1:
        starts.pop()
    return [(a, b) for a, b in zip(starts, starts[1:] + [n])]


def recalibrate_bn(net: nn.Module, inputs: Inputs, batch_size: int) -> None:
    """Recompute every BatchNorm's running statistics from `inputs` (the training data), as mode-connectivity
    work does (Garipov et al. 2018): statistics reset, BN layers in train mode with momentum None (a
    cumulative average over the batches), no gradients; then eval mode again. Other layers (dropout)
    stay in eval mode. Batches of `batch_size`; a last batch of a single example is merged into the
    previous one (recalibration_batches)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in bns]
    spans = recalibration_batches(batch_count(inputs), batch_size)
    with torch.no_grad():
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        try:
            for start, stop in spans:
                forward(net, take(inputs, start, stop))
        finally:
            for m, momentum in zip(bns, momenta):
                m.momentum = momentum
                m.eval()


# ----------------------------------------------------------------------------- one set, one or many points
def evaluate(net: Runner, x: Inputs, y: torch.Tensor, loss_name: str = "crossentropy", batch_size: int = 128,
             autocast: Callable[[], ContextManager[Any]] = contextlib.nullcontext) -> tuple[float, float]:
    """Mean loss and accuracy (%) of a classifier `net` on (x, y), which already live on its device."""
    stats = Statistics(*resolve_loss(loss_name), accuracy_dim=1)
    with autocast():
        values = evaluate_set(net, x, y, stats, batch_size)
    return float(values[0]), float(values[1])


def set_sums(runner: Runner, batches: Iterable[Batch], stats: Statistics, device: Device) -> torch.Tensor:
    """One pass over a set's batches (on the device): [the sums of stats.names..., examples, targets],
    float64 on the device, read back by the caller once per point."""
    sums = torch.zeros(len(stats.names), dtype=torch.float64, device=device)
    n = n_targets = 0
    with torch.inference_mode():
        for xb, yb in batches:
            sums += stats.batch_sums(forward(runner, xb), yb)
            n, n_targets = n + len(yb), n_targets + yb.numel()
    return torch.cat([sums, torch.tensor([n, n_targets], dtype=torch.float64, device=device)])


def evaluate_set(runner: Runner, inputs: Inputs, targets: torch.Tensor, stats: Statistics,
                 batch_size: int) -> np.ndarray:
    """The statistics of `runner` over a whole set on its device: one host read at the end."""
    sums = set_sums(runner, DeviceSet(inputs, targets, batch_size), stats, targets.device)
    return stats.means(sums[:-2], sums[-2], sums[-1]).cpu().numpy()


def stacked_sums(net: nn.Module, params: dict[str, torch.Tensor], batches: Iterable[Batch], stats: Statistics,
                 device: Device) -> torch.Tensor:
    """set_sums at K points at once: `params` maps names to (K, *shape) tensors. Returns (K, W + 2).

    One pass over the data evaluates all K models with torch.func.vmap(functional_call), so the
    per-point overhead (kernel launches, Python) is paid once per batch instead of K times.
    """
    k = next(iter(params.values())).shape[0]

    def one(p, xb):
        args, kwargs = call_args(xb)
        return unwrap(torch.func.functional_call(net, p, args, kwargs))
    model_fn = torch.func.vmap(one, in_dims=(0, None))
    sums = torch.zeros(k, len(stats.names), dtype=torch.float64, device=device)
    n = n_targets = 0
    with torch.inference_mode():
        for xb, yb in batches:
            out = model_fn(params, xb)   # (K, B, ...)
            sums += torch.stack([stats.batch_sums(out[i], yb) for i in range(k)])
            n, n_targets = n + len(yb), n_targets + yb.numel()
    counts = torch.tensor([n, n_targets], dtype=torch.float64, device=device).expand(k, 2)
    return torch.cat([sums, counts], dim=1)


def evaluate_stacked(net: nn.Module, params: dict[str, torch.Tensor], inputs: Inputs, targets: torch.Tensor,
                     stats: Statistics, batch_size: int) -> np.ndarray:
    """Statistics at K points at once (see stacked_sums); returns (K, len(stats.names))."""
    sums = stacked_sums(net, params, DeviceSet(inputs, targets, batch_size), stats, targets.device)
    return torch.stack([stats.means(s[:-2], s[-2], s[-1]) for s in sums]).cpu().numpy()


def eval_loss(net: nn.Module, criterion: Criterion, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
              use_cuda: bool = False) -> tuple[float, float]:
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


class GridEvaluator:
    """values(coords) -> (len(coords), len(sets) * len(stats.names)): each set's statistics at each point.

    `mover` (net_plotter) moves `net` to a grid point; `runner` runs the forward pass (the net, a
    fast_model.FastModel whose refresh() follows each move, or DataParallel). `sets` are on the device
    (batches.DeviceSet, or StreamedSet read for each point). With points_per_pass K > 1, K points
    share each pass (through `net`, vmapped). With data-parallel points (`group`, parallel/dist.py),
    each rank holds a shard of every set, and one all-reduce per point (or pass) adds the group's
    sums and counts before they become means. With `recalibrate` (a batch size), BatchNorm's
    statistics are recomputed from the first set (the training data, a DeviceSet) at every point,
    after the move and before the evaluation.
    """

    def __init__(self, net: nn.Module, mover: PointSetter, sets: Sequence[Union[DeviceSet, StreamedSet]],
                 stats: Statistics, precision: str, device: Device, points_per_pass: int = 1,
                 runner: Optional[Runner] = None, group: Optional[PointGroup] = None,
                 recalibrate: int = 0) -> None:
        self.net, self.mover, self.sets, self.stats = net, mover, sets, stats
        self.runner = runner if runner is not None else net
        self.precision, self.device = precision, device
        self.k = points_per_pass
        self.group = group
        self.examples, self.seconds = 0, 0.0      # this rank's examples evaluated and the time they took
        self.recalibrate = recalibrate
        assert not (recalibrate and points_per_pass > 1), "BN recalibration evaluates one point per pass"

    def __call__(self, coords: npt.ArrayLike) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
        out = np.empty((len(coords), len(self.stats.names) * len(self.sets)))
        t0 = time.perf_counter()
        with arithmetic(self.precision, self.device):
            if self.k == 1 or not self.mover.names:  # (no entry moves: every point is the origin)
                for i, c in enumerate(coords):
                    self.mover.set(c)
                    if self.recalibrate:
                        recalibrate_bn(self.net, self.sets[0].inputs, self.recalibrate)
                    if hasattr(self.runner, "refresh"):
                        self.runner.refresh()
                    sums = torch.stack([set_sums(self.runner, s, self.stats, self.device) for s in self.sets])
                    out[i] = self.means(sums[None])[0]        # sums: (sets, W + 2)
            else:
                self.mover.restore()  # the stacked path leaves the model itself untouched
                for start in range(0, len(coords), self.k):
                    params = self.mover.stacked(coords[start:start + self.k])
                    sums = torch.stack([stacked_sums(self.net, params, s, self.stats, self.device)
                                        for s in self.sets], dim=1)     # (K, sets, W + 2)
                    out[start:start + len(sums)] = self.means(sums)
        self.seconds += time.perf_counter() - t0
        self.examples += len(coords) * sum(s.count for s in self.sets)
        return out

    def means(self, sums: torch.Tensor) -> np.ndarray:
        """(points, sets, W + 2) sums of this rank -> (points, sets * W) values of the whole sets."""
        if self.group is not None:
            self.group.sum_(sums)        # one all-reduce: every set's sums and counts, every point
        sums = sums.cpu()
        return np.stack([np.concatenate([self.stats.means(s[:-2], s[-2], s[-1]).numpy() for s in point])
                         for point in sums])

    def status(self) -> str:
        """This rank's evaluation rate, and (streamed sets) the share of it spent waiting for data."""
        if not self.seconds:
            return ""
        text = f"{self.examples / self.seconds:,.0f} ex/s"
        streamed = [s for s in self.sets if getattr(s, "streamed", False)]
        if streamed:
            text += f", {100 * sum(s.waited for s in streamed) / self.seconds:.0f}% waiting for data"
        return text + (f" (rank 0 of a group of {self.group.size})" if self.group is not None and
                       self.group.size > 1 else "")


def make_grid_evaluator(net: nn.Module, make_mover: Callable[[], PointSetter],
                        sets: Sequence[Union[HostSet, Sequence[Any]]], stats: Statistics, device: Device,
                        gpu_ids: Sequence[int] = (), batch_size: Optional[BatchSize] = "auto",
                        precision: str = "default", points_per_pass: int = 1, fold_bn: bool = True,
                        memory_format: str = "auto", compile: bool = False, say: Callable[[str], Any] = print,
                        group: Optional[PointGroup] = None, bn_recalibrate: bool = False) -> GridEvaluator:
    """Set up the evaluation of grid points on this rank's device: the fast model (BN folding,
    memory layout, compile), the mover (built after the layout change, which replaces the parameter
    tensors), the data (batches.HostSets, or (inputs, targets) pairs) moved to the device once or
    streamed, and the batch size. Returns a GridEvaluator. With bn_recalibrate, the first set (the
    training data) must be in memory: BatchNorm's statistics are recomputed from it at every point."""
    sets = [s if hasattr(s, "tensors") else batches.HostSet("", tensors=tuple(s), count=len(s[1]),
                                                            total=len(s[1]), sample=(take(s[0], 0, 2), s[1][:2]))
            for s in sets]
    fast = fast_model.prepare(net, device, fold_bn=fold_bn, memory_format=memory_format, compile=compile,
                              sample=call_args(to_device(sets[0].sample[0], device)))
    mover = make_mover()
    runner = fast
    if len(gpu_ids) > 1:
        runner = torch.nn.DataParallel(fast.graph, device_ids=list(gpu_ids))
        runner.refresh = fast.refresh
    sample = to_device(sets[0].sample[0], device, fast.prepare_input)
    requested_batch = batch_size
    if batch_size in (None, "auto"):
        first = next((s for s in sets if s.in_memory), None)
        batch_size = auto_batch_size(fast, sample, first.count if first else batches.DATASET_BATCH, device)
    dev_sets = [on_device(s, device, batch_size, fast.prepare_input) for s in sets]
    if compile:
        with arithmetic(precision, device):
            args, kwargs = call_args(sample)
            seconds = fast.warm_up(*args, **kwargs)
        say(f"torch.compile took {seconds:.1f} s")
    k = 1 if len(gpu_ids) > 1 else points_per_pass
    recalibrate = recalibration_batch(requested_batch) if bn_recalibrate else 0
    assert not recalibrate or isinstance(dev_sets[0], batches.DeviceSet), "BN recalibration reads data in memory"
    return GridEvaluator(net, mover, dev_sets, stats, precision, device, k, runner=runner, group=group,
                         recalibrate=recalibrate)


# ----------------------------------------------------------------------------- batch size
CPU_ACTIVATION_BYTES = 4 << 20      # CPU: largest activation of one batch about this size (stays in cache)
GPU_MEMORY_SHARE = 0.5              # GPU: use at most this share of the free memory for one batch
MAX_AUTO_BATCH = 8192


def auto_batch_size(runner: Runner, inputs: Inputs, n: int, device: Device) -> int:
    """The evaluation batch size for `--batch_size auto` (eval mode: it changes only rounding).

    CPU: the batch whose largest activation is about CPU_ACTIVATION_BYTES, measured with forward
    hooks on two samples, so the working set stays in cache. GPU: the largest batch whose peak
    memory, measured on a probe batch, fits GPU_MEMORY_SHARE of the free memory.
    """
    if torch.device(device).type == "cuda":
        per_sample = cuda_bytes_per_sample(runner, inputs, device)
        free, _ = torch.cuda.mem_get_info(device)
        size = int(free * GPU_MEMORY_SHARE // max(per_sample, 1))
    else:
        size = int(CPU_ACTIVATION_BYTES // max(largest_activation_bytes(runner, inputs), 1))
    size = max(1, min(size, MAX_AUTO_BATCH, n))
    return 1 << int(math.floor(math.log2(size))) if size < n else size


def largest_activation_bytes(runner: Runner, inputs: Inputs) -> float:
    """Bytes per sample of the largest tensor any module outputs (forward hooks, two samples)."""
    largest = [0]

    def hook(_module, _args, out):
        if torch.is_tensor(out):
            largest[0] = max(largest[0], out.numel() * out.element_size())

    model = getattr(runner, "module", runner)
    handles = [m.register_forward_hook(hook) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        with torch.inference_mode():
            forward(runner, take(inputs, 0, 2))
    finally:
        for h in handles:
            h.remove()
    return largest[0] / min(2, batch_count(inputs))


def cuda_bytes_per_sample(runner: Runner, inputs: Inputs, device: Device, probe: int = 64) -> float:
    """Peak CUDA memory per sample of one forward pass on a probe batch."""
    probe = min(probe, batch_count(inputs))
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode():
        forward(runner, take(inputs, 0, probe))
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / probe


# ----------------------------------------------------------------------------- grid jobs' loss maps
def loss_keys(set_names: Sequence[str], stats: Statistics) -> list[str]:
    return [f"{s}_{n}" for s in set_names for n in stats.names]


def loss_job_compute(net: nn.Module, sets: Sequence[tuple[Any, ...]], stats: Statistics, device: Device,
                     gpu_ids: Sequence[int] = (), batch_size: Optional[BatchSize] = "auto",
                     precision: str = "default", points_per_pass: int = 1, fold_bn: bool = True,
                     memory_format: str = "auto", compile: bool = False, say: Callable[[str], Any] = print,
                     group: Optional[PointGroup] = None,
                     bn_recalibrate: bool = False) -> Callable[[Callable[[], PointSetter]], GridEvaluator]:
    """make_compute for loss (and accuracy, metrics) maps; `sets`: [(name, HostSet)] or [(name, inputs,
    targets)] on the CPU, the training set first (BN recalibration reads it)."""
    def make(make_mover):
        return make_grid_evaluator(net, make_mover, [s[1] if len(s) == 2 else s[1:] for s in sets], stats, device,
                                   gpu_ids, batch_size, precision, points_per_pass, fold_bn, memory_format, compile,
                                   say, group, bn_recalibrate)
    return make


def loss_inputs(precision: str, batch_size: Optional[BatchSize], bn_recalibrate: bool, metrics: str = "",
                device: Device = "cpu") -> dict[str, Any]:
    """What a loss map's values depend on beyond the model, data and directions (recorded in the surface
    file, compared on resume; keys of io/provenance.py's SURFACE table)."""
    return {"precision": precision, "arithmetic": arithmetic_name(precision, device), "metrics": metrics,
            "bn_recalibrate": int(bool(bn_recalibrate)),
            "bn_recalibrate_batch": recalibration_batch(batch_size) if bn_recalibrate else 0}



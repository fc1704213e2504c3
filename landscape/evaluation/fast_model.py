"""Make a model cheaper to evaluate at many grid points, without changing what it computes.

- BatchNorm folding: in eval mode, BN(conv(x)) = conv'(x) with W' = W * s and b' = (b - mean) * s + beta,
  s = gamma / sqrt(running_var + eps), exact up to rounding. The model is traced with torch.fx;
  every Conv/Linear whose only consumer is a BatchNorm over that layer's output features gets a
  folded twin, and the BN disappears from the graph. BN normalises dimension 1: a convolution's
  output channels, always; a Linear's output features only when its output is (B, features), so
  a Linear is folded only where one pass on a sample showed the BN a 2-D input (on (B, C, L) input
  BatchNorm1d(C) normalises C, not the Linear's features, and folding would be wrong). A layer
  that computes its weight at each call (a parametrization such as weight_norm, or a forward hook
  such as the old torch.nn.utils.weight_norm) is never folded: its twin would ignore the folded
  weight. As a general guard, the same pass on the sample is compared with the folded graph's
  output once at set-up; if they differ beyond rounding, the model is used unfolded. All other
  layers are shared with the original model, so the grid engine keeps
  writing the original parameters; `refresh()` recomputes the folded weights after each move (a
  few elementwise ops on the weights, nothing on the data).
- channels_last memory layout for convolutional models, which oneDNN and cuDNN run faster.
- optional torch.compile of the result.
- on Linux CPUs, glibc's malloc keeps freed activation buffers (keep_freed_memory): by default a
  buffer above its mmap threshold goes back to the kernel when freed, and the next batch pays
  page faults to zero it again, which slows every forward pass down.
Models that torch.fx cannot trace are used as they are.
"""
from __future__ import annotations

import copy
import ctypes
import sys
import time
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch
import torch.nn as nn

if TYPE_CHECKING:
    Sample = tuple[Sequence[Any], dict[str, Any]]   # (args, kwargs) of a small input on the model's device
    Dims = dict[nn.Module, set[int]]                # {BatchNorm module: the input dimensionalities it saw}

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def has_conv(net: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in net.modules())


def folded_twin(layer: nn.Module) -> nn.Module:
    """A copy of `layer` with its own (bias-carrying) parameters, to hold folded weights."""
    twin = copy.deepcopy(layer)
    if twin.bias is None:
        twin.bias = nn.Parameter(torch.zeros(twin.weight.shape[0], device=twin.weight.device,
                                             dtype=twin.weight.dtype))
    twin.requires_grad_(False)
    return twin


def observe(net: nn.Module, sample: Optional[Sample]) -> tuple[Dims, Any]:
    """One pass of `net` on `sample`, an (args, kwargs) pair: ({BatchNorm module: the set of input
    dimensionalities it saw}, the outputs), or ({}, None) without a sample or if the pass fails."""
    if sample is None:
        return {}, None
    dims = {}

    def record(module, args):
        dims.setdefault(module, set()).add(args[0].dim() if args and torch.is_tensor(args[0]) else -1)
    hooks = [m.register_forward_pre_hook(record) for m in net.modules() if isinstance(m, BN_TYPES)]
    try:
        with torch.no_grad():
            out = net(*sample[0], **sample[1])
    except Exception:  # the model's own failure is reported by the evaluation itself
        return {}, None
    finally:
        for h in hooks:
            h.remove()
    return dims, out


def folds_exactly(layer: nn.Module, bn: nn.Module, dims: Dims) -> bool:
    """True if BN(layer(x)) normalises the layer's output features, so folding is exact: a convolution
    (batched: its output is (B, C_out, ...)) or a Linear whose output BN saw as (B, features)."""
    seen = dims.get(bn)
    if isinstance(layer, nn.Linear):
        return seen == {2}
    batched = next(n for cls, n in ((nn.Conv1d, 3), (nn.Conv2d, 4), (nn.Conv3d, 5)) if isinstance(layer, cls))
    return seen is None or seen == {batched}


def computes_plainly(module: nn.Module) -> bool:
    """True if `module` computes from its own weight tensors as its class says: no parametrization
    (weight_norm, spectral_norm, ...: the weight is recomputed at each call) and no forward hooks
    (the old torch.nn.utils.weight_norm is a pre-hook). A folded twin of anything else would compute
    its weight its own way and ignore the folded one."""
    return not (torch.nn.utils.parametrize.is_parametrized(module) or module._forward_pre_hooks
                or module._forward_hooks)


def fold_batchnorm(net: nn.Module, dims: Optional[Dims] = None
                   ) -> tuple[nn.Module, list[tuple[str, nn.Module, nn.Module]]]:
    """(graph module with BNs folded into their producers, [(folded name, layer, bn)]), or (net, []).
    `dims`: {BatchNorm: input dimensionalities} from a pass on a sample (observe), which shows which
    Linear layers may fold (see above); None: no sample, no Linear folds."""
    try:
        gm = torch.fx.symbolic_trace(net)
    except Exception:  # dynamic control flow, custom modules: evaluate the model as it is
        return net, []
    dims = dims or {}
    modules = dict(gm.named_modules())
    pairs = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), BN_TYPES):
            continue
        prev = node.args[0]
        if not (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                and isinstance(modules.get(prev.target), FOLDABLE) and modules[node.target].track_running_stats):
            continue
        layer, bn = modules[prev.target], modules[node.target]
        if not (folds_exactly(layer, bn, dims) and computes_plainly(layer) and computes_plainly(bn)):
            continue
        name = f"folded_{len(pairs)}"
        gm.add_submodule(name, folded_twin(layer))
        prev.target = name
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        pairs.append((name, layer, bn))
    if not pairs:
        return net, []
    gm.graph.lint()
    gm.recompile()
    return gm, pairs


FOLD_RTOL = 1e-3   # folding changes only rounding: a folded output further than this from the model's is wrong


def output_tensors(out: Any) -> list[torch.Tensor]:
    """The floating-point tensors in a model's output (a tensor, tuple, list, dict or object with .logits)."""
    if torch.is_tensor(out):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in output_tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in output_tensors(v)]
    return output_tensors(out.logits) if hasattr(out, "logits") else []


def same_outputs(got: Any, expected: Any) -> bool:
    """True if two outputs agree to float rounding: every tensor within FOLD_RTOL of the largest
    magnitude of its reference, NaN and inf where the reference has them."""
    got, expected = output_tensors(got), output_tensors(expected)
    if len(got) != len(expected) or not expected:
        return False
    for a, b in zip(got, expected):
        if a.shape != b.shape:
            return False
        a, b = a.double(), b.double()
        finite = torch.isfinite(b)
        if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(a[~finite].nan_to_num(), b[~finite].nan_to_num()):
            return False
        scale = float(b[finite].abs().max()) if finite.any() else 0.0
        if finite.any() and float((a[finite] - b[finite]).abs().max()) > FOLD_RTOL * max(scale, 1e-12):
            return False
    return True


class FastModel:
    """Callable like the model; call refresh() after the original's weights or BN statistics move."""

    def __init__(self, net: nn.Module, fold_bn: bool = True, channels_last: bool = False,
                 compile: bool = False, sample: Optional[Sample] = None) -> None:
        self.net = net
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.graph, self.pairs = net, []
        if fold_bn:
            self.fold(sample)
        self.module = torch.compile(self.graph) if compile else self.graph

    def fold(self, sample: Optional[Sample]) -> None:
        """Fold BatchNorm (fold_batchnorm), then check once that the folded graph computes what the
        model computes on `sample` (an (args, kwargs) pair on the model's device); if it does not
        (a layer computing its weight in a way the fold cannot see), use the model as it is."""
        dims, expected = observe(self.net, sample)
        self.graph, self.pairs = fold_batchnorm(self.net, dims if sample is not None else None)
        self.refresh()
        if self.pairs and expected is not None:
            with torch.no_grad():
                got = self.graph(*sample[0], **sample[1])
            if not same_outputs(got, expected):
                self.graph, self.pairs = self.net, []
                del self._fold

    def refresh(self) -> None:
        """Recompute every folded layer from its original layer and BatchNorm (current values):
        s = gamma / sqrt(var + eps), W' = W * s, b' = (b - mean) * s + beta, for all layers at once
        with a few fused multi-tensor kernels (not several kernels per layer)."""
        if not self.pairs:
            return
        if not hasattr(self, "_fold"):
            self._fold = self._fold_lists()
        f = self._fold
        with torch.no_grad():
            s = torch._foreach_add(f["var"], f["eps"])
            torch._foreach_rsqrt_(s)
            torch._foreach_mul_(s, f["gamma"])
            torch._foreach_copy_(f["twin_w"], torch._foreach_mul(f["w"], [si.view(v.shape) for si, v in
                                                                          zip(s, f["shape"])]))
            shifted = torch._foreach_sub(f["b"], f["mean"])
            torch._foreach_mul_(shifted, s)
            torch._foreach_add_(shifted, f["beta"])
            torch._foreach_copy_(f["twin_b"], shifted)

    def _fold_lists(self) -> dict[str, list[Any]]:
        """The live tensors refresh() reads and writes, gathered once (after the model has its device)."""
        f = {k: [] for k in ("var", "eps", "gamma", "beta", "mean", "w", "b", "twin_w", "twin_b", "shape")}
        for name, layer, bn in self.pairs:
            twin = getattr(self.graph, name)
            ones = torch.ones_like(bn.running_var)
            f["var"].append(bn.running_var)
            f["eps"].append(bn.eps)
            f["gamma"].append(bn.weight if bn.affine else ones)
            f["beta"].append(bn.bias if bn.affine else torch.zeros_like(ones))
            f["mean"].append(bn.running_mean)
            f["w"].append(layer.weight)
            f["b"].append(layer.bias if layer.bias is not None else torch.zeros_like(ones))
            f["twin_w"].append(twin.weight)
            f["twin_b"].append(twin.bias)
            f["shape"].append(torch.empty((ones.numel(),) + (1,) * (layer.weight.dim() - 1), device="meta"))
        return f

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def warm_up(self, *args: Any, **kwargs: Any) -> float:
        """Run once (compiling if asked); returns the seconds it took."""
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.module(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def eval(self) -> FastModel:
        self.net.eval()
        return self


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's mallopt parameters
MMAP_THRESHOLD = 32 << 20                     # glibc's largest: blocks below it come from the heap
TRIM_THRESHOLD = 1 << 30                      # free heap kept before it is returned to the kernel


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed activation buffers instead of unmapping and faulting them in
    again at every batch (up to TRIM_THRESHOLD of free memory stays with the process). Linux only;
    elsewhere nothing changes. Returns True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                            TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def prepare(net: nn.Module, device: Union[str, torch.device], fold_bn: bool = True,
            memory_format: str = "auto", compile: bool = False, sample: Optional[Sample] = None) -> FastModel:
    """Move `net` to `device` in the chosen memory layout and wrap it for fast evaluation.
    `sample`: (args, kwargs) of a small input on `device` (lets Linear -> BatchNorm1d pairs fold, and
    checks the folded graph against the model once).

    Call before building the PointSetter: converting the layout replaces the parameter tensors.
    """
    channels_last = memory_format == "channels_last" or (memory_format == "auto" and has_conv(net))
    if torch.device(device).type == "cpu":
        keep_freed_memory()
    net.to(device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    return FastModel(net, fold_bn=fold_bn, channels_last=channels_last, compile=compile, sample=sample)

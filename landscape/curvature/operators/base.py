"""The operator interface every curvature matrix implements, and the helpers they share.

A curvature operator is a symmetric matrix-free linear operator over a flat vector of P parameters:
`dim` (P), `device`, `dtype`, `products` (vectors multiplied so far), `psd` (positive semi-definite
by construction), `matmat(V)` for V (K, P) ->
(K, P) (row k is M v_k), `__call__(v)` for one (P,) vector, `reset()` (drop whatever was cached for
the current weights) and `gradient()` (the loss's flat gradient (P,) where the operator has it, a
good Lanczos start; None otherwise). The solvers in curvature/algorithms use nothing else, so a
data-parallel wrapper or a block of another operator is one more operator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence, Union

import torch

if TYPE_CHECKING:
    from landscape.evaluation.batches import Inputs

    Device = Union[str, torch.device]

    class SymmetricOperator(Protocol):
        """What the solvers (curvature/algorithms) use of an operator: v (P,) -> M v, its dim P and device."""
        dim: int
        device: torch.device

        def __call__(self, v: torch.Tensor) -> torch.Tensor: ...


class CurvatureOperator:
    """Base class: shape checks and product counting around `_matmat(V)`, which subclasses implement."""

    kind = "matrix"               # hessian | ggn | ef | block: what the operator multiplies by
    psd = False                   # positive semi-definite by construction (the GGN of a convex loss, a Fisher)

    def __init__(self, dim: int, device: Device, dtype: torch.dtype = torch.float32) -> None:
        self.dim, self.device, self.dtype = int(dim), torch.device(device), dtype
        self.products = 0

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """V (K, P) -> M V as (K, P): row k is M v_k."""
        assert V.dim() == 2 and V.shape[1] == self.dim, f"expected (K, {self.dim}), got {tuple(V.shape)}"
        out = self._matmat(V.to(self.device, self.dtype))
        self.products += V.shape[0]
        return out

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """v (P,) -> M v (P,)."""
        return self.matmat(v.reshape(1, -1))[0]

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what was cached for the current weights (call after moving them through `.data`)."""

    def gradient(self) -> Optional[torch.Tensor]:
        """The loss's gradient (P,) over the covered parameters, or None where it is not at hand."""
        return None


def flatten_rows(tensors: Sequence[Optional[torch.Tensor]], params: Sequence[torch.Tensor],
                 rows: int) -> torch.Tensor:
    """Per-parameter tensors of shape (rows, *p.shape), None for 0 -> one (rows, P) tensor."""
    return torch.cat([(torch.zeros((rows,) + p.shape, dtype=p.dtype, device=p.device) if t is None else t)
                      .reshape(rows, -1) for t, p in zip(tensors, params)], dim=1)


def default_memory_budget(device: Device) -> int:
    """Bytes a cached graph may take: half the free memory of a CUDA device, a quarter of MemAvailable on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kib * 1024 // 4
    except (OSError, StopIteration, ValueError):
        return 1 << 30                   # 1 GiB where the OS does not say


class SavedBytes:
    """saved_tensors_hooks that count the bytes autograd keeps for backward (tensors of `exclude` are free)."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.free = {t.untyped_storage().data_ptr() for t in exclude}
        self.seen = set()
        self.bytes = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        except (RuntimeError, NotImplementedError):      # tensors without storage (subclasses): count them
            key = (id(t), 0, t.numel(), t.dtype)
        if key[0] not in self.free and key not in self.seen:
            self.seen.add(key)
            self.bytes += t.numel() * t.element_size()
        return t.detach()       # a detached alias: autograd re-attaches the history on unpack, with no cycle

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t


class Backward:
    """Rows V (K, ...) through one backward of `out` w.r.t. `params`: (K, P), batched while the ops allow."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.params = params
        self.dim = sum(p.numel() for p in params)
        self.batched = True      # is_grads_batched works for this model (else a loop)

    def __call__(self, out: torch.Tensor, V: torch.Tensor, retain: bool) -> torch.Tensor:
        """(K, P): the rows d(out . v_k)/dw; V has shape (K, *out.shape)."""
        k = V.shape[0]
        if not out.requires_grad:                   # out does not depend on the parameters
            return torch.zeros(k, self.dim, dtype=self.params[0].dtype, device=self.params[0].device)
        if k == 1:
            g = torch.autograd.grad(out, self.params, grad_outputs=V[0], retain_graph=retain, allow_unused=True)
            return flatten_rows([None if h is None else h.unsqueeze(0) for h in g], self.params, 1)
        if self.batched:
            try:
                g = torch.autograd.grad(out, self.params, grad_outputs=V, retain_graph=True,
                                        is_grads_batched=True, allow_unused=True)
                return flatten_rows(g, self.params, k)
            except (RuntimeError, NotImplementedError):   # an op without a batching rule: loop instead
                self.batched = False
        return torch.cat([self(out, V[i:i + 1], True) for i in range(k)])


class CallableOperator(CurvatureOperator):
    """Wraps a bare v -> M v function with the dim and device the solvers need."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], dim: int, device: Device) -> None:
        super().__init__(dim, device)
        self.fn = fn

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.fn(v) for v in V])

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return self.fn(v)


def as_operator(hvp: Callable[[torch.Tensor], torch.Tensor], dim: int, device: Device) -> SymmetricOperator:
    """hvp itself when it carries dim and device, else a CallableOperator around it."""
    return hvp if hasattr(hvp, "dim") and hasattr(hvp, "device") else CallableOperator(hvp, dim, device)


def matmat(op: Callable[[torch.Tensor], torch.Tensor], V: torch.Tensor) -> torch.Tensor:
    """(K, P) -> (K, P) through op.matmat, or a loop of op(v) for a plain callable."""
    if hasattr(op, "matmat"):
        return op.matmat(V)
    return torch.stack([op(v) for v in V])


class PartCache:
    """Per-batch parts (a forward graph and whatever else a product needs), kept between products.

    build(xb, yb, share) -> a part; `batches()` yields (xb, yb, share). cache=True keeps every part,
    False builds each part afresh for every product (constant memory), 'auto' keeps them while the
    bytes autograd saves for backward (counted as in HessianOperator) stay within memory_budget.
    The kept parts are rebuilt when a tensor of `watch` is modified in place (its _version moves).
    """

    def __init__(self, build: Callable[[Inputs, torch.Tensor, float], Any],
                 batches: Callable[[], Iterable[tuple[Inputs, torch.Tensor, float]]],
                 cache: Union[bool, str] = "auto", memory_budget: Optional[int] = None,
                 watch: Iterable[torch.Tensor] = (), device: Device = "cpu") -> None:
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be True, False or 'auto', not {cache!r}")
        self.build, self.batches, self.cache, self.watch = build, batches, cache, list(watch)
        self.memory_budget = default_memory_budget(device) if memory_budget is None else memory_budget
        self.kept, self.stamp, self.saved_bytes, self.over_budget = None, None, 0, False

    @property
    def cached(self) -> bool:
        return self.kept is not None

    def versions(self) -> list[tuple[int, int]]:
        return [(t._version, t.data_ptr()) for t in self.watch]

    def reset(self) -> None:
        self.kept, self.stamp, self.over_budget = None, None, False

    def _keep(self) -> Optional[list[Any]]:
        """Build every part under the budget: the list, or None (and over_budget) past it."""
        budget = float("inf") if self.cache is True else self.memory_budget
        counter = SavedBytes(self.watch)
        parts = []
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            for xb, yb, share in self.batches():
                parts.append(self.build(xb, yb, share))
                if counter.bytes > budget:
                    self.saved_bytes, self.over_budget = counter.bytes, True
                    return None
        self.saved_bytes = counter.bytes
        return parts

    def parts(self) -> tuple[Iterable[Any], bool]:
        """(parts, kept): the kept list (rebuilt if the weights moved), or a generator of fresh parts."""
        if self.cache is not False and not self.over_budget:
            if self.kept is None or self.stamp != self.versions():
                self.kept, self.stamp = self._keep(), self.versions()
            if self.kept is not None:
                return self.kept, True
        return (self._fresh(), False)

    def _fresh(self) -> Iterator[Any]:
        for xb, yb, share in self.batches():
            with torch.enable_grad():
                part = self.build(xb, yb, share)
            yield part

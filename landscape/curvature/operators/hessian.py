"""The Hessian of a loss that is a sum of per-batch terms: H v by double backward (reverse over reverse).

H v = d/dw (g . v), g = dL/dw. Where the set fits in memory the operator keeps the first-order graph
of every batch (g built with create_graph) and answers each product with one backward through it;
otherwise it redoes each batch's forward pass and first backward for every product. Exact either way.

The kept double backward is the default: it costs fewer forward passes per product than redoing
each batch's forward pass and first backward. Forward over reverse (torch.func.linearize, kept) costs
about as many or slightly fewer, but its set-up costs many forward passes and its memory is about
twice the graph's, so it pays only after many products; several vectors per backward
(is_grads_batched) did not pay on a CPU. The figures are in BENCHMARKS.md.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Union

import torch

from landscape.curvature.operators.base import (
    Backward,
    CurvatureOperator,
    SavedBytes,
    default_memory_budget,
    flatten_rows,
)


class HessianOperator(CurvatureOperator):
    """v (P,) -> H v, and V (K, P) -> (H V^T)^T, for the Hessian of sum(loss_terms()) w.r.t. `params`.

    loss_terms() returns an iterable of scalar tensors, one per batch, weighted so that they sum to the
    loss (batch mean * batch size / N for a mean over N points), computed with autograd through
    `params`; a generator keeps one batch's forward pass alive at a time.
    cache=True keeps the first-order graph of all batches (g = dL/dw with create_graph) and answers each
    product with one double backward through it; cache=False redoes the forward pass and first backward
    batch by batch for every product (exact too, constant memory); cache="auto" caches while the bytes
    autograd saves for backward, counted batch by batch as the graph is built, stay within
    `memory_budget` (default: default_memory_budget(device)), and falls back as soon as they pass it.
    The cached graph is rebuilt when a tensor in params or `watch` is modified in place (its _version
    moves, as with PointSetter or load_state_dict); changes made through `.data` are not seen: call
    reset() after those.
    Attributes: params, dim (P), device, dtype, products (vectors multiplied so far), cached (bool),
    saved_bytes (counted bytes of the cached graph, or of the part built before falling back).
    """

    kind = "hessian"

    def __init__(self, params: Iterable[torch.Tensor], loss_terms: Callable[[], Iterable[torch.Tensor]],
                 cache: Union[bool, str] = "auto", memory_budget: Optional[int] = None,
                 watch: Iterable[torch.Tensor] = ()) -> None:
        if cache not in (True, False, "auto"):
            raise ValueError(f"cache must be True, False or 'auto', not {cache!r}")
        self.params = list(params)
        if not self.params:
            raise ValueError("the Hessian needs at least one parameter")
        super().__init__(sum(p.numel() for p in self.params), self.params[0].device, self.params[0].dtype)
        self.loss_terms = loss_terms
        self.cache = cache
        self.memory_budget = default_memory_budget(self.device) if memory_budget is None else memory_budget
        self.cached = False
        self.saved_bytes = 0
        self._watch = self.params + [t for t in watch if all(t is not p for p in self.params)]
        self._grad = None            # (P,) flat gradient with its graph, when cached
        self._stamp = None           # versions of the watched tensors when the graph was built
        self._backward = Backward(self.params)
        self._over_budget = False    # 'auto' found the graph too big: products go batch by batch
        if cache is not False:
            self._build()

    @property
    def _batched(self) -> bool:
        return self._backward.batched

    # ---- building and checking the cached graph
    def _versions(self) -> list[tuple[int, int]]:
        return [(t._version, t.data_ptr()) for t in self._watch]

    def _flat_grad(self, term: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
        """dterm/dw as one (P,) tensor (keeping its graph with create_graph)."""
        grads = torch.autograd.grad(term, self.params, create_graph=create_graph, allow_unused=True)
        return flatten_rows([None if g is None else g.unsqueeze(0) for g in grads], self.params, 1)[0]

    def _build(self) -> None:
        """Build g over all batches with its graph; give up (cached=False) past the budget under 'auto'."""
        self._grad, self.cached = None, False
        budget = math.inf if self.cache is True else self.memory_budget
        counter = SavedBytes(self._watch)
        total = None
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            for term in self.loss_terms():
                g = self._flat_grad(term)
                total = g if total is None else total + g
                if counter.bytes > budget:
                    self.saved_bytes, self._over_budget = counter.bytes, True
                    return                 # batch-by-batch products from now on (until reset())
        self.saved_bytes = counter.bytes
        self._grad, self.cached, self._stamp = total, True, self._versions()

    def reset(self) -> None:
        """Drop the cached graph (freeing its memory); the next product builds it again if caching is on."""
        self._grad, self.cached, self._stamp, self._over_budget = None, False, None, False

    def _fresh_graph(self) -> Optional[torch.Tensor]:
        """The cached gradient graph, rebuilt if the weights moved; None when products are not cached."""
        if self.cache is False or self._over_budget:
            return None
        if not (self.cached and self._stamp == self._versions()):
            self._build()
        return self._grad if self.cached else None

    def gradient(self) -> torch.Tensor:
        """dL/dw (P,): free from the cached graph, else one pass of first backwards."""
        g = self._fresh_graph()
        if g is not None:
            return g.detach()
        with torch.enable_grad():
            return sum(self._flat_grad(term, create_graph=False) for term in self.loss_terms())

    # ---- products
    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        g = self._fresh_graph()
        if g is not None:
            return self._backward(g, V, retain=True)
        out = torch.zeros_like(V)
        with torch.enable_grad():
            for term in self.loss_terms():
                out += self._backward(self._flat_grad(term), V, retain=False)
        return out

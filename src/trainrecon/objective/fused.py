"""The weighted-sum objective's pass, compiled into one graph (``attack.compile = "inductor"``).

For one chunk of candidates X (m, d) with weights W (m, K) held fixed, it returns what
:meth:`~trainrecon.objective.weighted_sum.WeightedSumObjective.value_and_grad` takes from two autograd passes:

    s = grad_theta sum_jk W_jk phi_k(theta; x_j),        (F(s), u) = outer.value_and_grad(s),
    h(X, W) = sum_jk W_jk <u, grad_theta phi_k(theta; x_j)> = sum_jk W_jk D_theta phi_k(theta; x_j)[u],
    dJ/dX = grad_X h,   dJ/dW = grad_W h (u held fixed),

here as torch.func transforms (a reverse pass for s, a forward-mode derivative of phi along u for h, a reverse
pass of h), which ``torch.compile`` (inductor) traces into one graph: the passes share their forward through the
network and the elementwise work is fused.  On the n = 100 MNIST victim (784-500-500-1, m = 200, bfloat16
products, two threads) the objective's value and gradients take 7.8-8.7 ms against 10.4-10.8 ms eager, the
compiled pass 5.6 ms of them (bench/RESULTS.md, "One compiled graph").
Compiling costs 10-30 s once per process, kind of network and shape; a compiler that fails falls back to the
eager passes for the rest of the run (:attr:`CompiledPass.failure` says why).

The prior R(X, M) (the box, the multiplier penalty, the total variation) is compiled apart
(:class:`CompiledPrior`): (R, dR/dX, dR/dM) by one reverse pass, in X's dtype (never under autocast).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Sequence

import torch
from torch.func import grad, grad_and_value

from .weighted_sum import weighted_directional

PhiOfTheta = Callable[[Sequence[torch.Tensor], torch.Tensor, torch.Tensor | None], torch.Tensor]


def weighted_sum_pass(phi: PhiOfTheta, outer, theta: Sequence[torch.Tensor], X: torch.Tensor, W: torch.Tensor,
                      labels: torch.Tensor | None, autocast: torch.dtype | None = None):
    """(F(s), dJ/dX, dJ/dW) for one chunk, by torch.func (the module docstring's equations): the function that
    :class:`CompiledPass` compiles, and an eager oracle for it.  ``autocast``: the dtype of the passes through phi
    (``torch.autocast``), s, F and u staying in X's dtype."""
    theta = tuple(theta)
    reduced = (torch.autocast(X.device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext())

    def total(th):
        return (phi(list(th), X, labels) * W).sum()

    with reduced:
        s = grad(total)(theta)
    s = [si.to(X.dtype) for si in s]
    value, u = outer.value_and_grad(s)

    def h(x, w):
        return weighted_directional(phi, theta, u, x, w, labels).sum()

    with reduced:
        gx, gw = grad(h, argnums=(0, 1))(X, W)
    return value, gx.to(X.dtype), gw.to(W.dtype)


def prior_pass(prior: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], X: torch.Tensor, M: torch.Tensor):
    """(R(X, M), dR/dX, dR/dM) by torch.func: the function :class:`CompiledPrior` compiles, and an eager oracle
    for it."""
    (gx, gm), value = grad_and_value(prior, argnums=(0, 1))(X, M)
    return value, gx, gm


class Compiled:
    """``fn`` compiled once by ``torch.compile`` (inductor, one whole graph: ``fullgraph``) and reused by every
    iteration's objective.  Where compiling or running the compiled graph raises, :meth:`__call__` returns None
    from then on and :attr:`failure` holds the reason (one line): the caller takes the eager passes (``instead``
    names them in that line).

    Every instance of a kind compiles the same Python function, so torch's compiled-code cache holds one entry per
    kind of network (instances of one kind share it) and shape (for the prior, also per value of the numbers its
    closure holds: tv, F(0), m0), up to ``torch._dynamo.config.recompile_limit`` (8) a process: past it, torch would
    run the function uncompiled without a word, and a run would say it ran compiled when it did not. Compiled with
    ``fullgraph``, hitting the limit raises instead; the cache is then emptied (``torch._dynamo.reset``: live
    instances recompile on their next call) and the call tried once more, so a process that builds many kinds of
    network (a sweep) keeps compiling, and any other failure is recorded, never hidden."""

    def __init__(self, fn: Callable, instead: str = "the eager passes") -> None:
        import torch._dynamo  # what torch.compile loads anyway; here for its exception and reset (slow to import)

        self.failure: str | None = None
        self._instead = instead  # what runs where the compiled graph fails
        self._fn = torch.compile(fn, fullgraph=True)

    def __call__(self, *args):
        if self.failure is not None:
            return None
        for attempt in (0, 1):
            try:
                return self._fn(*args)
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                if attempt:
                    self.failure = f"the compiler failed (its cache was full twice); {self._instead} ran instead"
                    return None
                torch._dynamo.reset()
            except Exception as e:  # noqa: BLE001 - any compiler failure (no C++ compiler, an unsupported op): eager
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                self.failure = f"the compiler failed ({first[:200]}); {self._instead} ran instead"
                return None


class CompiledPass(Compiled):
    """:func:`weighted_sum_pass` for fixed ``phi``, ``outer`` and ``autocast``, compiled (:class:`Compiled`)."""

    def __init__(self, phi: PhiOfTheta, outer, autocast: torch.dtype | None = None) -> None:
        super().__init__(functools.partial(weighted_sum_pass, phi, outer, autocast=autocast))

    def __call__(self, theta: Sequence[torch.Tensor], X: torch.Tensor, W: torch.Tensor,
                 labels: torch.Tensor | None):
        return super().__call__(list(theta), X, W, labels)


class CompiledPrior(Compiled):
    """:func:`prior_pass` for a fixed prior R(X, M), compiled (:class:`Compiled`): called with (X, M)."""

    def __init__(self, prior: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        super().__init__(functools.partial(prior_pass, prior), "the eager prior")

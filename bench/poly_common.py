"""What the polynomial-victim benchmarks share (bench/planted_blends.py, bench/growth.py, bench/sosp.py).

* :func:`exact_case`: an exact KKT point of a two-layer x^alpha network (``trainrecon exact-kkt``; J = 0 at the
  truth) for Gaussian data, the first data seed (seed, seed + 100, ...) whose construction exists;
* :func:`trained_case`: a network trained toward the KKT direction (``trainrecon train-poly``'s function; the
  truth's J > 0), its multipliers the non-negative least-squares fit of the KKT equation;
* both: the Haim attack with the exact power activation and the power-victim defaults (:meth:`Haim.adapt`) on the
  normalised victim, the lambda_min penalty off and the box inactive (the true samples and multipliers are
  whatever the KKT point has); the true multipliers at the attack's scale;
* :func:`descend`: the attack's own optimiser with stall detection; :func:`to_unit_margin` and :func:`errors`:
  the per-sample relative error after each candidate is rescaled to unit margin (the KKT term fixes a candidate
  only up to (x, lam) -> (c x, lam / c^alpha)).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

import numpy as np
import torch

from trainrecon.attacks.haim import Haim, HaimConfig
from trainrecon.attacks.normalisation import normalise
from trainrecon.attacks.payload import Payload
from trainrecon.config import save_json
from trainrecon.errors import TrainreconError
from trainrecon.identifiability.exact_kkt import build_exact_kkt, check_size
from trainrecon.identifiability.polynomial import PolyDataConfig, make_poly_data
from trainrecon.training.polynomial import PolyTrainConfig, poly_kkt_residual, poly_spec, train_polynomial
from trainrecon.models.victim import Victim
from trainrecon.objective.candidates import CandidateSet


@dataclass
class PolyCase:
    """A polynomial victim with its truth: samples X (n, d), labels y, multipliers lam at the attack's scale (the
    weights w_i = lam_i of the KKT equation: Haim's multipliers are m0 lam), the network (a, W, alpha)."""

    X: np.ndarray
    y: np.ndarray
    lam: np.ndarray
    a: np.ndarray
    W: np.ndarray
    alpha: int
    attack: Haim
    data_seed: int
    kind: str
    info: dict

    @property
    def n(self) -> int:
        return len(self.X)

    def truth(self, m0: int) -> CandidateSet:
        """The true samples and multipliers as a candidate set whose weights are M / m0."""
        return CandidateSet(torch.as_tensor(self.X), torch.as_tensor(self.lam * m0), torch.as_tensor(self.y), m0=m0)

    def loss(self, cands: CandidateSet, it: int = 0) -> float:
        return self.attack.objective(it, cands).value_and_grad(cands.x, cands.multipliers)[0]["total"]

    def score(self, x: np.ndarray, labels: np.ndarray, signed: bool = False) -> np.ndarray:
        """Per training sample: the relative error of the nearest candidate after rescaling to unit |margin|, up
        to sign (the KKT term fixes a candidate only up to (x, lam) -> (c x, lam / c^alpha) for any real c != 0:
        with the lambda_min penalty off, an odd alpha's candidate may sit at -x_t with a negative multiplier, an
        even alpha's at -x_t with the same one).  ``signed``: planted_blends' rule (c > 0 only: candidates with
        y f(x) <= 0 kept as they are, no sign flip)."""
        if signed:
            return errors(to_unit_margin(x, labels, self.a, self.W, self.alpha), self.X)
        return errors(to_unit_margin(x, labels, self.a, self.W, self.alpha, absolute=True), self.X, up_to_sign=True)


def _attack(a: np.ndarray, W: np.ndarray, alpha: int, override: dict | None) -> tuple[Haim, float]:
    spec = poly_spec(W.shape[1], len(a), alpha)
    payload = Payload.of(Victim(spec, [torch.as_tensor(W), torch.as_tensor(a)[None]], None), disclose_n=False)
    cfg, _ = Haim.adapt(HaimConfig(lambda_penalty=0.0, box=10.0), payload)
    cfg = dataclasses.replace(cfg, **(override or {}))
    attacked, rec = normalise(payload, cfg.normalise)
    return Haim(attacked, cfg), rec.get("multipliers_to_victim_scale", 1.0)


def exact_case(alpha: int, d: int, n: int, seed: int, override: dict | None = None) -> PolyCase:
    check_size(n, d, alpha)  # a construction too large is refused once, not once per data seed
    for data_seed in range(seed, seed + 1000, 100):  # a draw whose exact KKT point exists (recorded)
        V, y = make_poly_data(PolyDataConfig(kind="gaussian", n=n, d=d, seed=data_seed))
        try:
            p = build_exact_kkt(V, y, alpha, seed=seed)
            break
        except TrainreconError:
            continue
    else:
        raise TrainreconError(f"no exact KKT point for alpha {alpha}, d {d}, n {n} from seed {seed}")
    attack, to_victim = _attack(p.a, p.W, alpha, override)
    return PolyCase(p.X, p.y, p.lam / to_victim, p.a, p.W, alpha, attack, data_seed, "exact",
                    {"neurons": len(p.a)})


def trained_case(alpha: int, d: int, n: int, seed: int, steps: int = 5000, width: int = 50,
                 override: dict | None = None) -> PolyCase:
    """``trainrecon train-poly --alpha A --d D --n N --data gaussian --steps S --seed SEED``'s victim."""
    X, y = make_poly_data(PolyDataConfig(kind="gaussian", n=n, d=d, seed=seed))
    a, W, summary = train_polynomial(PolyTrainConfig(alpha=alpha, width=width, steps=steps, seed=seed),
                                     torch.as_tensor(X), torch.as_tensor(y), log=lambda *_: None)
    res = poly_kkt_residual(a, W, torch.as_tensor(X), torch.as_tensor(y), alpha)
    attack, to_victim = _attack(a.numpy(), W.numpy(), alpha, override)
    return PolyCase(X, y, np.asarray(res["lambdas"]) / to_victim, a.numpy(), W.numpy(), alpha, attack, seed, "trained",
                    {"kkt_residual": res["kkt_residual"], "n_active": res["n_active"],
                     "margins": (y * ((X @ W.numpy().T) ** alpha @ a.numpy())).tolist()})


def step(attack, cands: CandidateSet, it: int, opt_x, opt_m) -> float:
    """One step of the attack's optimiser on ``cands`` (in place); returns J before the step (not finite: no step)."""
    values, gx, gm = attack.objective(it, cands).value_and_grad(cands.x, cands.multipliers)
    if np.isfinite(values["total"]):
        cands.x = opt_x.step(cands.x, gx, cands.state_x)
        cands.multipliers = opt_m.step(cands.multipliers, gm, cands.state_m)
    return values["total"]


def run_grid(a, one) -> tuple[list[dict], str]:
    """(rows of ``one(alpha, d, seed)`` over a.alpha x a.d x a.seeds, saved after each into
    ``a.out / <tag>.json`` with the command line; the tag ``<exact|trained>_a.._d.._n..``)."""
    tag = f"{'trained' if a.trained else 'exact'}_a{'-'.join(map(str, a.alpha))}_d{'-'.join(map(str, a.d))}_n{a.n}"
    rows: list[dict] = []
    for alpha in a.alpha:
        for d in a.d:
            for seed in a.seeds:
                rows += one(alpha, d, seed)
                save_json(a.out / f"{tag}.json", {"rows": rows, "_command": "python " + " ".join(sys.argv),
                                                  "_args": json.loads(json.dumps(vars(a), default=str))})
    return rows, tag


def descend(attack, cands: CandidateSet, iterations: int, stall: float = 0.0, window: int = 200):
    """The attack's optimiser for up to ``iterations`` steps, stopped early when J's relative decrease over
    ``window`` steps falls below ``stall`` (0: never); returns (candidates, J history, iterations done)."""
    opt_x, opt_m = attack.optimisers()
    hist = []
    for it in range(iterations):
        hist.append(step(attack, cands, it, opt_x, opt_m))
        if not np.isfinite(hist[-1]):
            break
        if stall and it >= window and hist[-window - 1] - hist[-1] < stall * hist[-window - 1]:
            break
    return cands, hist, len(hist)


def errors(x: np.ndarray, truth: np.ndarray, up_to_sign: bool = False) -> np.ndarray:
    """Per training sample: min over candidates ||c - x_t|| / ||x_t|| (``up_to_sign``: min(||c - x_t||, ||c + x_t||))."""
    d = np.linalg.norm(x[:, None, :] - truth[None], axis=2)
    if up_to_sign:
        d = np.minimum(d, np.linalg.norm(x[:, None, :] + truth[None], axis=2))
    return d.min(0) / np.linalg.norm(truth, axis=1)


def to_unit_margin(x: np.ndarray, labels: np.ndarray, a: np.ndarray, W: np.ndarray, alpha: int,
                   absolute: bool = False) -> np.ndarray:
    """The KKT term fixes a candidate only up to (x, lam) -> (c x, lam / c^alpha); an exact KKT point's samples
    have margin y f(x) = 1, so rescale each candidate to it: x (y f(x))^(-1/alpha) where y f(x) > 0 (others kept;
    ``absolute``: to |y f(x)| = 1 wherever f(x) != 0, for scoring up to sign)."""
    f = ((x @ W.T) ** alpha) @ a
    marg = np.abs(labels * f) if absolute else labels * f
    scale = np.where(marg > 0, np.abs(marg) ** (-1.0 / alpha), 1.0)
    return x * scale[:, None]


def copy_set(c: CandidateSet) -> CandidateSet:
    """An independent copy (tensors and optimiser state cloned)."""
    return dataclasses.replace(c, x=c.x.clone(), multipliers=c.multipliers.clone(),
                               state_x={k: v.clone() for k, v in c.state_x.items()},
                               state_m={k: v.clone() for k, v in c.state_m.items()})

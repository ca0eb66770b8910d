"""The candidate set: everything an attack optimises, on one declared candidate axis (axis 0).

A :class:`CandidateSet` holds m candidates x (m, d), their multipliers (m,) or (m, K), their fixed labels
(m,) where the method has them, the optimiser state of x and of the multipliers (every tensor with a
leading axis of length m is per candidate; scalars such as Adam's step count are shared), and provenance:
a unique id per candidate, its parent's id (-1 for a candidate drawn at initialisation) and the run it
was born in.  ``m0``, the number of candidates at initialisation, fixes the weight normalisation
w = lambda / m0 for the whole run: a split halves its children's multipliers instead of rescaling everyone.
``restarts`` R > 1: the set is R blocks of m / R candidates in order, independent descents of one objective
(``attack.restarts``); :meth:`blocks` gives them, each with m0 / R.

Operations return new sets (nothing is modified in place): :meth:`take` (a subset, in a given order),
:meth:`split` (candidate j becomes x_j + eps v and x_j - eps v, each with half of j's multipliers and a copy
of its optimiser state), :meth:`concat` (candidate sets of several runs, for unions).  :meth:`tensors` and
:meth:`from_tensors` turn a set into named tensors and back, so a checkpoint saves and resumes it as one unit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

State = dict[str, torch.Tensor]


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    """(m, m) cosine similarities of the rows of x (m, d); a zero row has similarity 0 to everything but itself."""
    x = x.reshape(x.shape[0], -1)
    norms = x.norm(dim=1, keepdim=True)
    u = x / norms.clamp_min(torch.finfo(x.dtype).tiny)
    c = u @ u.T
    c.fill_diagonal_(1.0)
    return c


def _rows(state: State, m: int, index: torch.Tensor) -> State:
    """Index every per-candidate tensor of an optimiser state; shared scalars are kept."""
    return {k: (v[index] if v.ndim and v.shape[0] == m else v.clone()) for k, v in state.items()}


@dataclass
class CandidateSet:
    """The m candidates an attack optimises, with their optimiser state and provenance (see the module
    docstring): x (m, d) in the victim's centred input space, multipliers (m,) or (m, K), labels (m,) or None."""

    x: torch.Tensor
    multipliers: torch.Tensor
    labels: torch.Tensor | None = None
    state_x: State = field(default_factory=dict)
    state_m: State = field(default_factory=dict)
    ids: torch.Tensor | None = None
    parents: torch.Tensor | None = None
    m0: int = 0
    runs: list[str] = field(default_factory=lambda: [""])
    run_of: torch.Tensor | None = None  # index into ``runs`` per candidate
    restarts: int = 1

    def __post_init__(self) -> None:
        m = self.x.shape[0]
        if self.multipliers.shape[0] != m or (self.labels is not None and self.labels.shape[0] != m):
            raise ValueError(f"candidate set: x has {m} rows, multipliers {self.multipliers.shape[0]}, labels "
                             f"{None if self.labels is None else self.labels.shape[0]}")
        if self.ids is None:
            self.ids = torch.arange(m)
        if self.parents is None:
            self.parents = torch.full((m,), -1, dtype=torch.long)
        if self.run_of is None:
            self.run_of = torch.zeros(m, dtype=torch.long)
        if not self.m0:
            self.m0 = m
        if self.restarts < 1 or m % self.restarts or self.m0 % self.restarts:
            raise ValueError(f"candidate set: {m} candidates (m0 {self.m0}) are not {self.restarts} equal blocks")

    def blocks(self) -> list["CandidateSet"]:
        """The ``restarts`` blocks of the set, in order, each a set of its own (m0 / R, one restart) whose rows are
        views of this set's, to read (the objective takes them every iteration: no copy)."""
        per = self.m // self.restarts
        return [dataclasses.replace(self.take(slice(r * per, (r + 1) * per)), m0=self.m0 // self.restarts)
                for r in range(self.restarts)]

    @property
    def m(self) -> int:
        return self.x.shape[0]

    def take(self, index) -> "CandidateSet":
        """The candidates at ``index`` (indices, in that order: copies; or a ``slice``: views of this set's rows,
        its optimiser state included, for reading, since the optimiser updates its state in place)."""
        idx = index if isinstance(index, slice) else torch.as_tensor(index, dtype=torch.long).reshape(-1)
        m = self.m
        return dataclasses.replace(
            self, restarts=1, x=self.x[idx], multipliers=self.multipliers[idx],
            labels=None if self.labels is None else self.labels[idx],
            state_x=_rows(self.state_x, m, idx), state_m=_rows(self.state_m, m, idx),
            ids=self.ids[idx], parents=self.parents[idx], run_of=self.run_of[idx], runs=list(self.runs))

    def split(self, j: int, direction: torch.Tensor, eps: float) -> "CandidateSet":
        """Candidate j becomes (x_j + eps v, w_j / 2) at position j and (x_j - eps v, w_j / 2) at the end."""
        v = direction.reshape(-1).to(self.x)
        out = self.take(list(range(self.m)) + [j])
        x = out.x.clone()
        x[j] = self.x[j] + eps * v
        x[-1] = self.x[j] - eps * v
        mult = out.multipliers.clone()
        mult[j] = mult[-1] = self.multipliers[j] / 2
        new = int(self.ids.max()) + 1 if self.m else 0
        ids, parents = out.ids.clone(), out.parents.clone()
        ids[j], ids[-1] = new, new + 1
        parents[j] = parents[-1] = self.ids[j]
        return dataclasses.replace(out, x=x, multipliers=mult, ids=ids, parents=parents)

    @staticmethod
    def concat(sets: list["CandidateSet"]) -> "CandidateSet":
        """The candidates of several sets, ids renumbered, runs and parents kept; optimiser state dropped
        (sets of different runs do not share an optimiser).  m0 is the total."""
        if not sets:
            raise ValueError("concat: no candidate sets")
        runs: list[str] = []
        run_of, ids, parents, offset = [], [], [], 0
        for s in sets:
            for name in s.runs:
                if name not in runs:
                    runs.append(name)
            remap = {r: runs.index(name) for r, name in enumerate(s.runs)}
            run_of.append(torch.tensor([remap[int(r)] for r in s.run_of], dtype=torch.long))
            ids.append(s.ids + offset)
            parents.append(torch.where(s.parents >= 0, s.parents + offset, s.parents))
            offset += int(s.ids.max()) + 1 if s.m else 0
        labels = None if any(s.labels is None for s in sets) else torch.cat([s.labels for s in sets])
        return CandidateSet(torch.cat([s.x for s in sets]), torch.cat([s.multipliers for s in sets]), labels, {}, {},
                            torch.cat(ids), torch.cat(parents), sum(s.m for s in sets), runs, torch.cat(run_of))

    def to(self, device, dtype) -> "CandidateSet":
        conv = lambda st: {k: (v.to(device) if k == "t" else v.to(device=device, dtype=dtype)) for k, v in st.items()}  # noqa: E731
        return dataclasses.replace(
            self, x=self.x.to(device=device, dtype=dtype), multipliers=self.multipliers.to(device=device, dtype=dtype),
            labels=None if self.labels is None else self.labels.to(device), state_x=conv(self.state_x),
            state_m=conv(self.state_m))

    def tensors(self) -> dict[str, torch.Tensor]:
        """Named tensors for a checkpoint (see :meth:`from_tensors`)."""
        out = {"x": self.x, "multipliers": self.multipliers, "ids": self.ids, "parents": self.parents,
               "run_of": self.run_of, **{f"opt_x.{k}": v for k, v in self.state_x.items()},
               **{f"opt_m.{k}": v for k, v in self.state_m.items()}}
        if self.labels is not None:
            out["labels"] = self.labels
        return out

    def record(self) -> dict[str, Any]:
        """The JSON part of a checkpoint: m0, the run names and the number of restarts."""
        return {"m0": self.m0, "runs": self.runs, "restarts": self.restarts}

    @staticmethod
    def from_tensors(t: dict[str, torch.Tensor], record: dict[str, Any] | None = None,
                     labels: torch.Tensor | None = None) -> "CandidateSet":
        """Inverse of :meth:`tensors`.  Checkpoints of earlier versions hold only x, multipliers and optimiser
        state: their provenance starts fresh, their labels come from ``labels`` and m0 is their m."""
        record = record or {}
        sx = {k[len("opt_x."):]: v for k, v in t.items() if k.startswith("opt_x.")}
        sm = {k[len("opt_m."):]: v for k, v in t.items() if k.startswith("opt_m.")}
        return CandidateSet(t["x"], t["multipliers"], t.get("labels", labels), sx, sm, t.get("ids"), t.get("parents"),
                            int(record.get("m0", 0)), list(record.get("runs", [""])), t.get("run_of"),
                            int(record.get("restarts", 1)))

"""The owner's audit: every threat level the owner can state, attacked with its default, scored with every control.

``trainrecon audit VICTIM --out DIR`` runs, for each threat level the victim folder supports (the weights; plus
theta_0; plus the training recipe: :data:`~trainrecon.models.recipe.THREAT_LEVELS`), the attack that won on the
bench for that level (:func:`trainrecon.attacks.choice.default_attack`) for at most ``minutes`` of wall-clock,
evaluates it against the training set with every control (:func:`.evaluation.evaluate_run`, optionally the
truth-start control), and writes

* ``DIR/<level>/run/`` (the attack's run folder) and ``DIR/<level>/eval/`` (its metrics.json and report.html);
* ``DIR/audit.json``: per level, what was given, the method and why, the headline with its controls, the
  threshold-free view and the verdict sentence;
* ``DIR/report.html``: the verdict per level on one page, each linking to its level's full report.

The attacker is told n (m = 2n candidates): from the victim's train.json, else the number of images in
``--truth``.  Rerunning the same command resumes the attack runs and redoes the evaluations; another victim or other settings
in the same folder are refused.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import dataclasses

from ..api import reconstruct
from ..attacks.choice import default_attack
from ..attacks.method import method_named
from ..attacks.payload import payload_from_folder
from ..atomic import write_text
from ..audit_report import GIVEN, verdict_kind
from ..config import from_dict, save_json
from ..errors import TrainreconError
from ..models.recipe import THREAT_LEVELS
from ..models.victim import load_victim
from ..provenance import OutputFolder, refuse_other_record
from .evaluation import Candidates, evaluate_run, load_truth

#: everything ``audit`` writes into its folder
AUDIT_FILES = ("audit.json", "report.html", *THREAT_LEVELS, "*.tmp")


def audit_victim(victim_dir: str | Path, out: str | Path, data_dir: str | Path | None = None,
                 truth: str | Path | None = None, heldout: str | Path | None = None, minutes: float = 10.0,
                 levels: list[str] | None = None, truth_start: bool = False, device: str = "cpu",
                 log=print) -> dict[str, Any]:
    """Run the audit of the module docstring; returns audit.json's content."""
    if not minutes > 0:
        raise TrainreconError(f"--minutes: must be positive, got {minutes}")
    payload = payload_from_folder(victim_dir)
    if payload.n_train is None and truth is not None:  # the owner knows n: the attacks are told it (m = 2n)
        payload = dataclasses.replace(payload, n_train=len(load_truth(load_victim(victim_dir), data_dir, truth,
                                                                      None)[0]))
    supported = list(THREAT_LEVELS[:THREAT_LEVELS.index(payload.level) + 1])
    levels = supported if not levels else levels
    for level in levels:
        payload.at_level(level, "--given")  # unknown or beyond the victim: refused before any work
    plans = {level: default_attack(payload, level) for level in levels}
    out = Path(out)
    identity = {"victim": payload.fingerprint(), "n_disclosed": payload.n_train, "levels": levels, "minutes": minutes, "truth_start": truth_start,
                "methods": {k: {"method": v[0], "fields": v[1]} for k, v in plans.items()}}
    with OutputFolder(out, "audit", AUDIT_FILES).claim():
        refuse_other_record(out / "audit.json", ("identity",), identity,
                            f"{out}: holds an audit of other inputs ({{diff}}); choose a new folder")
        rows = []
        for level, (name, fields, reason) in plans.items():
            log(f"[{level}] given {GIVEN[level]}: {name} ({reason})")
            cfg = from_dict(method_named(name).Config, {**fields, "max_seconds": 60.0 * minutes}, f"audit.{level}")
            run = out / level / "run"
            rec = reconstruct(payload, cfg, run, device, resume=True, log=log)
            metrics = evaluate_run(victim_dir, [Candidates.of(rec, run / "candidates.npz")], out / level / "eval",
                                   data_dir, truth, heldout, log=log, truth_start=truth_start)
            rows.append(level_row(level, name, reason, rec.stats, metrics))
        result = {"identity": identity, "victim": str(victim_dir), "levels": rows}
        save_json(out / "audit.json", result)
        write_text(out / "report.html", render_audit(result))
    return result


def level_row(level: str, method: str, reason: str, stats: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One level's line of the audit: what was given, the attack, its headline and controls, its verdict."""
    head = metrics["headline"]
    roc = ((metrics.get("exposure") or {}).get("roc") or {})
    start = metrics.get("truth_start")
    return {"level": level, "given": GIVEN[level], "method": method, "why": reason,
            "iterations": stats["iterations_done"], "seconds": stats["seconds"],
            "seconds_per_iteration": stats["seconds_per_iteration"], "n": head.get("n"),
            "recovered": head.get("recovered"), "controls": head.get("controls"),
            "negative_controls_max": head.get("negative_controls_max"), "informative": head.get("informative"),
            "auc": roc.get("auc"), "tpr_at_1pct_fpr": (roc.get("tpr_at_fpr") or {}).get("0.01"),
            "truth_start": None if not start else {"kept": start["kept"], "heldout_kept": start["heldout_kept"],
                                                   "reading": start["reading"]},
            "verdict_kind": verdict_kind(metrics), "verdict": metrics["audit"]["verdict"],
            "report": f"{level}/eval/report.html"}


def render_audit(result: dict[str, Any]) -> str:
    """report.html of the audit: the verdict per threat level, each level's controls, links to the full reports."""
    rows = []
    for r in result["levels"]:
        c = r["controls"] or {}
        auc = "n/a" if r["auc"] is None else f"{r['auc']:.3f}"
        rows.append(
            f'<tr class="{r["verdict_kind"]}"><td><b>{html.escape(r["level"])}</b><br>{html.escape(r["given"])}</td>'
            f'<td>{html.escape(r["method"])}<br><span class="note">{html.escape(r["why"])}</span></td>'
            f'<td><b>{r["recovered"]}</b> of {r["n"]}</td><td>held-out {c.get("heldout")}, nulls at most '
            f'{r["negative_controls_max"]}, true images {c.get("positive")}</td>'
            f'<td>{auc}</td>'
            f'<td>{html.escape(r["verdict"])}</td><td><a href="{html.escape(r["report"])}">full report</a></td></tr>')
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>trainrecon audit</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ccc;padding:6px;"
            "vertical-align:top}table{border-collapse:collapse}.leak{background:#fde2e2}.noleak{background:#e6f4e6}"
            ".noclaim{background:#f3f3f3}.note{color:#555;font-size:90%}</style></head><body>"
            f"<h1>Training-data leakage audit of {html.escape(str(result['victim']))}</h1>"
            "<p>Each threat level gives the attacker more of what the model's owner knows: the trained weights; plus the "
            "initial weights; plus the training recipe. Each row is the attack that won on trainrecon's bench for that "
            "level, run for at most "
            f"{result['identity']['minutes']:g} minutes, scored by the honest headline: a training image counts as "
            "recovered when its one-to-one candidate is more similar to it than to any image the model never saw and "
            "than any guess made without the attack.</p>"
            "<table><tr><th>threat level</th><th>attack</th><th>recovered</th><th>controls</th><th>AUC</th>"
            "<th>verdict</th><th></th></tr>" + "".join(rows) + "</table></body></html>")


__all__ = ["AUDIT_FILES", "audit_victim", "level_row", "render_audit"]

"""The audit report: one self-contained HTML page (report.html) a model owner can hand over.

:func:`audit_record` gathers what the page states beyond the scores (the verdict sentence, the threat model, the
victim's fingerprint, configs, versions, timings) as plain data, which the pipeline stores in metrics.json under
``audit``; :func:`render_report` turns a :class:`~trainrecon.metrics.scoring.Score` whose ``metrics`` hold that
record, and the attack runs' loss histories, into HTML.  Every number on the page is read from ``metrics``, so
the page and metrics.json agree by construction.  Pictures are PNGs embedded as base64 ``data:`` URIs; the page
has no script and loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .metrics.scoring import Score
from .models.victim import architecture_from_dict
from .pictures import evidence_plot, l2_curve_plot, loss_curve_plot, roc_plot, thumbnail_png

FINGERPRINT = "weights fingerprint (SHA-256)"  # the victim record's key (audit.victim)
NULL_NAMES = {"null_mean": "the input mean alone (what the attacker is given, no attack)",
              "null_noise": "random noise at the candidates' scale",
              "null_heldout_mean": "the mean of another subset of images",
              "null_typical": "images of the task the model never saw, drawn from the held-out pool and each compared "
                              "with the rest of it (what luck gives someone who knows only the kind of data)",
              "shadow": "the same attack on a shadow model trained on other images"}


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries the scores depend on."""
    import matplotlib  # here: matplotlib and scikit-learn cost every command a second; only a report needs them
    import sklearn

    return {"trainrecon": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "matplotlib": matplotlib.__version__}


def chance_bar(count: int, n: int) -> float:
    """What a control that counted ``count`` of n could count on another draw by luck, at about 2 % one-sided:
    count + 2 sqrt(2 count (1 - count / n)), two standard deviations of the difference of two binomial counts
    of rate count / n.  A control at 0 (blurred guesses, noise) has no spread: 0."""
    return count + 2.0 * math.sqrt(max(0.0, 2.0 * count * (1.0 - count / n))) if n else float(count)


def leak_bar(head: dict[str, Any]) -> float:
    """The count the attack must exceed to show a leak: the largest :func:`chance_bar` over the negative controls
    and the held-out control (typical images reach a fifth of an MNIST training set by luck, and a second draw of
    them as much more or less)."""
    return max(chance_bar(head["negative_controls_max"], head["n"]), chance_bar(head["controls"]["heldout"], head["n"]))


def verdict_kind(metrics: dict[str, Any]) -> str:
    """``leak`` (an informative rule, and the attack recovers more than every control could by luck,
    :func:`leak_bar`), ``noleak`` (informative, not clear of the controls) or ``noclaim`` (no held-out images, or
    an uninformative rule)."""
    head = metrics["headline"]
    if head.get("recovered") is None or not head.get("informative"):
        return "noclaim"
    return "leak" if head["recovered"] > leak_bar(head) else "noleak"


#: what each threat level gave the attacker, as the verdict says it
GIVEN = {"weights": "the weights alone", "init": "the weights and the initial weights",
         "recipe": "the weights, the initial weights and the training recipe"}


def given_phrase(threat: list[dict[str, Any]]) -> str:
    """What the attack runs were given, in words, from their config.json ``payload`` records (runs recorded before
    threat levels existed were given the weights, and theta_0 where ``initial_weights`` says so)."""
    levels = []
    for t in threat:
        level = t.get("threat_level") or ("init" if t.get("initial_weights") else "weights")
        if level not in levels:
            levels.append(level)
    if not levels:
        return GIVEN["weights"]
    if len(levels) == 1:
        return GIVEN.get(levels[0], levels[0])
    return "what the attack runs were given (" + "; ".join(GIVEN.get(v, v) for v in levels) + ")"


def verdict(metrics: dict[str, Any], given: str = GIVEN["weights"]) -> str:
    """The headline as one sentence a reader who has not read the papers can act on, with its controls;
    ``given``: what the attacker had, in words (:func:`given_phrase`)."""
    head = metrics["headline"]
    n = head["n"]
    kind = verdict_kind(metrics)
    if head.get("recovered") is None:
        return f"No verdict: {head.get('reason', 'the rule could not be applied')}."
    c = head["controls"]
    rec, worst, pos = head["recovered"], head["negative_controls_max"], c["positive"]
    controls = (f"By the same rule, guesses made without the attack recover at most {worst}, "
                f"images the model never saw are \"recovered\" {c['heldout']} times, and the true training images "
                f"{pos} of {n}.")
    if kind == "noclaim":
        return (f"No verdict for this data: the test cannot tell a leak from chance here, since even the true "
                f"training images ({pos} of {n}) do not stand clear of the controls (best {worst}). "
                f"The attack's count was {rec} of {n}.")
    pool = head["heldout_pool"]
    if kind == "leak":
        return (f"The training data leaks: {rec} of the {n} training images were reconstructed from {given}, each "
                f"more similar to its reconstruction than to any of {pool} images the model never saw "
                f"and than any guess made without the attack. {controls}")
    start = metrics.get("truth_start")
    unseen = "" if not start or start.get("heldout_kept") is None else \
        f" and, started at {start['n']} images the model never saw, {start['heldout_kept']} of those"
    control = "" if not start else (f" Started at the training images themselves, the attack keeps {start['kept']} "
                                    f"of {start['n']}{unseen} ({start['iterations']} iterations): {start['reading']}.")
    bar = leak_bar(head)
    clear = ("no more than the controls" if bar == max(worst, c["heldout"]) else
             f"not clear of what the controls could reach by luck (up to about {bar:.0f})")
    return (f"No leak shown: the attack, given {given}, recovered {rec} of {n} training images, {clear}. "
            f"{controls}{control}")


def audit_record(metrics: dict[str, Any], victim: dict[str, Any], runs: list[dict[str, Any]], inputs: dict[str, Any],
                 timings: dict[str, float]) -> dict[str, Any]:
    """metrics.json's ``audit``: the verdict sentence, the victim's fingerprint (``victim``), what each attack
    run was given and its config (``runs``: name, config.json's ``payload``, method, attack config, seconds,
    iterations), whether every run attacked these very weights (``attacked_this_victim``: their fingerprints
    agree; None when unknown), the evaluation's inputs, versions and timings."""
    threat = [r.get("payload") for r in runs if r.get("payload")]
    mine = victim.get(FINGERPRINT)
    same = None if not threat or mine is None else all(t.get("weights") == mine for t in threat)
    return {"verdict": verdict(metrics, given_phrase(threat)), "victim": victim,
            "threat_model": threat[0] if threat else None,
            "attacked_this_victim": same, "runs": runs, "inputs": inputs, "versions": versions(), "timings": timings,
            "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# --- rendering ---------------------------------------------------------------------------------------------------

def architecture_summary(arch: Any) -> str:
    """A recorded architecture (config.json's ``payload.architecture``: model.json's fields) in one line, for any
    kind of network: the architecture interface's own summary (:meth:`describe`)."""
    try:
        spec = architecture_from_dict(arch, "architecture")
    except Exception:  # noqa: BLE001 - a record this version cannot read is shown as it is
        return "as recorded" if not arch else html.escape(str(arch))[:200]
    return spec.describe() + ("; " + ", ".join(sorted(spec.activations())) if spec.activations() else "")


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(draw: Callable[[io.BytesIO], Any]) -> str | None:
    """A picture drawn into memory as a data URI (None when ``draw`` returns False: nothing to draw)."""
    buf = io.BytesIO()
    if draw(buf) is False:
        return None
    return _uri(buf.getvalue())


def _img(uri: str | None, alt: str, cls: str = "fig") -> str:
    return "" if uri is None else f'<img class="{cls}" src="{uri}" alt="{html.escape(alt)}">'


def fmt(v: Any, digits: int = 3) -> str:
    """A number as the page prints it (the browser test formats metrics.json's numbers the same way)."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "n/a" if not np.isfinite(v) else f"{float(v):.{digits}f}"
    return html.escape(str(v))


class Raw(str):
    """A table cell that is HTML already (everything else is escaped)."""


def _table(rows: list[list[Any]], head: list[str] | None = None, cls: str = "",
           row_classes: list[str] | None = None) -> str:
    out = [f'<table class="{cls}">']
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for k, r in enumerate(rows):
        rc = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        out.append(f"<tr{rc}>" + "".join(f"<td>{c if isinstance(c, Raw) else fmt(c)}</td>" for c in r) + "</tr>")
    return "\n".join(out + ["</table>"])


def _kv(d: dict[str, Any]) -> str:
    return _table([[str(k), Raw(_pre(v)) if isinstance(v, (dict, list)) else v] for k, v in d.items()], cls="kv")


def _pre(obj: Any) -> str:
    if isinstance(obj, dict):
        text = "\n".join(f"{k}: {json.dumps(v, default=str)}" for k, v in obj.items())
    else:
        text = json.dumps(obj, default=str)
    return "<pre>" + html.escape(text) + "</pre>"


MAX_REST = 200  # pairs shown in the gallery of the images not recovered

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.verdict{padding:1em 1.2em;border-radius:6px;font-size:1.1em}
.leak{background:#fde8e8;border-left:6px solid #c0392b}.noleak{background:#e8f6ec;border-left:6px solid #27ae60}
.noclaim{background:#f0f0f0;border-left:6px solid #888}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;vertical-align:top}th{background:#f6f6f6}
table.kv td:first-child{font-weight:600;white-space:nowrap}
img.fig{max-width:100%;display:block;margin:.6em 0}img.thumb{width:40px;height:40px;image-rendering:pixelated;
border:1px solid #ccc}
tr.rec td{background:#eef9f0}pre{background:#f8f8f8;padding:.5em;font-size:.85em;margin:0;white-space:pre-wrap;
overflow-wrap:anywhere}
.note{color:#555;font-size:.92em}
.gallery{display:flex;flex-wrap:wrap;gap:6px}figure.pair{margin:0;padding:3px;border:2px solid #ddd;text-align:center;
font-size:.8em}figure.pair.rec{border-color:#27ae60}
"""


def render_report(result: Score, histories: dict[str, list[dict]] | None = None, title: str = "",
                  pictures: dict[str, bytes] | None = None) -> str:
    """report.html for ``result`` (its ``metrics`` holding ``audit``, see :func:`audit_record`) and the attack
    runs' loss histories (name -> loss.json's ``history``).  ``pictures``: PNGs already drawn for the same
    result (``evidence``, ``l2_curve``), embedded instead of drawn again."""
    pictures = pictures or {}
    m, head = result.metrics, result.headline
    audit = m.get("audit") or {}
    n = head["n"]
    exp = m.get("exposure")
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title or 'trainrecon audit')}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Training-data leakage audit{': ' + html.escape(title) if title else ''}</h1>",
             f"<p class=\"note\">Written by trainrecon {fmt(audit.get('versions', {}).get('trainrecon'))} on "
             f"{fmt(audit.get('written'))}. This report asks one question: can the training images be reconstructed "
             "from the model's weights alone? An attack produces candidate images; each training image is paired with "
             "one candidate, and counts as <b>recovered</b> only when the pair is closer than anything the attack "
             "could have produced without seeing the training data.</p>"]

    # verdict and controls
    rec = head.get("recovered")
    parts.append(f'<h2>Verdict</h2><div class="verdict {verdict_kind(m)}" id="verdict">'
                 f'{html.escape(audit.get("verdict") or verdict(m))}</div>')
    if rec is not None:
        c = head["controls"]
        rows = [[Raw("<b>the attack</b>"), "candidates reconstructed from the weights", Raw(f"<b>{rec}</b> of {n}")]]
        rows += [[k, NULL_NAMES.get(k, "a further set of guesses made without the attack"), f"{v} of {n}"]
                 for k, v in c.items() if k not in ("heldout", "positive")]
        rows += [["heldout", f"the attack's candidates against {min(n, head['heldout_pool'])} images the model never "
                  "saw, each against the training images and the other unseen ones (the rule with the two sets' roles "
                  "swapped: how often it fires by chance)", f"{c['heldout']} of {min(n, head['heldout_pool'])}"],
                 ["positive", "the true training images used as candidates (what a perfect attack scores)",
                  f"{c['positive']} of {n}"]]
        parts.append(_table(rows, ["set", "what it is", "recovered by the same rule"]))
        parts.append(f"<p class=\"note\">Rule: {html.escape(head['rule'])}; similarity: {html.escape(head['similarity'])}"
                     f", threshold {fmt(head['threshold'], 2)}; preprocessing: {html.escape(head['preprocessing'])}. "
                     f"The test is informative when the positive control beats every negative control by at least "
                     f"n/2 ({fmt(head['informative'])}).</p>")

    # threat model and victim
    parts.append("<h2>What the attacker was given</h2>")
    tm = audit.get("threat_model")
    if tm:
        recipe = tm.get("recipe")
        parts.append(_kv({"threat level": tm.get("threat_level") or "weights (recorded before threat levels)",
                          "architecture and trained weights": f"yes ({architecture_summary(tm.get('architecture'))})",
                          "weights fingerprint (SHA-256)": tm.get("weights"),
                          "input mean (the preprocessing's centring image)": tm.get("input_mean"),
                          "initial weights (before training)": tm.get("initial_weights"),
                          "training recipe": (", ".join(f"{k} {v}" for k, v in recipe.items() if v not in (None, 0, 0.0, False))
                                              if isinstance(recipe, dict) else recipe or "not given"),
                          "number of training images": tm.get("n_train"),
                          "training images, labels or indices": "never given"}))
        if audit.get("attacked_this_victim") is False:
            parts.append('<p class="verdict noclaim">Warning: the attack run(s) were made on weights whose fingerprint '
                         "differs from the audited model's.</p>")
    else:
        parts.append("<p>No attack record (config.json) was found beside the candidate files: the candidates' origin "
                     "is not known to this report.</p>")
    parts.append("<h3>The model audited (victim fingerprint)</h3>" + _kv(audit.get("victim") or {}))

    # pairs: an HTML gallery of per-image thumbnails (the same pictures as the per-image table's)
    p = result.pairs.get("hungarian")
    thumbs: dict[int, str] = {}
    if p is not None and exp:
        for e in exp["images"]:
            pos = e["position"]
            thumbs[pos] = (_img(_uri(thumbnail_png(p["train"][pos])), f"training image {pos}", "thumb") +
                           _img(_uri(thumbnail_png(p["matched"][pos])), f"candidate {e['candidate']}", "thumb"))
    parts.append("<h2>Recovered pairs</h2>")
    if thumbs:
        kind = head["similarity"].split(" (")[0]
        parts.append(f"<p class=\"note\">Each pair: the training image, then its candidate; below them the "
                     f"{html.escape(kind)} between them, most similar first.</p>")
        for what, group in (("recovered", [e for e in exp["images"] if e["recovered"]]),
                            ("not recovered", [e for e in exp["images"] if not e["recovered"]])):
            if not group:
                parts.append(f"<h3>{what.capitalize()}: none of {n}</h3>")
                continue
            group = sorted(group, key=lambda e: -(e["similarity"] if e["similarity"] is not None else -9))
            shown_ = group if what == "recovered" else group[:MAX_REST]
            cls = "pair rec" if what == "recovered" else "pair"
            parts.append(f"<h3>{what.capitalize()}: {len(group)} of {n}</h3><div class=\"gallery\">" + "".join(
                f'<figure class="{cls}">{thumbs[e["position"]]}<figcaption>{fmt(e["similarity"], 2)}</figcaption>'
                "</figure>" for e in shown_) + "</div>")
            if len(shown_) < len(group):
                parts.append(f"<p class=\"note\">The {len(shown_)} most similar of {len(group)} shown; every image is "
                             "in the per-image table.</p>")
    else:
        parts.append("<p>No per-image pairing (no held-out images to score against).</p>")

    # threshold-free view
    if exp:
        roc = exp["roc"]
        parts.append("<h2>Threshold-free view: can the attack tell training images from unseen ones?</h2>")
        parts.append(f"<p>Each image gets an <b>exposure</b> score: its similarity to its own candidate minus the best "
                     f"similarity of that candidate to any held-out image. The curve ranks {roc['n_positive']} training "
                     f"images against {roc['n_negative']} held-out images the model never saw by that score. "
                     "AUC 0.5 is chance; the field reads attacks at low false-positive rates.</p>")
        parts.append(_table([["AUC", roc["auc"]], ["TPR at 1 % FPR", roc["tpr_at_fpr"].get("0.01")],
                             ["TPR at 0.1 % FPR", roc["tpr_at_fpr"].get("0.001")],
                             ["smallest nonzero FPR with these negatives", roc["min_nonzero_fpr"]]],
                            ["threshold-free figure", "value"], cls="kv"))
        if roc["auc"] is not None:
            parts.append(_img(_png(lambda b: roc_plot(roc["fpr"], roc["tpr"], roc["auc"], b)), "ROC curve"))

    # evidence
    parts.append("<h2>Evidence distributions</h2><p>For each set of candidates, the fraction of images (vertical) "
                 "whose similarity to their matched candidate is at most the value on the horizontal axis. A leak "
                 "shows as the attack's curve for training images lying to the right of the held-out and null "
                 "curves.</p>")
    if result.pairs["headline"]["similarities"]:
        uri = _uri(pictures["evidence"]) if "evidence" in pictures else _png(lambda b: evidence_plot(result.pairs, m, b))
        parts.append(_img(uri, "evidence distributions"))
    loo = m["protocols"].get("loo_greedy", {})
    if loo.get("l2_curve"):
        parts.append("<p>Loo et al.'s reconstruction curve (greedy one-to-one L2 distances; lower is closer):</p>" +
                     _img(_uri(pictures["l2_curve"]) if "l2_curve" in pictures else
                          _png(lambda b: l2_curve_plot(loo["l2_curve"], loo.get("l2_curve_control"), b)), "L2 curve"))

    # loss curve
    parts.append("<h2>The attack's loss curve</h2>")
    uri = _png(lambda b: loss_curve_plot(histories or {}, b))
    parts.append(_img(uri, "loss curve") if uri else "<p>No loss history was found beside the candidate files.</p>")

    # per-image table
    if exp:
        parts.append("<h2>Per-image exposure, most exposed first</h2><p class=\"note\">training index: the image's "
                     "index in its dataset split (its row in the training file when that is not known); margin over "
                     "nulls: similarity minus the best any guess without the attack reaches for this image.</p>")
        rows = []
        for rank, e in enumerate(exp["images"], 1):
            pos = e["position"]
            rows.append((e["recovered"], [rank, e["train_index"] if e["train_index"] is not None else pos,
                                          Raw(thumbs.get(pos, "")),
                                          e["similarity"], e["heldout_best"], e["margin_over_nulls"], e["exposure"],
                                          "yes" if e["recovered"] else "no"]))
        tab = _table([r for _, r in rows], ["rank", "training index", "image | candidate", "similarity to its candidate",
                                             "best similarity to a held-out image", "margin over the nulls",
                                             "exposure", "recovered"], cls="images",
                     row_classes=["rec" if is_rec else "" for is_rec, _ in rows])
        parts.append(tab)

    # field protocols
    parts.append("<h2>The field's protocols (for comparison with papers, not a claim)</h2>")
    prow = []
    for name, e in m["protocols"].items():
        ctrl = e.get("control") or {}
        prow.append([name, e["ssim_paper"].get("count_gt_0.4"), (ctrl.get("ssim_paper") or {}).get("count_gt_0.4"),
                     e["ssim_classic"].get("count_gt_0.4"), (ctrl.get("ssim_classic") or {}).get("count_gt_0.4"),
                     ", ".join(f"{k.removeprefix('ssim_')}: {fmt(v)}" for k, v in (e.get("informative") or {}).items())])
    parts.append(_table(prow, ["protocol", "paper SSIM > 0.4", "held-out", "classic SSIM > 0.4", "held-out",
                               "informative"]))
    parts.append("<h3>The papers' continuous measures, with the same controls</h3>")
    parts.append(_table([[r["protocol"], f"{r['measure']} ({r['closer']}: closer)", fmt(r["attack"]), fmt(r["heldout"]),
                          fmt(r["nulls_nearest"]), fmt(r["true_images"])] for r in m.get("paper_measures") or []],
                        ["protocol", "measure", "attack", "held-out control", "nearest null set", "true images"]))

    # config, versions, timings
    parts.append("<h2>Configuration, versions and timings</h2>")
    parts.append("<h3>Timings (seconds)</h3>" + _kv(audit.get("timings") or {}))
    parts.append("<h3>Versions</h3>" + _kv(audit.get("versions") or {}))
    parts.append("<h3>Evaluation inputs</h3>" + _kv(audit.get("inputs") or {}))
    for r in audit.get("runs") or []:
        parts.append(f"<h3>Attack run {html.escape(str(r.get('name')))}</h3>" +
                     _kv({k: v for k, v in r.items() if k not in ("name", "payload")}))
    parts.append("</body></html>")
    return "\n".join(parts)

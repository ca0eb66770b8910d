"""The audit report and the numbers behind it: per-image exposure against a dense float64 oracle, the ROC / TPR
figures recomputed from the per-image scores, report.html written by evaluate / run / union, self-contained,
and rendered in headless Chromium (no console errors, every picture loaded, the headline numbers on the page)."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import trainrecon
from headless import chromium, render
from trainrecon.audit_report import fmt, render_report
from trainrecon.metrics.headline import one_to_one, shown
from trainrecon.metrics.ssim import ssim_cross, ssim_kind
from trainrecon.models.user_weights import import_victim

CLI = [sys.executable, "-c", "from trainrecon.cli import main; main()"]
ARTIFACTS = Path(os.environ.get("TRAINRECON_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "trainrecon-test-artifacts"))


pytestmark = pytest.mark.usefixtures("one_thread")


def cli(*args):
    r = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def synthetic_candidates(task, rng, leaked=6, noise=0.05):
    """``leaked`` training images slightly perturbed, the rest noise: a partial leak with a known answer."""
    x = task.centred(task.x_train)
    m = 2 * len(x)
    out = rng.standard_normal((m, *x.shape[1:])) * 0.3
    out[:leaked] = x[:leaked] + noise * rng.standard_normal(x[:leaked].shape)
    return out


def test_exposure_matches_a_dense_oracle_and_the_roc_is_recomputed_from_the_per_image_scores(rng):
    task = trainrecon.build_task(trainrecon.TaskConfig(dataset="digits", n_per_class=6))
    cands = synthetic_candidates(task, rng)
    res = trainrecon.score(cands, task.x_train, task.heldout_all, task.mean, train_indices=task.idx_train)
    exp = res.metrics["exposure"]
    n, kind = task.n, ssim_kind(task.x_train.shape)
    tr = torch.as_tensor(task.x_train)
    ho = torch.as_tensor(task.heldout_all)
    mu = torch.as_tensor(task.mean).reshape(1, *task.x_train.shape[1:])
    c = torch.as_tensor(cands)

    def s(a, b):  # one pair, float64
        return float(ssim_cross(a[None], b[None], kind)[0, 0])

    nulls = {k: torch.as_tensor(v) for k, v in
             __import__("trainrecon.metrics.headline", fromlist=["null_sets"]).null_sets(c, ho, mu, 0, n).items()}
    assert len(exp["images"]) == n and [e["exposure"] for e in exp["images"]] == sorted(
        (e["exposure"] for e in exp["images"]), reverse=True)
    for e in exp["images"]:
        i, j = e["position"], e["candidate"]
        cj = shown(c[j:j + 1], mu)[0]
        sim = s(tr[i], cj)
        best = max(s(h, cj) for h in ho)
        null_best = max(s(tr[i], v) for k in nulls for v in shown(nulls[k], mu))
        assert e["train_index"] == int(task.idx_train[i])
        assert e["similarity"] == pytest.approx(sim, abs=1e-10)
        assert e["heldout_best"] == pytest.approx(best, abs=1e-10)
        assert e["margin_over_nulls"] == pytest.approx(sim - null_best, abs=1e-10)
        assert e["exposure"] == pytest.approx(sim - best, abs=1e-10)
        assert e["recovered"] == (i in res.headline["recovered_indices"])
    # the held-out control's score: its own candidate, compared with the training images and H minus the control
    assert len(exp["heldout_scores"]) == n
    ctrl = ho[:n]
    idx = one_to_one(ctrl, c, mu)
    for k in range(n):
        cj = shown(c[int(idx[k]):int(idx[k]) + 1], mu)[0]
        others = max(max(s(t, cj) for t in tr), max(s(h, cj) for h in ho[n:]))
        assert exp["heldout_scores"][k] == pytest.approx(s(ctrl[k], cj) - others, abs=1e-10)
    # ROC / TPR recomputed from the per-image scores alone (a pairwise oracle for AUC, a threshold scan for TPR)
    pos = np.array([e["exposure"] for e in exp["images"]])
    neg = np.array(exp["heldout_scores"])
    auc = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert exp["roc"]["auc"] == pytest.approx(auc, abs=1e-12) and res.exposure.roc.auc == exp["roc"]["auc"]
    for target in ("0.01", "0.001"):
        best_tpr = max(np.mean(pos >= t) for t in np.r_[pos, neg, np.inf] if np.mean(neg >= t) <= float(target))
        assert exp["roc"]["tpr_at_fpr"][target] == pytest.approx(best_tpr)
    assert exp["roc"]["n_positive"] == exp["roc"]["n_negative"] == n and exp["roc"]["min_nonzero_fpr"] == 1 / n
    # the leak is visible: the perturbed training images are the most exposed, and the ROC is far from chance
    assert {e["position"] for e in exp["images"][:6]} == set(range(6)) and exp["roc"]["auc"] > 0.6
    assert res.recovered == len(res.headline["recovered_indices"]) and res.controls["positive"] == n


def test_roc_summary_edge_cases():
    from trainrecon.metrics.exposure import UNMATCHED, roc_summary

    perfect = roc_summary(np.array([0.5, 0.4]), np.array([-0.1, -0.2, -0.3]))
    assert perfect.auc == 1.0 and perfect.tpr_at_fpr == {"0.01": 1.0, "0.001": 1.0}
    chance = roc_summary(np.array([0.1, 0.1]), np.array([0.1, 0.1]))
    assert chance.auc == 0.5 and chance.tpr_at_fpr["0.01"] == 0.0
    unmatched = roc_summary(np.array([np.nan, 0.2]), np.array([UNMATCHED + 1]))
    assert unmatched.auc == 0.5  # NaN (no candidate) ranks below everything
    assert roc_summary(np.array([0.1]), np.array([])).auc is None


def test_score_without_heldout_images_makes_no_claim_and_still_reports(rng, tmp_path):
    task = trainrecon.build_task(trainrecon.TaskConfig(dataset="digits", n_per_class=3))
    res = trainrecon.score(synthetic_candidates(task, rng, leaked=2), task.x_train)
    assert res.recovered is None and res.exposure is None and "held-out" in res.line()
    page = render_report(res)
    assert "No verdict" in page or "no claim" in page
    with pytest.raises(trainrecon.TrainreconError, match="score: candidates"):
        trainrecon.score(np.zeros((2, 3)), task.x_train)
    with pytest.raises(trainrecon.TrainreconError, match="image shapes differ"):
        trainrecon.score(np.zeros((2, 1, 4, 4)), task.x_train)


def outside_victim(folder: Path, task, steps=400, seed=0) -> None:
    """A victim trained by plain PyTorch (not by trainrecon): nn.Sequential, Adam on the logistic loss, saved as
    a safetensors state dict with an architecture JSON, then brought in with ``trainrecon import``."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32, bias=False),
                              torch.nn.ReLU(), torch.nn.Linear(32, 1, bias=False)).double()
    x = torch.as_tensor(task.centred(task.x_train)).reshape(task.n, -1)
    y = torch.as_tensor(task.y_train, dtype=torch.float64)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.softplus(-y * net(x).squeeze(1)).mean().backward()
        opt.step()
    sd = {f"layers.{k // 2}.{name}": p.detach().contiguous() for k, layer in enumerate(net) if k % 2 == 0
          for name, p in layer.named_parameters()}
    sd["input_mean"] = torch.as_tensor(task.mean).reshape(1, 8, 8).contiguous()
    folder.mkdir(parents=True)
    save_file(sd, str(folder / "weights.safetensors"))
    (folder / "arch.json").write_text(json.dumps({"widths": [64, 32, 32, 1], "bias": [True, False, False],
                                                  "activation": "relu", "input_shape": [1, 8, 8]}))
    np.savez(folder / "truth.npz", x=task.x_train, y=task.y_train)
    np.savez(folder / "heldout.npz", x=task.heldout_all)


def check_rendered(report: Path, metrics: dict, shot_name: str) -> None:
    binary = chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    page = render(report, binary)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (report.parent / f"{shot_name}.png").write_bytes(page.screenshot)
    shutil.copy(report.parent / f"{shot_name}.png", ARTIFACTS / f"{shot_name}.png")
    print(f"report screenshot: {report.parent / f'{shot_name}.png'} (copied to {ARTIFACTS / f'{shot_name}.png'})")
    assert page.errors == []
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(page.screenshot) > 10_000
    n_img = len(re.findall(r"<img\b", report.read_text()))
    assert len(page.images) == n_img >= 5
    assert all(i["complete"] and i["naturalWidth"] > 0 for i in page.images), [i for i in page.images if not i["naturalWidth"]]
    assert all(u.startswith(("file:", "data:")) for u in page.requests), [u for u in page.requests if not u.startswith(("file:", "data:"))]
    text = " ".join(page.text.split())
    head, n = metrics["headline"], metrics["n"]
    assert " ".join(metrics["audit"]["verdict"].split()) in text
    assert f"the attack candidates reconstructed from the weights {head['recovered']} of {n}" in text
    for name, v in head["controls"].items():
        assert re.search(rf"{name} .*?{v} of \d+", text), name
    roc = metrics["exposure"]["roc"]
    assert f"AUC {fmt(roc['auc'])}" in text
    assert f"TPR at 1 % FPR {fmt(roc['tpr_at_fpr']['0.01'])}" in text
    assert f"TPR at 0.1 % FPR {fmt(roc['tpr_at_fpr']['0.001'])}" in text
    top = metrics["exposure"]["images"][0]
    index = top["train_index"] if top["train_index"] is not None else top["position"]
    assert f"1 {index} {fmt(top['similarity'])} {fmt(top['heldout_best'])}" in text
    assert metrics["audit"]["victim"]["weights fingerprint (SHA-256)"] in text


def test_evaluate_writes_a_self_contained_report_that_renders_in_a_browser(tmp_path):
    """The path of a model owner with a network trained elsewhere: import, reconstruct, evaluate with their own
    training and held-out images; report.html agrees with metrics.json and renders with every picture."""
    task = trainrecon.build_task(trainrecon.TaskConfig(dataset="digits", n_per_class=10))
    outside_victim(tmp_path / "outside", task)
    o = tmp_path / "outside"
    import_victim(o / "weights.safetensors", o / "arch.json", tmp_path / "victim")
    trainrecon.reconstruct(trainrecon.payload_from_folder(tmp_path / "victim"),
                           trainrecon.HaimConfig(iterations=300, log_every=50, m=2 * task.n), tmp_path / "rec",
                           log=lambda *_: None)
    cli("evaluate", tmp_path / "victim", tmp_path / "rec" / "candidates.npz", "--out", tmp_path / "ev",
        "--truth", o / "truth.npz", "--heldout", o / "heldout.npz")
    report = tmp_path / "ev" / "report.html"
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    html = report.read_text()
    # self-contained: every picture inline, nothing fetched, no script
    assert "<script" not in html.lower() and not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'<img[^>]*src="([^"]*)"', html))
    audit = metrics["audit"]
    assert audit["victim"]["origin"] == "imported from weights.safetensors"
    assert audit["threat_model"]["n_train"] == "not disclosed" and audit["runs"][0]["method"] == "haim"
    assert audit["attacked_this_victim"] is True
    assert audit["runs"][0]["iterations_done"] == 300 and "attack rec" in audit["timings"]
    assert metrics["exposure"]["images"][0]["train_index"] is None  # positions only: the owner's own file
    check_rendered(report, metrics, "report_evaluate")


def test_run_and_union_write_reports(tmp_path):
    from trainrecon.pipeline.experiments import run_experiment
    from trainrecon.pipeline.sweep import union_runs

    exp = {"task": {"dataset": "digits", "task": "odd_even", "n_per_class": 2},
           "train": {"hidden": [8, 8], "margin_schedule": [10.0], "lbfgs_iters": 20},
           "method": "haim", "attack": {"iterations": 30, "log_every": 10}}
    (tmp_path / "exp.json").write_text(json.dumps(exp))
    run_experiment(tmp_path / "exp.json", tmp_path / "run", log=lambda *_: None)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (tmp_path / "run" / "report.html").is_file() and m["audit"]["runs"][0]["name"] == "reconstruction"
    assert "exposure" in m and m["audit"]["timings"]["victim training"] is not None
    rec = tmp_path / "run" / "reconstruction"
    union_runs(tmp_path / "run" / "victim", tmp_path / "u", [rec, rec], log=lambda *_: None)
    u = json.loads((tmp_path / "u" / "metrics.json").read_text())
    assert u["union"]["runs_merged"] == 2 and [r["name"] for r in u["audit"]["runs"]] == ["0: reconstruction",
                                                                                         "1: reconstruction"]
    page = (tmp_path / "u" / "report.html").read_text()
    assert "loss curve" in page and page.count("<h3>Attack run") == 2


def test_the_verdict_sentence_follows_the_headline_and_its_controls():
    from trainrecon.audit_report import verdict, verdict_kind

    def metrics(rec, heldout=0, nulls=0, positive=20, informative=True):
        return {"headline": {"n": 20, "recovered": rec, "heldout_pool": 120, "informative": informative,
                             "negative_controls_max": max(heldout, nulls),
                             "controls": {"heldout": heldout, "null_mean": nulls, "positive": positive}}}

    assert verdict_kind(metrics(7)) == "leak" and verdict(metrics(7)).startswith("The training data leaks: 7 of the 20")
    assert "recover at most 1" in verdict(metrics(7, nulls=1)) and "true training images 20 of 20" in verdict(metrics(7))
    assert verdict_kind(metrics(1, heldout=1)) == "noleak" and verdict(metrics(0)).startswith("No leak shown")
    assert verdict_kind(metrics(7, positive=9, informative=False)) == "noclaim"
    assert verdict(metrics(7, positive=9, informative=False)).startswith("No verdict for this data")
    # a count of typical images (luck) moves by a few on another draw: the attack must clear that, not just the count
    typical = {"headline": {"n": 100, "recovered": 20, "heldout_pool": 600, "informative": True,
                            "negative_controls_max": 18, "controls": {"heldout": 0, "null_typical": 18, "positive": 100}}}
    assert verdict_kind(typical) == "noleak" and "by luck (up to about 29)" in verdict(typical)
    typical["headline"]["recovered"] = 30
    assert verdict_kind(typical) == "leak"
    none = {"headline": {"n": 20, "recovered": None, "reason": "no claim: the rule needs held-out images"}}
    assert verdict_kind(none) == "noclaim" and verdict(none) == "No verdict: no claim: the rule needs held-out images."


def test_the_report_of_a_cnn_victim_names_its_layers(tiny_task, tmp_path):
    """report.html describes any architecture through its interface: a layer-list CNN victim's page names its
    convolution and pooling layers and its parameter count (no MLP field is needed)."""
    from trainrecon.models.victim import architecture_from_dict
    from trainrecon.models.parameters import init_params
    from trainrecon.models.victim import save_victim
    from trainrecon.pipeline import evaluate_run

    spec = architecture_from_dict({"kind": "sequential", "input_shape": [1, 8, 8], "layers": [
        {"type": "conv2d", "channels": 3, "kernel": 3}, {"type": "relu"}, {"type": "max_pool", "kernel": 2},
        {"type": "flatten"}, {"type": "linear", "features": 1}]}, "model.json")
    save_victim(tmp_path / "cnn", spec, init_params(spec, [1.0] * spec.n_param_layers, 0), tiny_task.mean,
                {"task": {"dataset": "digits", "task": "odd_even", "n_per_class": 5, "centring": "pixel"},
                 "train_indices": tiny_task.idx_train.tolist()})
    np.savez(tmp_path / "c.npz", x=tiny_task.centred(tiny_task.x_train))
    evaluate_run(tmp_path / "cnn", [tmp_path / "c.npz"], tmp_path / "e", log=lambda *_: None)
    page = (tmp_path / "e" / "report.html").read_text()
    assert spec.describe() in page and "conv2d" in page and "max_pool" in page
    assert str(spec.n_params()) in page


def test_the_browser_check_sees_what_a_broken_page_does(tmp_path):
    """The browser check can fail: a console error, an uncaught exception, a picture that does not load and a
    request leaving the machine are each seen."""
    binary = chromium()
    if binary is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    page = tmp_path / "broken.html"
    page.write_text("<html><body><p>numbers 12 of 20</p><img src='missing.png'>"
                    "<script>console.error('bad'); fetch('http://192.0.2.1/x').catch(() => 0); null.x;</script>"
                    "</body></html>")
    seen = render(page, binary, timeout=30)
    assert any("bad" in e for e in seen.errors) and any(e.startswith("exception:") for e in seen.errors)
    assert seen.images and not seen.images[0]["naturalWidth"]
    assert any(u.startswith("http://192.0.2.1") for u in seen.requests)
    assert "numbers 12 of 20" in seen.text and seen.screenshot[:8] == b"\x89PNG\r\n\x1a\n"

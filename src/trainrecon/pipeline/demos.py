"""The offline demos: an MNIST leak (``trainrecon demo``) and certified identifiability (``identify-demo``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ..attacks.haim import HaimConfig
from ..attacks.payload import payload_from_folder
from ..api import reconstruct
from ..config import from_dict, load_json, save_json, to_dict
from ..data.tasks import TaskConfig
from ..errors import TrainreconError
from ..models.victim import load_victim
from ..provenance import OutputFolder
from ..training import TrainConfig
from .evaluation import EVALUATION_FILES, Candidates, evaluate_run, headline_and_collapse
from .identify import identify_run
from .victims import train_victim


DEMO_TASK = TaskConfig(dataset="mnist_mini", task="odd_even", n_per_class=20, centring="pixel")
DEMO_TRAIN = TrainConfig(hidden=[200, 200])
DEMO_ATTACK = HaimConfig(iterations=8000, log_every=500)  # the Haim defaults


def demo(out: str | Path = "runs/demo", device: torch.device | str = "cpu", seed: int = 0, log=print) -> dict[str, Any]:
    """Offline demo: an MNIST even/odd victim (n = 40, 784-200-200-1) on the MNIST subset shipped with the
    package, the Haim KKT attack, evaluation with every control; report.html, grid.png, evidence.png, metrics.json."""
    folder = OutputFolder(out, "demo", DEMO_FILES).claim()
    _same_demo(Path(out), seed)
    with folder:
        return _demo(Path(out), device, seed, log)


#: everything the demos write into their folders (each refuses a folder holding anything else)
DEMO_FILES = ("victim", "reconstruction", "config.json", *EVALUATION_FILES)
IDENTIFY_DEMO_FILES = ("exact_alpha3", "exact_alpha4", "trained_n2", "trained_n5", "demo.json", "*.tmp")


def _same_demo(out: Path, seed: int) -> None:
    """Refuse a demo folder made with another seed (its victim and attack would not be this demo's)."""
    if (out / "config.json").is_file():
        old = load_json(out / "config.json")
        if isinstance(old, dict) and old.get("seed") != seed:
            raise TrainreconError(f"{out}: holds the demo of another seed ({old.get('seed')} then, {seed} now); "
                                  "choose a new folder")


def _demo(out: Path, device, seed: int, log) -> dict[str, Any]:
    t0 = time.time()
    train_cfg = from_dict(TrainConfig, {**to_dict(DEMO_TRAIN), "seed": seed})
    attack_cfg = from_dict(HaimConfig, {**to_dict(DEMO_ATTACK), "seed": seed})
    victim_dir = out / "victim"
    if not (victim_dir / "model.safetensors").is_file():
        log(f"[1/3] training the victim (MNIST even vs odd, n = {2 * DEMO_TASK.n_per_class}, shipped subset)")
        train_victim(DEMO_TASK, train_cfg, victim_dir, device=device, log=log)
    victim = load_victim(victim_dir)
    log(f"      victim KKT residual {victim.train_info['final']['kkt_residual']:.3f} (the floor for any reconstruction)")
    log(f"[2/3] reconstructing with the Haim KKT attack ({attack_cfg.iterations} iterations)")
    rec = reconstruct(payload_from_folder(victim_dir), attack_cfg, out / "reconstruction", device=device, resume=True,
                      log=log)
    res = rec.stats
    log(f"      {res['seconds_per_iteration'] * 1e3:.1f} ms per iteration")
    log("[3/3] evaluating against the training set, held-out images, null candidates and the true images")
    save_json(out / "config.json", {"task": DEMO_TASK, "train": train_cfg, "attack": attack_cfg, "seed": seed})
    metrics = evaluate_run(victim_dir, [Candidates.of(rec, out / "reconstruction" / "candidates.npz")], out,
                           log=lambda *a: None)
    log(f"wrote {out / 'report.html'} (the audit report), {out / 'grid.png'}, {out / 'evidence.png'} and "
        f"{out / 'metrics.json'} in {time.time() - t0:.0f} s")
    log(headline_and_collapse(metrics))
    return metrics


def identify_demo(out: str | Path = "runs/identify-demo", log=print) -> dict[str, Any]:
    """Offline identifiability demo: exact KKT points (alpha 3 and 4), alpha = 2, a trained network."""
    # here: identifiability loads scipy, which the main demo does not need
    from ..identifiability.counterexamples import alpha2_counterexample
    from ..identifiability.polynomial import PolyDataConfig
    from ..training.polynomial import PolyTrainConfig
    from ..identifiability.power_victims import make_exact_victim, make_trained_victim

    out = Path(out)
    OutputFolder(out, "identify-demo", IDENTIFY_DEMO_FILES).claim()
    results: dict[str, Any] = {}
    cases = [
        ("exact_alpha3", "exact KKT point, alpha 3, n 5, d 10", PolyDataConfig("gaussian", 5, 10, 2), 3),
        ("exact_alpha4", "exact KKT point, alpha 4, n 3, d 20", PolyDataConfig("gaussian", 3, 20, 0), 4),
    ]
    for name, title, data, alpha in cases:
        log(f"[{title}]")
        make_exact_victim(out / name / "victim", data, alpha, seed=data.seed)
        results[name] = identify_run(out / name / "victim", out / name, log=log)
    log("[alpha = 2: two data sets, one network]")
    a2 = alpha2_counterexample()
    log(f"  KKT residuals {a2['kkt_residual_original']:.1e} and {a2['kkt_residual_alternative']:.1e}, all margins 1, "
        f"yet the sets differ (mean 1-|cos| {a2['mean_one_minus_cos_between_sets']:.2f}); identify says "
        f"'{a2['identify_verdict']}'")
    results["alpha2"] = a2
    for name, n in (("trained_n2", 2), ("trained_n5", 5)):
        log(f"[trained by normalised GD: alpha 4, n {n}, d 20, width 50]")
        make_trained_victim(out / name / "victim", PolyDataConfig("sphere", n, 20, 0),
                            PolyTrainConfig(alpha=4, width=50, steps=5000), log=log)
        results[name] = identify_run(out / name / "victim", out / name, log=log)
    save_json(out / "demo.json", results)
    log(f"wrote {out / 'demo.json'}")
    return results

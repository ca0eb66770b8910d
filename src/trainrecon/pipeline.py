"""The researcher's path as functions: train a victim, attack it, evaluate, the offline demo.

The CLI (``cli.py``) is a thin layer over these.  Each writes its config, metrics (JSON) and pictures (PNG)
into its output folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .attacks.haim import HaimConfig
from .attacks.runner import reconstruct
from .checkpoint import first_difference, folder_lock
from .config import from_dict, load_config, load_json, registered_name, save_json, to_dict
from .data.formats import read_npz, to_float_nchw
from .data.tasks import TaskConfig, build_task
from .errors import Interrupted, TrainreconError
from .metrics.evaluate import evaluate, headline
from .metrics.headline import HeadlineRule
from .models.victim import Victim, load_victim, save_victim
from .reports import evidence_plot, l2_curve_plot, pair_grid
from .runtime import require_memory
from .training import TRAINERS, TrainConfig


def train_bytes(spec_widths: list[int], n: int) -> float:
    """A generous estimate of a trainer's peak memory: L-BFGS keeps 2 x 50 parameter-sized vectors, and every
    layer's activations for the n training images are kept a few times over."""
    n_params = sum(a * b + b for a, b in zip(spec_widths[:-1], spec_widths[1:]))
    return 8 * (110 * n_params + 8 * n * sum(spec_widths))


def normalised_record(info: dict[str, Any]) -> dict[str, Any]:
    """task / trainer_kind / trainer of a train.json, with fields added since it was written at their defaults."""
    out = {"task": info.get("task"), "trainer_kind": info.get("trainer_kind"), "trainer": info.get("trainer")}
    try:
        out["task"] = to_dict(from_dict(TaskConfig, info["task"], "train.json.task"))
        out["trainer"] = to_dict(from_dict(TRAINERS[info["trainer_kind"]][0], info["trainer"], "train.json.trainer"))
    except (TrainreconError, KeyError, TypeError):
        pass
    return out


def train_victim(
    task: TaskConfig, train, out: str | Path, data_dir: str | Path | None = None,
    device: torch.device | str = "cpu", log=print,
) -> Path:
    """Train a victim on ``task`` with the trainer ``train``'s type names and write the victim folder ``out``.

    The folder is locked while training.  A folder holding a finished victim is reused only when it was trained
    with the same task, trainer and config (and refused otherwise, naming the first difference); an imported
    victim is never overwritten.  The trainer's checkpoint resumes only on the same config and data."""
    name = registered_name(TRAINERS, train, "trainer")
    fit = TRAINERS[name][1]
    out = Path(out)
    record = {"task": to_dict(task), "trainer_kind": name, "trainer": to_dict(train)}
    with folder_lock(out):
        if (out / "train.json").is_file() or (out / "model.safetensors").is_file():
            old = load_json(out / "train.json") if (out / "train.json").is_file() else {}
            if not isinstance(old, dict) or "task" not in old:
                raise TrainreconError(f"{out}: holds a victim that was not trained here (imported, or incomplete); "
                                      "choose a new folder")
            diff = first_difference(normalised_record(old), record)
            if diff:
                raise TrainreconError(f"{out}: holds a victim trained differently ({diff}); choose a new folder")
            if (out / "model.safetensors").is_file():
                log(f"{out}: already trained with this task and config; nothing to do")
                return out
        data = build_task(task, data_dir)
        log(f"task {task.dataset}/{task.task}: n = {data.n} training images of shape {data.x_train.shape[1:]}")
        x = torch.as_tensor(data.centred(data.x_train))
        if task.task == "multiclass":
            classes = np.unique(data.y_train)
            y = torch.as_tensor(np.searchsorted(classes, data.y_train))
            n_classes = len(classes)
        else:
            y, n_classes = torch.as_tensor(data.y_train, dtype=torch.float64), 2
        widths = train.spec(list(x.shape[1:]), 1 if n_classes == 2 else n_classes).widths
        require_memory(train_bytes(widths, data.n), f"training a {'-'.join(map(str, widths))} victim", device)
        try:
            spec, params, summary = fit(train, x, y, checkpoint_dir=out / "checkpoint", device=device, log=log,
                                        n_classes=n_classes)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted while training; the last checkpoint in {out / 'checkpoint'} is kept: "
                              "rerun the same command to resume") from None
        info = {
            **record,
            "train_indices": data.idx_train.tolist(),
            "heldout_indices": data.idx_heldout.tolist(),
            "final": summary["final"],
            "rescale_factor": summary.get("rescale_factor", 1.0),
            "seconds": summary["seconds"],
            "history": summary["history"],
        }
        init = summary.get("init_params")
        save_victim(out, spec, [p.cpu() for p in params], data.mean, info,
                    None if init is None else [p.cpu() for p in init])
    return out


def load_truth(
    victim: Victim, data_dir: str | Path | None, truth: str | Path | None, heldout: str | Path | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Training images, labels, held-out images (the control first, then the pool) and centring mean, for
    evaluation only."""
    shape = tuple(victim.spec.input_shape)
    x_ho_file = None if heldout is None else to_float_nchw(read_npz(heldout)[0], str(heldout))
    if truth is not None:
        x, y = read_npz(truth)
        x_tr = to_float_nchw(x, str(truth))
        if x_tr.shape[1:] != shape:
            raise TrainreconError(f"{truth}: images of shape {x_tr.shape[1:]}, but the victim takes {shape}")
        mean = victim.mean_chw() if victim.input_mean is not None else x_tr.mean(axis=0)
        return x_tr, y, x_ho_file, mean
    if "task" not in victim.train_info:
        raise TrainreconError("evaluate: the victim's train.json names no task; pass the training set with --truth")
    task = from_dict(TaskConfig, victim.train_info["task"], "train.json.task")
    data = build_task(task, data_dir)
    recorded = victim.train_info.get("train_indices")
    if recorded is not None and list(map(int, recorded)) != data.idx_train.tolist():
        raise TrainreconError("train.json: recorded train_indices differ from the task's selection on this data")
    x_ho = data.heldout_all if x_ho_file is None else x_ho_file
    mean = victim.mean_chw() if victim.input_mean is not None else data.mean
    return data.x_train, data.y_train, x_ho, mean


def read_candidates(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Centred candidates (m, C, H, W) from an .npz's ``x``, checked for shape and finiteness."""
    x, _ = read_npz(path)
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TrainreconError(f"{path}: x is not numeric (dtype {np.asarray(x).dtype})") from None
    if x.ndim == 2 and x.shape[1] == int(np.prod(shape)):
        x = x.reshape(-1, *shape)
    if x.shape[1:] != shape or x.shape[0] == 0:
        raise TrainreconError(f"{path}: candidates of shape {x.shape}, the victim takes (m >= 1, {', '.join(map(str, shape))}) (centred space)")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(len(x), -1))).any(axis=1).sum())
        raise TrainreconError(f"{path}: {bad} candidate(s) hold NaN or inf")
    return x


def evaluate_run(
    victim_dir: str | Path, candidate_files: list[str | Path], out: str | Path, data_dir: str | Path | None = None,
    truth: str | Path | None = None, heldout: str | Path | None = None, log=print,
    null_files: dict[str, str | Path] | None = None, rule: HeadlineRule = HeadlineRule(),
) -> dict[str, Any]:
    """Score the union of candidate files against the victim's training set, with the controls of
    ``metrics/headline.py`` (and further named null candidate files, e.g. a shadow victim's); write
    metrics.json, grid.png, evidence.png and l2_curve.png."""
    with folder_lock(out):
        return _evaluate_run(victim_dir, candidate_files, Path(out), data_dir, truth, heldout, log, null_files, rule)


def _evaluate_run(victim_dir, candidate_files, out: Path, data_dir, truth, heldout, log, null_files, rule) -> dict[str, Any]:
    victim = load_victim(victim_dir)
    shape = tuple(victim.spec.input_shape)
    cands = [read_candidates(f, shape) for f in candidate_files]
    nulls = {name: read_candidates(f, shape) for name, f in (null_files or {}).items()}
    x_tr, y_tr, x_ho, mean = load_truth(victim, data_dir, truth, heldout)
    if not (np.isfinite(x_tr).all() and (x_ho is None or np.isfinite(x_ho).all())):
        raise TrainreconError(f"{truth or heldout or 'the task data'}: training or held-out images hold NaN or inf")
    if len(x_tr) == 0:
        raise TrainreconError(f"{truth or 'the task data'}: no training images to evaluate against")
    metrics, pairs = evaluate(np.concatenate(cands), x_tr, x_ho, mean, y_tr, runs_unioned=len(cands),
                              extra_nulls=nulls, rule=rule)
    metrics["candidate_files"] = [Path(f).name for f in candidate_files]
    metrics["null_files"] = {k: Path(f).name for k, f in (null_files or {}).items()}
    metrics["mean_source"] = "victim input_mean" if victim.input_mean is not None else "training-set per-pixel mean"
    save_json(out / "metrics.json", metrics)
    p, head = pairs["hungarian"], metrics["headline"]
    recovered = np.zeros(len(p["index"]), bool)
    recovered[head.get("recovered_indices", [])] = True
    pair_grid(p["train"], p["matched"], p["similarities"]["attack"], out / "grid.png",
              f"training image | its one-to-one candidate, {head['similarity'].split(' (')[0]}; "
              f"green: recovered by the headline rule ({int(recovered.sum())} of {len(recovered)})", recovered)
    loo = metrics["protocols"]["loo_greedy"]
    l2_curve_plot(loo["l2_curve"], loo["l2_curve_control"], out / "l2_curve.png")
    evidence_plot(pairs, metrics, out / "evidence.png")
    log(headline(metrics))
    return metrics


DEMO_TASK = TaskConfig(dataset="mnist_mini", task="odd_even", n_per_class=20, centring="pixel")
DEMO_TRAIN = TrainConfig(hidden=[200, 200])
DEMO_ATTACK = HaimConfig(iterations=8000, lr=1.0, lr_lambda=0.01, init_scale=1e-3, lambda_min=0.1, alpha=30.0,
                         log_every=500, box_space="pixel")


def demo(out: str | Path = "runs/demo", device: torch.device | str = "cpu", seed: int = 0, log=print) -> dict[str, Any]:
    """Offline demo: an MNIST even/odd victim (n = 40, 784-200-200-1) on the MNIST subset shipped with the
    package, the Haim KKT attack, evaluation with every control; grid.png, evidence.png, metrics.json."""
    with folder_lock(out):
        return _demo(Path(out), device, seed, log)


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
    res = reconstruct(victim, attack_cfg, out / "reconstruction", device=device, resume=True, log=log)
    log(f"      {res['seconds_per_iteration'] * 1e3:.1f} ms per iteration")
    log("[3/3] evaluating against the training set, held-out images, null candidates and the true images")
    save_json(out / "config.json", {"task": DEMO_TASK, "train": train_cfg, "attack": attack_cfg, "seed": seed})
    metrics = evaluate_run(victim_dir, [out / "reconstruction" / "candidates.npz"], out, log=lambda *a: None)
    log(f"wrote {out / 'grid.png'}, {out / 'evidence.png'} and {out / 'metrics.json'} in {time.time() - t0:.0f} s")
    log(headline(metrics))
    return metrics


def identify_run(
    victim_dir: str | Path, out: str | Path, cfg=None, truth: str | Path | None = None, score: bool = True,
    data_dir: str | Path | None = None, log=print,
) -> dict[str, Any]:
    """``trainrecon identify``: certified reconstruction from a polynomial victim; writes report.json,
    samples.npz (x, y, lambda and the neurons-as-data baseline) and identify.png.  Scoring against the
    training samples (from --truth or rebuilt from train.json) happens after, and apart from, the attack."""
    from .identifiability.identify import IdentifyConfig, compare_to_truth, identify, poly_from_victim
    from .identifiability.polynomial import poly_kkt_residual
    from .identifiability.victims import poly_truth
    from .reports import identify_plot

    cfg = cfg or IdentifyConfig()
    victim = load_victim(victim_dir)
    net = poly_from_victim(victim)
    t0 = time.time()
    rep = identify(net, cfg, scale_recorded=bool(victim.train_info.get("rescaled_to_unit_margin", False)))
    rep["seconds"] = time.time() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = rep.pop("samples")
    baseline = rep.pop("baseline")
    arrays = {"baseline": baseline}
    if samples is not None:
        arrays.update({"x": samples["x"], "y": samples["y"], "lambda": samples["lambda"]})
    np.savez_compressed(out / "samples.npz", **arrays)
    scores = None
    if truth is not None or (score and "data" in victim.train_info):
        if truth is not None:
            X_true, y_true = read_npz(truth)
            X_true = np.asarray(X_true, dtype=np.float64).reshape(len(X_true), -1)
            if X_true.shape[1] != net.W.shape[1]:
                raise TrainreconError(f"{truth}: samples of dimension {X_true.shape[1]}, the victim takes {net.W.shape[1]}")
        else:
            X_true, y_true = poly_truth(victim, data_dir)
        y_true = np.ones(len(X_true)) if y_true is None else np.asarray(y_true, dtype=np.float64)
        lam = np.asarray(poly_kkt_residual(torch.as_tensor(net.a), torch.as_tensor(net.W), torch.as_tensor(X_true),
                                           torch.as_tensor(y_true), net.alpha, net.second_layer_trained)["lambdas"])
        active = lam > 1e-3 * lam.max() if lam.max() > 0 else np.ones(len(lam), bool)
        scores = {"n_train": int(len(X_true)), "n_active": int(active.sum()),
                  "recovered": compare_to_truth(None if samples is None else samples["x"], X_true, active),
                  "neurons_as_data": compare_to_truth(baseline, X_true, active)}
        rep["score"] = scores
    save_json(out / "report.json", {"config": cfg, **rep})
    identify_plot(rep, out / "identify.png")
    line = (f"{rep['verdict']}: {rep.get('n_recovered', 0)} samples recovered from {rep['significant_neurons']} neurons "
            f"({rep['distinct_directions']} directions, span {rep['neuron_span']}); system rank "
            f"{rep.get('system_rank')}/{rep['system_unknowns']}")
    if rep.get("certificate"):
        line += f"; certificate {rep['certificate'].split(':')[0]}"
    log(line)
    for r in rep["reasons"]:
        log(f"  - {r}")
    if scores is not None:
        rec, base = scores["recovered"], scores["neurons_as_data"]
        log(f"  scored against {scores['n_active']} active training samples: max relative error "
            f"{rec['max_rel_error']:.2e} (neurons as data: {base['max_rel_error']:.2e}), mean 1-|cos| "
            f"{rec['mean_one_minus_cos']:.2e} (neurons as data: {base['mean_one_minus_cos']:.2e})")
    return rep


def identify_demo(out: str | Path = "runs/identify-demo", log=print) -> dict[str, Any]:
    """Offline identifiability demo: exact KKT points (alpha 3 and 4), alpha = 2, a trained network."""
    from .identifiability.demos import alpha2_counterexample
    from .identifiability.polynomial import PolyDataConfig, PolyTrainConfig
    from .identifiability.victims import make_exact_victim, make_trained_victim

    out = Path(out)
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


@dataclass
class Experiment:
    """One experiment file (``bench/cases/*.json``): a task, a trainer and its config, a method and its config.

    ``shadow: true`` adds the shadow-victim control: the same trainer and attack on the task's next
    ``n_per_class`` images of each class (disjoint from the victim's, same distribution); its candidates are
    scored against the victim's training set as one more negative control."""

    task: TaskConfig
    trainer: str = "kkt"
    method: str = "haim"
    train: dict = field(default_factory=dict)
    attack: dict = field(default_factory=dict)
    description: str = ""
    shadow: bool = False

    def __post_init__(self) -> None:
        from .attacks.runner import METHODS

        if self.trainer not in TRAINERS:
            raise TrainreconError(f"experiment.trainer: unknown trainer {self.trainer!r} (available: {', '.join(TRAINERS)})")
        if self.method not in METHODS:
            raise TrainreconError(f"experiment.method: unknown method {self.method!r} (available: {', '.join(METHODS)})")

    def configs(self, where: str):
        from .attacks.runner import METHODS

        return (from_dict(TRAINERS[self.trainer][0], self.train, f"{where}: train"),
                from_dict(METHODS[self.method][0], self.attack, f"{where}: attack"))


def run_experiment(
    path: str | Path, out: str | Path, data_dir: str | Path | None = None, device: torch.device | str = "cpu",
    log=print,
) -> dict[str, Any]:
    """Train (or reuse) the victim, run the attack (resumable), evaluate with the held-out control.

    Writes ``out/experiment.json``, ``victim/``, ``reconstruction/``, ``metrics.json``, ``grid.png``,
    ``l2_curve.png``; returns a summary (counts, seconds per iteration, victim residual)."""
    exp = load_config(Experiment, path)
    train_cfg, attack_cfg = exp.configs(str(path))
    out = Path(out)
    record = {"task": exp.task, "trainer": exp.trainer, "train": train_cfg, "method": exp.method, "attack": attack_cfg,
              "shadow": exp.shadow}
    with folder_lock(out):
        if (out / "experiment.json").is_file():
            old = load_json(out / "experiment.json")
            old = {k: old.get(k) for k in record} if isinstance(old, dict) else {}
            try:  # fields added since that file was written count at their defaults
                old = to_dict({"task": from_dict(TaskConfig, old["task"], "experiment.json.task"), "trainer": old["trainer"],
                               "train": from_dict(TRAINERS[old["trainer"]][0], old["train"], "experiment.json.train"),
                               "method": old["method"], "attack": from_dict(type(attack_cfg), old["attack"], "experiment.json.attack"),
                               "shadow": bool(old.get("shadow"))})
            except (TrainreconError, KeyError, TypeError):
                pass
            diff = first_difference(old, to_dict(record))
            if diff:
                raise TrainreconError(f"{out}: holds results of a different experiment ({diff}); choose a new folder")
        save_json(out / "experiment.json", {"source": Path(path).name, "description": exp.description, **record})
        return _run_experiment(exp, path, train_cfg, attack_cfg, out, data_dir, device, log)


def _run_experiment(exp: Experiment, path, train_cfg, attack_cfg, out: Path, data_dir, device, log) -> dict[str, Any]:
    t0 = time.time()
    if not (out / "victim" / "model.safetensors").is_file():
        train_victim(exp.task, train_cfg, out / "victim", data_dir, device, log)
    train_wall = time.time() - t0
    victim = load_victim(out / "victim")
    res = reconstruct(victim, attack_cfg, out / "reconstruction", device, resume=True, log=log)
    nulls = {"shadow": shadow_candidates(exp, train_cfg, attack_cfg, victim, out, data_dir, device, log)} if exp.shadow else {}
    metrics = evaluate_run(out / "victim", [out / "reconstruction" / "candidates.npz"], out, data_dir=data_dir, log=log,
                           null_files=nulls)
    head = metrics["headline"]
    haim = metrics["protocols"]["haim_nn"]
    return {
        "case": Path(path).stem, "method": exp.method, "description": exp.description,
        "n": metrics["n"], "m": metrics["m"], "architecture": victim.spec.widths,
        "victim_residual": victim.train_info["final"].get("kkt_residual"),
        "victim_train_seconds": victim.train_info["seconds"], "train_wall_seconds_this_run": train_wall,
        "attack_iterations": res["iterations_done"], "attack_seconds": res["seconds"],
        "seconds_per_iteration": res["seconds_per_iteration"], "final_loss": res["final_loss"],
        "ssim_gt_0.4": haim["ssim_paper"]["count_gt_0.4"],
        "control_ssim_gt_0.4": haim["control"]["ssim_paper"]["count_gt_0.4"] if haim["control"] else None,
        "above_control": haim["above_control"]["ssim_paper_gt_0.4"] if haim["above_control"] else None,
        "best10_mean_ssim": haim["ssim_paper"]["mean_top10"],
        "ssim_gt_0.5": haim["ssim_paper"]["count_gt_0.5"],
        "control_ssim_gt_0.5": haim["control"]["ssim_paper"]["count_gt_0.5"] if haim["control"] else None,
        "classic_ssim_gt_0.4": haim["ssim_classic"].get("count_gt_0.4"),
        "control_classic_ssim_gt_0.4": haim["control"]["ssim_classic"].get("count_gt_0.4") if haim["control"] else None,
        "per_class_ssim_gt_0.4": haim.get("per_class_ssim_paper_gt_0.4"),
        "headline": {k: head.get(k) for k in ("recovered", "controls", "informative", "similarity", "threshold")},
    }


def shadow_candidates(exp: Experiment, train_cfg, attack_cfg, victim: Victim, out: Path, data_dir, device, log) -> Path:
    """Train and attack the shadow victim (the task's next ``n_per_class`` images per class, same trainer and
    attack); return its candidates moved into the victim's centred space (x + shadow mean - victim mean)."""
    import dataclasses

    task = dataclasses.replace(exp.task, skip_per_class=exp.task.skip_per_class + exp.task.n_per_class)
    if not (out / "shadow_victim" / "model.safetensors").is_file():
        log(f"shadow victim: the next {exp.task.n_per_class} images per class")
        train_victim(task, train_cfg, out / "shadow_victim", data_dir, device, log)
    shadow = load_victim(out / "shadow_victim")
    reconstruct(shadow, attack_cfg, out / "shadow_reconstruction", device, resume=True, log=log)
    x = read_candidates(out / "shadow_reconstruction" / "candidates.npz", tuple(victim.spec.input_shape))
    moved = out / "shadow_reconstruction" / "candidates_in_victim_space.npz"
    np.savez_compressed(moved, x=x + shadow.mean_chw() - victim.mean_chw())
    return moved

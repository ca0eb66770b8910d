"""Benchmark: networks trained as people train them (plain torch, PyTorch's default init, biases, mini-batch SGD
with momentum and weight decay, Adam, full-batch GD), attacked at each threat level with every control.

    python bench/people.py train --data-dir ../shared/data --out bench/results/people [--only NAME ...]
    python bench/people.py attack bench/results/people/NAME ... [--given weights init recipe] [--method auto ...]
                                  [--minutes 5] [--truth-start] [--config FILE] [--tag T]
    python bench/people.py smoothness bench/results/people/NAME/bench[_T]/<level>_<method> ...
    python bench/people.py table bench/results/people > table.md

``train`` trains each victim of :data:`VICTIMS` with ``bench/outside.py`` (nothing of trainrecon's: the owner's
own script) and imports it as its owner would, with the module factory, the mean, the initial state dict and the
recipe and the number of training images (``trainrecon import ... --init --recipe --n``) into NAME/victim.  ``attack`` runs, per victim, threat level and
method, ``trainrecon reconstruct --given LEVEL --method M`` under a wall-clock budget (``attack.max_seconds``,
``--minutes``) and ``trainrecon evaluate`` with the training images, 7n held-out images and every control
(``--truth-start``: the attack's own positive control too), each command in a child process whose peak resident
memory is recorded; it writes NAME/bench[_T]/<level>_<method>/{run,eval} and a JSON row per run
(NAME/bench[_T]/<level>_<method>.json: what was given, the method and its config, the headline with its controls,
AUC and TPR at 1 % FPR, the mean SSIM of the one-to-one matching, the truth-start control, seconds per iteration,
iterations done, peak memory).  ``smoothness`` evaluates a row's attack objective at the training images, at them
plus noise of 1e-6, 1e-4 and 1e-2 per pixel and at unseen images (the truth-start control's measurement before its
first step, :mod:`trainrecon.pipeline.truth_start`, run for one iteration) into <row>/smoothness.json and prints
it.  ``table`` prints the rows as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from trainrecon.config import load_json
from trainrecon.errors import TrainreconError

HERE = Path(__file__).resolve().parent
SGD = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--weight-decay", "5e-4", "--batch-size", "10",
       "--epochs", "200"]
ADAM = ["--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8", "--epochs", "200"]
GD = ["--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--batch-size", "0", "--epochs", "300"]
LENET = ["--net", "cnn", "--channels", "16,32", "--kernel", "5", "--fc", "128"]
MLP512 = ["--net", "mlp", "--hidden", "512,512"]
#: the victims: name -> bench/outside.py arguments (biases always, float32 as people train)
VICTIMS = {
    "mlp_sgd_mc50": [*MLP512, "--task", "multiclass", "--n-per-class", "5", *SGD],
    "lenet_sgd_mc50": [*LENET, "--task", "multiclass", "--n-per-class", "5", *SGD],
    "mlp_adam_oe40": [*MLP512, "--task", "odd_even", "--n-per-class", "20", *ADAM],
    "mlp_sgd_mc20": [*MLP512, "--task", "multiclass", "--n-per-class", "2", *SGD],
    "mlp_sgd_oe10": [*MLP512, "--task", "odd_even", "--n-per-class", "5", *SGD],
    "mlp_gd_mc20": [*MLP512, "--task", "multiclass", "--n-per-class", "2", *GD],
    "lenet_adam_oe20": [*LENET, "--task", "odd_even", "--n-per-class", "10", *ADAM],
    "mlp_sgd_cifar_va20": [*MLP512, "--dataset", "cifar10", "--task", "vehicles_animals", "--n-per-class", "10", *SGD],
    "lenet_sgd_cifar_mc20": [*LENET, "--dataset", "cifar10", "--task", "multiclass", "--n-per-class", "2", *SGD],
}
#: a child running the CLI that writes its own peak resident memory (KiB) to $PEAK_FILE when it ends
PEAK = ("import os, resource, sys\nfrom trainrecon.cli import main\nsys.argv = ['trainrecon', *sys.argv[2:]]\n"
        "try:\n    main()\nfinally:\n    with open(os.environ['PEAK_FILE'], 'w') as f:\n"
        "        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n")


def cli(*args, peak: Path | None = None) -> str:
    """``trainrecon ARGS`` in a child process (its peak RSS in KiB written to ``peak``); exits on failure."""
    env = {**os.environ, "PEAK_FILE": str(peak or os.devnull)}
    r = subprocess.run([sys.executable, "-c", PEAK, "-", *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"trainrecon {' '.join(map(str, args))} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def train(a: argparse.Namespace) -> None:
    for name, args in VICTIMS.items():
        if a.only and name not in a.only:
            continue
        src = a.out / name
        if not (src / "model.safetensors").is_file():
            subprocess.run([sys.executable, str(HERE / "outside.py"), *args, "--bias", "--dtype", "float32",
                            "--log-every", "100", "--data-dir", str(a.data_dir), "--out", str(src)], check=True)
        if not (src / "victim" / "model.safetensors").is_file():
            shape = "3,32,32" if "cifar" in name else "1,28,28"
            n = len(np.load(src / "train_images.npz")["y"])
            cli("import", src / "model.safetensors", src / "victim", "--module", f"{src / 'factory.py'}:build",
                "--input-shape", shape, "--mean", src / "mean.npz", "--init", src / "init.safetensors", "--recipe",
                src / "recipe.json", "--n", n)
        print(f"{name}: ready", flush=True)


def attack(a: argparse.Namespace) -> None:
    extra = load_json(a.config) if a.config else {}
    if not isinstance(extra, dict):
        raise SystemExit(f"{a.config}: expected a JSON object of attack config fields")
    for src in a.sources:
        n = len(np.load(src / "train_images.npz")["y"])
        bench = src / (f"bench_{a.tag}" if a.tag else "bench")
        for level in a.given:
            for method in a.method:
                key = f"{level}_{method}"
                out = bench / key
                if (bench / f"{key}.json").is_file():
                    continue
                out.mkdir(parents=True, exist_ok=True)
                cfg = {**extra, "max_seconds": 60.0 * a.minutes}
                (out / "attack.json").write_text(json.dumps(cfg))
                t0 = time.time()
                try:
                    printed = cli("reconstruct", src / "victim", out / "run", "--given", level, "--method", method,
                                  "--config", out / "attack.json", peak=out / "peak_attack")
                except SystemExit as e:  # the attack refused or failed (diverged): a row that says so, then the next
                    why = str(e).strip().splitlines()[-1]
                    row = {"victim": src.name, "level": level, "method": method, "n": n, "failed": why,
                           "attack": cfg, "attack_wall_seconds": time.time() - t0}
                    (bench / f"{key}.json").write_text(json.dumps(row, indent=1))
                    print(f"{src.name} {level} {method}: failed: {why}", flush=True)
                    continue
                wall = time.time() - t0
                ev = ["evaluate", src / "victim", out / "run" / "candidates.npz", "--truth", src / "train_images.npz",
                      "--heldout", src / "heldout_images.npz", "--out", out / "eval"]
                cli(*ev, *(["--truth-start"] if a.truth_start else []), peak=out / "peak_eval")
                metrics = json.loads((out / "eval" / "metrics.json").read_text())
                config = json.loads((out / "run" / "config.json").read_text())
                loss = json.loads((out / "run" / "loss.json").read_text())
                head, roc = metrics["headline"], metrics["exposure"]["roc"]
                sims = [e["similarity"] for e in metrics["exposure"]["images"] if e["similarity"] is not None]
                row = {"victim": src.name, "level": level, "method": config["method"], "n": n, "m": config["m"],
                       "given": config["payload"]["threat_level"], "attack": config["attack"],
                       "adapted": config.get("adapted"), "printed": printed.strip().splitlines(),
                       "recovered": head["recovered"], "controls": head["controls"],
                       "negative_controls_max": head["negative_controls_max"], "informative": head["informative"],
                       "auc": roc["auc"], "tpr_at_1pct_fpr": roc["tpr_at_fpr"].get("0.01"),
                       "mean_matched_similarity": float(np.mean(sims)) if sims else None,
                       "truth_start": metrics.get("truth_start"),
                       "final_relative_stationarity": (loss.get("final_loss") or {}).get("relative_stationarity"),
                       "iterations_done": loss["iterations_done"], "seconds": loss["seconds"],
                       "seconds_per_iteration": loss["seconds_per_iteration"], "attack_wall_seconds": wall,
                       "method_report": loss.get("method_report"),
                       "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()),
                       "peak_rss_gib_attack": int((out / "peak_attack").read_text()) / 2 ** 20,
                       "peak_rss_gib_eval": int((out / "peak_eval").read_text()) / 2 ** 20}
                (bench / f"{key}.json").write_text(json.dumps(row, indent=1))
                ts = row["truth_start"] or {}
                print(f"{src.name} {level} {row['method']}: {row['recovered']}/{n} (held-out {head['controls']['heldout']}"
                      f", nulls max {head['negative_controls_max']}, true {head['controls']['positive']}) AUC "
                      f"{roc['auc']:.3f} {row['seconds_per_iteration']:.3f} s/it x {row['iterations_done']}"
                      + (f"; truth-start {ts.get('kept')}/{ts.get('heldout_kept')}" if ts else ""), flush=True)


def later_truth_start(row: dict) -> dict:
    """The truth-start control run afterwards into the row's folder (``evaluate --truth-start --out
    .../eval_truth_start``), when the attack itself ran without it."""
    f = Path(row["folder"]) / "eval_truth_start" / "metrics.json"
    return json.loads(f.read_text()).get("truth_start") or {} if f.is_file() else {}


def table(a: argparse.Namespace) -> None:
    rows = [{**json.loads(f.read_text()), "arm": f.parent.name.removeprefix("bench").lstrip("_") or "defaults",
             "folder": str(f.with_suffix(""))}
            for d in a.folders for f in sorted(Path(d).glob("*/bench*/*.json"))]
    print("| victim | arm | given | method | **recovered** | held-out | nulls (mean / noise / other mean) | true | AUC | TPR@1% | mean SSIM | "
          "truth-start kept (train / unseen) | s/it x its (threads) | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['victim']} | {r['arm']} | {r['level']} | {r['method']} | failed: {r['failed']} |" + " |" * 9)
            continue
        c, ts = r["controls"], r["truth_start"] or later_truth_start(r)
        keep = f"{ts['kept']} / {ts['heldout_kept']}" if ts else "-"
        if (ts.get("objective") or {}).get("chaotic"):  # the objective's reading under invisible noise
            keep += " (chaotic)"
        nulls = "/".join(str(v) for k, v in c.items() if k.startswith("null"))
        print(f"| {r['victim']} | {r['arm']} | {r['given']} | {r['method']} | **{r['recovered']}** of {r['n']} | {c['heldout']} | "
              f"{nulls} | {c['positive']} | {r['auc']:.3f} | {r['tpr_at_1pct_fpr']:.2f} | "
              f"{r['mean_matched_similarity']:.3f} | {keep} | {r['seconds_per_iteration']:.3f} x {r['iterations_done']} ({r.get('threads', 2)}) | "
              f"{r['peak_rss_gib_attack']:.2f}{segments(r)} |")


def segments(row: dict) -> str:
    """' (graph in segments of k steps)' where the simulation kept its graph k steps at a time, else ''."""
    k = (row.get("method_report") or {}).get("checkpoint_steps")
    return f" (graph in segments of {k} steps)" if k else ""


def smoothness(a: argparse.Namespace) -> None:
    from trainrecon.models.victim import load_victim
    from trainrecon.pipeline.truth_start import truth_start_control

    for row in a.rows:
        src = row.parent.parent
        tr, ho = np.load(src / "train_images.npz"), np.load(src / "heldout_images.npz")
        victim = load_victim(src / "victim")
        out = truth_start_control(victim, row / "run", tr["x"], tr["y"], ho["x"], np.load(src / "mean.npz")["x"],
                                  iterations=1, log=lambda *args: None)["objective"]
        (row / "smoothness.json").write_text(json.dumps(out, indent=1))
        at, num = out["training"], lambda v: "not finite" if v is None else f"{v:.4g}"  # noqa: E731
        print(f"{src.name} {row.parent.name}/{row.name}: objective at the training images {num(at['0'])}; with noise "
              + ", ".join(f"{k} {num(v)}" for k, v in at.items() if k != "0")
              + f"; at unseen images {num(out['unseen'])}; chaotic: {out['chaotic']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data-dir", type=Path, required=True)
    t.add_argument("--out", type=Path, default=Path("bench/results/people"))
    t.add_argument("--only", nargs="*", default=[])
    k = sub.add_parser("attack")
    k.add_argument("sources", nargs="+", type=Path)
    k.add_argument("--given", nargs="+", default=["weights", "init", "recipe"])
    k.add_argument("--method", nargs="+", default=["auto"])
    k.add_argument("--minutes", type=float, default=5.0)
    k.add_argument("--truth-start", action="store_true")
    k.add_argument("--config", type=Path, default=None, help="attack config fields for every run")
    k.add_argument("--tag", default="")
    m = sub.add_parser("smoothness")
    m.add_argument("rows", nargs="+", type=Path)
    s = sub.add_parser("table")
    s.add_argument("folders", nargs="+", type=Path)
    a = ap.parse_args()
    try:
        {"train": train, "attack": attack, "smoothness": smoothness, "table": table}[a.cmd](a)
    except TrainreconError as e:  # a user's mistake (a config file that is not JSON): one line
        raise SystemExit(str(e)) from None


if __name__ == "__main__":
    main()

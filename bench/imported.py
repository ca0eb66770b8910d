"""Benchmark: an outside-trained victim (``bench/outside.py``) through every import route, then the KKT attack with
its defaults and every control, as a user would run them.

For each folder SRC written by ``bench/outside.py`` (model.safetensors, mean.npz, train_images.npz,
heldout_images.npz, layers.json and factory.py):

1. import it by every route it has: the layer list (``trainrecon import W layers.json OUT``), the module factory
   (``--module factory.py:build --input-shape C,H,W``), the module object from Python
   (``victim_from_module``), and for an MLP the state dict alone (architecture inferred);
2. check that the routes give the same victim (architecture and bit-identical weights) and the same candidates
   (a ``--check-iterations`` Haim run on each, compared bit for bit);
3. run ``trainrecon reconstruct`` (Haim, its defaults, m = 2n) and ``trainrecon evaluate --truth-start`` (every
   control, and the attack started at the training images for as long as the attack ran).

Writes SRC/bench/{victim_*, check_*, haim, eval}, SRC/bench/imported.json (routes, headline, controls, truth-start
control, s/iter, peak memory) and prints a Markdown row per victim.  ``--config FILE`` gives the attack of step 3
that config file (``trainrecon reconstruct --config``) and ``--tag T`` writes into SRC/bench_T instead:

    python bench/imported.py bench/results/outside_cnn bench/results/outside_mlp16
    python bench/imported.py --config bench/configs/init_tolerance.json --tag init_tolerance bench/results/outside_mlp16
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

import trainrecon as tr
from trainrecon.config import save_json
from trainrecon.models.user_weights import load_into, victim_from_module
from trainrecon.models.victim import save_victim


def cli(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "trainrecon", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"trainrecon {' '.join(map(str, args))} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def routes(src: Path, out: Path) -> dict[str, Path]:
    """Import SRC by every route it has; return {route: victim folder}."""
    w, mean = src / "model.safetensors", src / "mean.npz"
    shape = json.loads((src / "layers.json").read_text())["input_shape"]
    made = {"layer list": out / "victim_layers", "--module": out / "victim_module",
            "module object": out / "victim_python"}
    cli("import", w, src / "layers.json", made["layer list"], "--mean", mean)
    cli("import", w, made["--module"], "--module", f"{src / 'factory.py'}:build", "--input-shape",
        ",".join(map(str, shape)), "--mean", mean)
    spec = importlib.util.spec_from_file_location("user_factory", src / "factory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.build().double()
    load_into(net, load_file(str(w)), str(w))
    v = victim_from_module(net, shape, np.load(mean)["x"])
    save_victim(made["module object"], v.spec, v.params, v.input_mean, {"imported_from": w.name})
    if json.loads((src / "train.json").read_text()).get("net", "mlp") == "mlp":
        made["state dict alone"] = out / "victim_inferred"
        cli("import", w, made["state dict alone"], "--mean", mean, "--input-shape", ",".join(map(str, shape)))
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", type=Path)
    ap.add_argument("--check-iterations", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=None, help="attack iterations (default: the Haim default)")
    ap.add_argument("--no-truth-start", action="store_true")
    ap.add_argument("--config", type=Path, default=None, help="attack config file for the run of step 3")
    ap.add_argument("--tag", default="", help="write into SRC/bench_TAG (default SRC/bench)")
    a = ap.parse_args()
    rows = []
    for src in a.sources:
        out = src / (f"bench_{a.tag}" if a.tag else "bench")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        victims = routes(src, out)
        loaded = {k: tr.load_victim(v) for k, v in victims.items()}
        first = next(iter(loaded.values()))
        same_victim = all(v.spec == first.spec and all((p == q).all() for p, q in zip(v.params, first.params))
                          for v in loaded.values())
        n = len(np.load(src / "train_images.npz")["y"])
        cands = {}
        for k, v in victims.items():
            cli("reconstruct", v, out / f"check_{v.name}", "--m", 2 * n, "--iterations", a.check_iterations)
            cands[k] = np.load(out / f"check_{v.name}" / "candidates.npz")["x"]
        same_cands = all(np.array_equal(c, next(iter(cands.values()))) for c in cands.values())
        victim = next(iter(victims.values()))
        t0 = time.time()
        extra = ([] if a.iterations is None else ["--iterations", a.iterations]) + \
            ([] if a.config is None else ["--config", a.config])
        cli("reconstruct", victim, out / "haim", "--m", 2 * n, *extra)
        attack_s = time.time() - t0
        ev = ["evaluate", victim, out / "haim" / "candidates.npz", "--truth", src / "train_images.npz",
              "--heldout", src / "heldout_images.npz", "--out", out / "eval"]
        printed = cli(*ev, *([] if a.no_truth_start else ["--truth-start"]))
        metrics = json.loads((out / "eval" / "metrics.json").read_text())
        loss = json.loads((out / "haim" / "loss.json").read_text())
        head = metrics["headline"]
        row = {"source": str(src), "attack_config": None if a.config is None else json.loads(a.config.read_text()),
               "trained": json.loads((src / "train.json").read_text()),
               "routes": list(victims), "same_victim": bool(same_victim), "same_candidates": bool(same_cands),
               "architecture": first.spec.describe(), "parameters": first.spec.n_params(), "n": n,
               "recovered": head["recovered"], "controls": head["controls"],
               "negative_controls_max": head["negative_controls_max"], "informative": head["informative"],
               "truth_start": metrics.get("truth_start"), "collapse": metrics.get("collapse"),
               "relative_stationarity": (loss.get("final_loss") or {}).get("relative_stationarity"),
               "seconds_per_iteration": loss["seconds_per_iteration"], "attack_seconds": attack_s,
               "peak_rss_gib_so_far": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20,
               "evaluate_output": printed.strip().splitlines()[-3:]}
        save_json(out / "imported.json", row)
        rows.append(row)
    print("| victim | params | routes (same victim / candidates) | s/iter | **recovered** | held-out | nulls | true images | "
          "rel. stationarity | truth-start kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c, ts = r["controls"], r["truth_start"] or {}
        nulls = "/".join(str(v) for k, v in c.items() if k.startswith("null"))
        print(f"| {Path(r['source']).name} ({r['architecture']}) | {r['parameters']:,} | {len(r['routes'])} "
              f"({r['same_victim']} / {r['same_candidates']}) | {r['seconds_per_iteration']:.3f} | **{r['recovered']}** | "
              f"{c['heldout']} | {nulls} | {c['positive']} | {r['relative_stationarity']:.3f} | "
              f"{ts.get('kept', '-')} of {r['n']} |")


if __name__ == "__main__":
    main()

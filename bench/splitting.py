"""Benchmark: does sample splitting beat its controls at equal wall-clock?

For each experiment file (victim + method + attack config, ``bench/cases/*.json``) and seed, four arms attack
the same victim:

* ``split``: the method with sample splitting (``attack.split``, enabled); its wall-clock T sets the budget;
* ``split_random``: the same schedule, splits along random directions (the control for the direction);
* ``base``: no splitting, the same m, run until wall-clock T (more iterations than ``split``);
* ``base_mbig``: no splitting, started with as many candidates as ``split`` ended with, until T.

Each arm is scored with the honest headline and the field's protocols (``trainrecon evaluate``); the table gives
recovered images with every control, final objective, the second-order report, splitting overhead, the share
of tried splits aligned with a ReLU kink (max |cos| > 0.8 with a nearby first-layer unit), and how many accepted
splits separated a blend (both children matched one to one to distinct training images, both recovered).
``OUT/<case>/seed<k>/split_pairs.png`` shows candidates before and after their splits.

    python bench/splitting.py bench/cases/haim_mnist_pixel_box.json bench/cases/buzaglo_multiclass_mnist_pixel_box.json \\
        bench/cases/loo_ntk_mnist_kernel_init.json --data-dir ../shared/data --iterations 2500 --seeds 0 1

A case is an experiment file, whose victim the bench trains, or a victim folder of the bench's layout (``SRC/victim``,
``SRC/train_images.npz``, ``SRC/heldout_images.npz``: a network trained elsewhere and imported, as
``bench/outside.py`` and ``bench/levers.py prepare`` write them), attacked by ``--method`` with its defaults; the
training and held-out images are read for the evaluation alone.  ``--attack`` (a JSON object or file) sets attack
fields for every arm.  ``--protocol same`` (the default) runs every arm with one objective: no total-variation prior,
every layer's equation counted alike, as splitting was measured before TV and ``deep_weight = 0.1`` became Haim's
defaults; ``--protocol defaults`` runs each arm as ``trainrecon reconstruct`` would, splitting on or off (the split
arms lose the default TV prior there, as a user's run does, recorded in their config.json).  Every arm is eager.

    python bench/splitting.py bench/results/levers_new --method haim --protocol defaults --data-dir ../shared/data \\
        --iterations 20000 --seeds 0 1 2 3 4 --arms split base

``--arms split base`` runs the paired comparison alone; ``summary.json["paired_split_minus_base"]`` holds, per case,
the paired differences (split - base, seeds paired) of the headline and of the papers' continuous measures
(``metrics.json["paper_measures"]``) with 95 % t intervals. ``--summarise`` runs nothing: it makes the tables and
summary.json from the arms that finished (a bench cut short, or cases run by separate processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

import numpy as np

from trainrecon import reconstruct
from trainrecon.attacks import method_named, payload_from_folder
from trainrecon.attacks.plan import plan_run
from trainrecon.config import from_dict, load_config, load_json, parse_json, save_json, to_dict
from trainrecon.errors import TrainreconError
from trainrecon.metrics.protocols import evaluate
from trainrecon.models.victim import load_victim
from trainrecon.pipeline import Experiment, evaluate_run, load_truth, train_victim
from trainrecon.refinement import SplitConfig
from trainrecon.runtime import resolve_device

ARMS = ("split", "split_random", "base", "base_mbig")


PROTOCOLS = ("same", "defaults")


def arm_config(attack, arm: str, iterations: int, seed: int, budget: float, m_final: int, split: dict,
               protocol: str = "same"):
    # every arm eager: a compiled objective would recompile at each change of m (bench/RESULTS.md, "One compiled
    # graph"), so the split arm could not have what the plain arm has
    cfg = dataclasses.replace(attack, iterations=iterations, seed=seed, checkpoint_every=max(1, iterations // 4),
                              compile="none")
    if protocol == "same":
        # one objective in every arm, without the total-variation prior (each child of a split would add its own TV
        # term) and with every layer's equation alike: the arms differ in splitting alone, as they were measured
        # before TV and deep_weight 0.1 became Haim's defaults
        cfg = dataclasses.replace(cfg, tv=0.0, deep_weight=1.0)
    if arm in ("split", "split_random"):
        s = from_dict(SplitConfig, {**split, "enabled": True, "seed": seed,
                                    "direction": "random" if arm == "split_random" else split.get("direction", "eigen")})
        return dataclasses.replace(cfg, split=s)
    m = m_final if arm == "base_mbig" else cfg.m
    # ten times the iterations, cut at the split arm's wall-clock; no splitting, even where the method would turn it
    # on for the victim (power victims: --no-split)
    return dataclasses.replace(cfg, iterations=10 * iterations, max_seconds=budget, m=m, split=SplitConfig(),
                               auto_split=False)


@dataclasses.dataclass
class Case:
    """One victim and the attack every arm starts from; ``truth`` / ``heldout``: the images files the evaluation
    reads (a victim folder's; None for an experiment file's victim: its train.json task, from --data-dir);
    ``images``: what they hold, :func:`load_truth`'s (training images, labels, held-out images, mean), read once."""

    name: str
    victim_dir: Path
    attack: object
    images: tuple
    truth: Path | None = None
    heldout: Path | None = None


def case_name(source: Path, method: str) -> str:
    return f"{source.name}_{method}" if source.is_dir() else source.stem


#: attack fields the bench sets in every arm itself (--iterations, --seeds, its budget, its split arms), and those
#: --protocol same sets (one objective in every arm): an --attack value for them would be dropped
ARM_FIELDS = ("iterations", "seed", "checkpoint_every", "max_seconds", "compile", "split", "auto_split")
SAME_FIELDS = ("tv", "deep_weight")


def check_fields(fields: dict, protocol: str) -> None:
    for k in fields:
        if k in ARM_FIELDS:
            raise TrainreconError(f"--attack: {k!r} is set by the bench in every arm (--iterations, --seeds, --split)")
        if protocol == "same" and k in SAME_FIELDS:
            raise TrainreconError(f"--attack: {k!r} is set in every arm by --protocol same (no TV prior, every layer "
                                  "alike); --protocol defaults takes it")


def load_case(source: Path, out: Path, data_dir, device, method: str, fields: dict) -> Case:
    """The case of an experiment file (its victim trained into ``out / "victim"``) or of a victim folder (its files
    checked: the training and held-out images read as the evaluation will read them)."""
    if source.is_dir():
        victim_dir = source / "victim"
        files = (victim_dir, source / "train_images.npz", source / "heldout_images.npz")
        missing = [f for f in files if not f.exists()]
        if missing:
            raise TrainreconError(f"{missing[0]}: not found (a victim folder holds victim/, train_images.npz and "
                                  "heldout_images.npz)")
        attack = from_dict(method_named(method).Config, fields, "--attack")
        images = load_truth(load_victim(victim_dir), None, files[1], files[2])  # refused here, before any arm runs
        return Case(case_name(source, method), victim_dir, attack, images, files[1], files[2])
    exp = load_config(Experiment, source)
    train_cfg, attack = exp.configs(str(source))
    if fields:
        attack = from_dict(type(attack), {**to_dict(attack), **fields}, "--attack")
    victim_dir = out / "victim"
    train_victim(exp.task, train_cfg, victim_dir, data_dir, device, log=lambda *a: None)
    images = load_truth(load_victim(victim_dir), data_dir, None, None)  # the task's, from --data-dir
    return Case(case_name(source, method), victim_dir, attack, images)


def separated_blends(run: Path, metrics: dict, pairs: dict) -> dict:
    """Accepted splits whose two children (same parent id, both still present) are matched one to one to two
    different training images that the headline counts as recovered."""
    c = np.load(run / "candidates.npz")
    parents, ids = c["parents"], c["ids"]
    index = pairs["hungarian"]["index"]  # candidate per training image
    rec = set(metrics["headline"].get("recovered_indices", []))
    cand_to_train = {int(j): i for i, j in enumerate(index) if j >= 0}
    fams: dict[int, list[int]] = {}
    for pos, p in enumerate(parents):
        if p >= 0:
            fams.setdefault(int(p), []).append(pos)
    both = sum(1 for kids in fams.values() if len(kids) >= 2
               and len({cand_to_train.get(k) for k in kids[:2]} - {None}) == 2
               and all(cand_to_train.get(k) in rec for k in kids[:2]))
    return {"families": len(fams), "separated": both, "ids": len(ids)}


def pairs_png(run: Path, mean: np.ndarray, path: Path) -> None:
    from trainrecon.pictures import candidate_grid

    f = run / "split_images.npz"
    if not f.is_file():
        return
    x = np.load(f)["x"][:20]  # (k, 3, C, H, W): parent, child +, child -
    candidate_grid(x.reshape(-1, *x.shape[2:]), mean, path, max_images=60)


def run_case(case: Case, out: Path, data_dir, device, seeds, iterations, split: dict, arms=ARMS,
             protocol: str = "same") -> list[dict]:
    victim_dir, attack = case.victim_dir, case.attack
    payload = payload_from_folder(victim_dir)
    rows = []
    for seed in seeds:
        budget, m_final = 0.0, 0
        for arm in [a for a in ARMS if a in arms]:  # the split arm first: it sets the others' budget
            run = out / f"seed{seed}" / arm
            cfg = arm_config(attack, arm, iterations, seed, budget, m_final, split, protocol)
            t0 = time.time()
            res = reconstruct(payload, cfg, run, device, resume=True, log=lambda *a: None).stats
            wall = time.time() - t0
            if arm == "split":  # the budget of the other arms: this arm's wall-clock when it first finished
                fixed = out / f"seed{seed}" / "budget.json"
                if not fixed.is_file():
                    save_json(fixed, {"seconds": res["seconds"], "m": res["m"]})
                budget, m_final = load_json(fixed)["seconds"], load_json(fixed)["m"]
                block = payload.spec.n_outputs if payload.spec.n_outputs > 1 else 2  # class blocks / halves
                m_final = -(-m_final // block) * block
            metrics = evaluate_run(victim_dir, [run / "candidates.npz"], run / "eval", data_dir=data_dir,
                                   truth=case.truth, heldout=case.heldout, log=lambda *a: None)
            head = metrics["headline"]
            row = {
                "case": case.name, "protocol": protocol, "seed": seed, "arm": arm,
                "m_start": cfg.m or 2 * (payload.n_train or 0),
                "m_end": res["m"], "iterations": res["iterations_done"], "seconds": res["seconds"], "wall": wall,
                "final_loss": res["final_loss"]["total"] if res["final_loss"] else None,
                "recovered": head["recovered"], "controls": head["controls"], "informative": head["informative"],
                "haim_nn_paper_gt_0.4": metrics["protocols"]["haim_nn"]["ssim_paper"]["count_gt_0.4"],
                "hungarian_classic_gt_0.5": metrics["protocols"]["hungarian"]["ssim_classic"].get("count_gt_0.5"),
                "paper_measures": metrics["paper_measures"],
                "second_order": res["second_order"], "splitting": res["splitting"],
            }
            if res["splitting"]:
                log = load_json(run / "splits.json")["splits"]
                row["kink_aligned_share"] = (sum(e["kink_alignment"] > 0.8 for e in log) / len(log)) if log else None
                x_tr, _, x_ho, mean = case.images  # evaluation side
                _, pairs = evaluate(np.load(run / "candidates.npz")["x"], x_tr, x_ho, mean)
                row["blends"] = separated_blends(run, metrics, pairs)
                pairs_png(run, payload.mean_chw(), out / f"seed{seed}" / f"{arm}_pairs.png")
            rows.append(row)
            save_json(run / "bench.json", row)
            print(f"{case.name} seed {seed} {arm:12s}: m {row['m_start']}->{row['m_end']}, {row['iterations']} its, "
                  f"{row['seconds']:.0f} s, loss {row['final_loss']:.4g}, recovered {row['recovered']} "
                  f"(held-out {head['controls']['heldout']}), min split eig "
                  f"{row['second_order']['min_splitting_eigenvalue']:.3g}", flush=True)
    return rows


def finished_rows(out: Path, seeds, arms) -> list[dict]:
    """The rows that :func:`run_case` wrote (``OUT/<case>/seed<k>/<arm>/bench.json``) for the arms that finished,
    in its order: a bench cut short is summarised without running anything again."""
    files = [out / f"seed{s}" / arm / "bench.json" for s in seeds for arm in ARMS if arm in arms]
    return [load_json(f) for f in files if f.is_file()]


def paired(rows: list[dict], arm: str = "split", against: str = "base") -> list[dict]:
    """Per case and measure (the headline and the papers' continuous measures, metrics.json's paper_measures),
    the paired differences ``arm`` - ``against`` over the seeds both ran: their mean, a 95 % t interval, and how
    many seeds favour each arm (for a measure where smaller is closer, the sign is turned so that > 0 always
    favours ``arm``)."""
    from scipy import stats

    out = []
    for case in sorted({r["case"] for r in rows}):
        by = {(r["seed"], r["arm"]): r for r in rows if r["case"] == case}
        seeds = sorted(s for s, a in by if a == arm and (s, against) in by)
        if not seeds:
            continue
        measures = [("headline recovered", lambda r: r["recovered"], 1.0)]
        for k, m in enumerate(by[(seeds[0], arm)].get("paper_measures") or []):
            sign = 1.0 if m["closer"] == "larger" else -1.0
            measures.append((f"{m['protocol']} {m['measure']}", lambda r, k=k: r["paper_measures"][k]["attack"], sign))
        for name, value, sign in measures:
            d = np.array([sign * (value(by[(s, arm)]) - value(by[(s, against)])) for s in seeds], dtype=float)
            half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
            out.append({"case": case, "measure": name, "seeds": len(d), "favours": f"{arm} > 0",
                        "mean_difference": float(d.mean()), "ci95": None if half is None else
                        [float(d.mean() - half), float(d.mean() + half)],
                        "seeds_for": int((d > 0).sum()), "seeds_against": int((d < 0).sum()),
                        "arm_mean": float(np.mean([value(by[(s, arm)]) for s in seeds])),
                        "against_mean": float(np.mean([value(by[(s, against)]) for s in seeds]))})
    return out


def paired_table(diffs: list[dict], against: str = "base") -> str:
    lines = [f"| case | measure | split (mean) | {against} (mean) | paired difference, > 0 favours split [95 % CI] | seeds for / against |",
             "|---|---|---|---|---|---|"]
    for d in diffs:
        ci = "-" if d["ci95"] is None else f"[{d['ci95'][0]:+.3g}, {d['ci95'][1]:+.3g}]"
        lines.append(f"| {d['case']} | {d['measure']} | {d['arm_mean']:.4g} | {d['against_mean']:.4g} | "
                     f"{d['mean_difference']:+.3g} {ci} | {d['seeds_for']} / {d['seeds_against']} |")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = ["| case | seed | arm | m | its | s | loss | **recovered** | held-out | nulls max | true | split kept/tried "
             "| overhead | kink-aligned | blends separated | min eig (below thr) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c = r["controls"]
        nulls = max(v for k, v in c.items() if k.startswith("null") or k == "shadow")
        sp = r["splitting"]
        so = r["second_order"]
        kept = "-" if not sp else f"{sp['accepted']}/{sp['tried']}"
        overhead = "-" if not sp else f"{100 * sp['share_of_wall_clock']:.0f}%"
        kink = "-" if r.get("kink_aligned_share") is None else f"{100 * r['kink_aligned_share']:.0f}%"
        blends = "-" if "blends" not in r else f"{r['blends']['separated']}/{r['blends']['families']}"
        lines.append(
            f"| {r['case']} | {r['seed']} | {r['arm']} | {r['m_start']}->{r['m_end']} | {r['iterations']} | {r['seconds']:.0f} "
            f"| {r['final_loss']:.4g} | **{r['recovered']}** | {c['heldout']} | {nulls} | {c['positive']} | {kept} | "
            f"{overhead} | {kink} | {blends} | {so['min_splitting_eigenvalue']:.2g} "
            f"({so['candidates_below_threshold']}/{so['m']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", type=Path, help="experiment files (bench/cases/*.json) or victim folders")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--out", default="bench/results/splitting", type=Path)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument("--method", default="haim", help="the method that attacks a victim folder (experiment files name "
                                                      "their own)")
    ap.add_argument("--attack", default="{}", help="JSON object (or a file holding one) of attack fields for every arm")
    ap.add_argument("--protocol", default="same", choices=PROTOCOLS,
                    help="same: one objective in every arm (no TV prior, every layer alike); defaults: each arm as "
                         "trainrecon reconstruct runs it")
    ap.add_argument("--split", default="{}", help="JSON object of SplitConfig fields for the split arms")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS, help="arms to run (split always runs)")
    ap.add_argument("--summarise", action="store_true",
                    help="run nothing: the tables and summary.json from the finished arms' bench.json under --out")
    a = ap.parse_args(argv)
    try:
        run(a)
    except TrainreconError as e:  # bad input: one line, and nothing written for a case not begun
        sys.exit(f"error: {e}")


def json_object(text: str, where: str) -> dict:
    """A JSON object given inline, or the file that holds one."""
    inline = text.lstrip()[:1] in ("{", "[", "") or not Path(text).is_file()
    data = parse_json(text, where) if inline else load_json(Path(text))
    if not isinstance(data, dict):
        raise TrainreconError(f"{where}: expected a JSON object")
    return data


def run(a: argparse.Namespace) -> None:
    split, fields = json_object(a.split, "--split"), json_object(a.attack, "--attack")
    from_dict(SplitConfig, split, "--split")  # refused before anything runs
    method_named(a.method)
    check_fields(fields, a.protocol)
    device = resolve_device(a.device)
    rows = []
    if a.summarise:
        for source in a.cases:
            found = finished_rows(a.out / case_name(source, a.method), a.seeds, {"split", *a.arms})
            if not found:
                raise TrainreconError(f"{a.out / case_name(source, a.method)}: no finished arm for these seeds (a "
                                      "victim folder's rows are under FOLDER_METHOD: the --method of the run)")
            rows += found
    else:
        cases = [load_case(source, a.out / case_name(source, a.method), a.data_dir, device, a.method, fields)
                 for source in a.cases]  # every case checked (and its victim trained) before any arm runs
        for case in cases:
            plan_run(payload_from_folder(case.victim_dir), arm_config(case.attack, "split", a.iterations, 0, 0.0, 0,
                                                                      split, a.protocol), device)
        for case in cases:
            rows += run_case(case, a.out / case.name, a.data_dir, device, a.seeds, a.iterations, split,
                             {"split", *a.arms}, a.protocol)
    diffs = paired(rows)
    diffs_mbig = paired(rows, against="base_mbig")  # the control for the larger final m
    diffs_random = paired(rows, against="split_random")  # the control for the split directions
    # a summary made from finished arms has neither their split config (each arm's config.json holds it) nor
    # their memory
    save_json(a.out / "summary.json", {"rows": rows, "paired_split_minus_base": diffs,
                                       "paired_split_minus_base_mbig": diffs_mbig,
                                       "paired_split_minus_split_random": diffs_random,
                                       "summarised": a.summarise,
                                       "split": None if a.summarise else to_dict(from_dict(SplitConfig, split)),
                                       "peak_rss_gib": None if a.summarise else
                                       resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                                       "_command": "python " + " ".join(sys.argv)})
    print(table(rows))
    print(paired_table(diffs))
    for against, more in (("base_mbig", diffs_mbig), ("split_random", diffs_random)):
        if more:
            print(paired_table(more, against))


if __name__ == "__main__":
    main()

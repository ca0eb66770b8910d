"""Benchmark: one set of defaults at any parameter scale (attacker-side normalisation, issue 12).

For an experiment file's victim (trained or reused from ``--victims``) and, with ``--outside``, a victim of the
same task trained outside trainrecon's trainers (plain full-batch gradient descent on the logistic loss with
PyTorch's default initialisation, stored at whatever scale it reaches, imported with ``trainrecon import``),
this script attacks copies scaled by each ``--factors`` value, with the experiment's attack config and
``normalise = "auto"`` (the default), and the unscaled and most-scaled copies once more with
``normalise = "none"`` (the behaviour before normalisation).  Each arm is evaluated with the honest headline and
its controls.  Writes ``OUT/scale.json`` and ``OUT/scale.png``.

    python bench/scale.py bench/cases/haim_mnist_pixel_box.json --data-dir ../shared/data \\
        --victims bench/results/baselines --out bench/results/scale --outside
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from trainrecon import reconstruct  # noqa: E402
from trainrecon.attacks import payload_from_folder  # noqa: E402
from trainrecon.config import save_json, to_dict  # noqa: E402
from trainrecon.data.tasks import build_task  # noqa: E402
from trainrecon.models.stationarity import margin  # noqa: E402
from trainrecon.models.parameters import forward  # noqa: E402
from trainrecon.models.victim import load_victim, save_victim  # noqa: E402
from trainrecon.models.user_weights import import_victim
from trainrecon.pipeline import Experiment, evaluate_run  # noqa: E402

from common import case_parser, case_victim  # noqa: E402


def scaled_copy(src: Path, dst: Path, factor: float) -> Path:
    """The victim with every parameter multiplied by ``factor`` (its training record kept for evaluation)."""
    if not (dst / "model.safetensors").is_file():
        v = load_victim(src)
        save_victim(dst, v.spec, [p * factor for p in v.params], v.input_mean, v.train_info,
                    None if v.init_params is None else [p * factor for p in v.init_params])
    return dst


def train_outside(exp: Experiment, data_dir, out: Path, steps: int, lr: float, seed: int) -> Path:
    """A binary victim trained by plain PyTorch (nn.Sequential of nn.Linear, bias on the first layer only, as
    Haim's reference; default init; full-batch SGD on BCE), then imported as an outside user would."""
    if (out / "model.safetensors").is_file():
        return out
    data = build_task(exp.task, data_dir)
    hidden = exp.train.get("hidden", [200, 200])
    widths = [int(np.prod(data.x_train.shape[1:]))] + list(hidden) + [1]
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [torch.nn.Linear(a, b, bias=i == 0, dtype=torch.float64)] + ([torch.nn.ReLU()] if i < len(widths) - 2 else [])
    net = torch.nn.Sequential(*layers)
    x = torch.as_tensor(data.x_train - data.mean).reshape(len(data.x_train), -1)
    y = torch.as_tensor(data.y_train, dtype=torch.float64)  # +-1
    y01 = (y + 1) / 2
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).reshape(-1), y01)
        loss.backward()
        opt.step()
    state = {}
    k = 0
    for mod in net:
        if isinstance(mod, torch.nn.Linear):
            state[f"layers.{k}.weight"] = mod.weight.detach().clone()
            if mod.bias is not None:
                state[f"layers.{k}.bias"] = mod.bias.detach().clone()
            k += 1
    scratch = out.parent / (out.name + "_files")
    scratch.mkdir(parents=True, exist_ok=True)
    save_file(state, str(scratch / "weights.safetensors"))
    save_json(scratch / "architecture.json", {"widths": widths, "bias": [i == 0 for i in range(len(widths) - 1)],
                                             "input_shape": list(data.x_train.shape[1:])})
    np.savez(scratch / "mean.npz", x=data.mean)
    import_victim(scratch / "weights.safetensors", scratch / "architecture.json", out, scratch / "mean.npz")
    v = load_victim(out)  # the evaluation side needs the task: add the training record an outside user would pass
    from trainrecon.config import load_json

    info = {**load_json(out / "train.json"), "task": to_dict(exp.task), "train_indices": data.idx_train.tolist(),
            "trainer": f"outside: torch SGD lr {lr}, {steps} full-batch steps on BCE, default init, seed {seed}"}
    with torch.no_grad():
        q = margin(forward(v.spec, v.params, x), y)
    info["min_margin"] = float(q.min())
    save_json(out / "train.json", info)
    return out


def arm(name: str, victim: Path, attack_cfg, out: Path, data_dir, device: str) -> dict:
    t0 = time.time()
    try:
        res = reconstruct(payload_from_folder(victim), attack_cfg, out / name, device, resume=True,
                          log=lambda *_: None).stats
    except Exception as e:  # a diverging arm is a result here, not a crash
        return {"arm": name, "error": str(e), "seconds": time.time() - t0}
    metrics = evaluate_run(victim, [out / name / "candidates.npz"], out / name, data_dir=data_dir, log=lambda *_: None)
    h = metrics["headline"]
    return {"arm": name, "recovered": h["recovered"], "controls": h["controls"], "n": metrics["n"],
            "normalisation": res["normalisation"], "seconds": res["seconds"],
            "refit_residual": res["refit_residual"]}


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__doc__, "bench/results/scale")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.01, 1.0, 100.0])
    ap.add_argument("--outside", action="store_true", help="also a victim trained by plain PyTorch SGD")
    ap.add_argument("--outside-steps", type=int, default=20000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="attack seeds (added to the case's)")
    a = ap.parse_args(argv)
    exp, _, attack_cfg, trained, out = case_victim(a)
    if a.iterations:
        attack_cfg = dataclasses.replace(attack_cfg, iterations=a.iterations)
    victims = {"trainrecon": trained}
    if a.outside:
        victims["outside"] = train_outside(exp, a.data_dir, out / "outside_victim", a.outside_steps, 0.05, 0)
    rows = []
    for vname, vdir in victims.items():
        for seed in a.seeds:
            tag = "" if seed == 0 else f"_seed{seed}"
            runs = [("auto", f) for f in a.factors] + [("none", f) for f in (1.0, max(a.factors))]
            for mode, f in runs:
                copy = scaled_copy(vdir, out / f"{vname}_x{f:g}", f)
                cfg = dataclasses.replace(attack_cfg, normalise=mode, seed=attack_cfg.seed + seed)
                rows.append({"victim": vname, "factor": f, "seed": seed,
                             **arm(mode + tag, copy, cfg, out / f"{vname}_x{f:g}_runs", a.data_dir, a.device)})
                print(vname, f, mode, seed, rows[-1].get("recovered"), rows[-1].get("error", ""), flush=True)
    save_json(out / "scale.json", {"case": a.case.stem, "attack": attack_cfg, "rows": rows,
                                   "_command": "python " + " ".join(sys.argv)})
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{r['victim']}\nx{r['factor']:g} {r['arm']}" for r in rows]
    ax.bar(range(len(rows)), [r.get("recovered", 0) for r in rows],
           color=["tab:blue" if r["arm"].startswith("auto") else "tab:gray" for r in rows])
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("recovered (headline)")
    ax.set_title(f"{a.case.stem}: defaults at every parameter scale (blue: normalise auto, grey: none)")
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=120)
    for r in rows:
        print(f"| {r['victim']} | x{r['factor']:g} | {r['arm']} | {r['seed']} | {r.get('recovered', 'diverged')} | "
              f"{r.get('normalisation', {}).get('kappa', '')} | {r['seconds']:.0f} s |")


if __name__ == "__main__":
    main()

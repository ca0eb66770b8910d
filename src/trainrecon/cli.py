"""Command line: ``trainrecon demo | train | reconstruct | evaluate | sweep | union | import | run | ...``.

Each command takes a few common options; everything else comes from a JSON config (``--config``) whose
fields are the dataclass fields of the corresponding config, validated on load.  User errors print one line
and exit with status 2.
"""

from __future__ import annotations

# Each command imports what it needs inside its function: the CLI answers --help, refuses bad arguments and
# takes Ctrl-C before torch, scipy, scikit-learn and matplotlib are loaded (seconds on a cold start).

import dataclasses
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .config import config_from, from_dict
from .attacks import METHODS
from .errors import Interrupted, TrainreconError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reconstruct a network's training set from its weights, and score the leak.")

DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto")


def _device(name: str):
    from .runtime import resolve_device

    return resolve_device(name)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder"),
    seed: int = typer.Option(0, help="seed for the victim and the attack"),
    device: str = DeviceOpt,
) -> None:
    """Offline demo (about 2 minutes): train an MNIST even/odd victim (n = 40, 784-200-200-1) on the MNIST subset
    shipped with the package, attack it with the Haim KKT attack, score it with every control; writes report.html,
    grid.png, evidence.png and metrics.json."""
    from .pipeline import demo as run_demo

    run_demo(out, _device(device), seed)


@app.command()
def train(
    out: Path = typer.Argument(..., help="victim folder to write"),
    trainer: str = typer.Option("kkt", help="kkt (logistic / cross-entropy toward max-margin), regression "
                                "(MSE or Huber with weight decay), ntk (Loo: wide, SGD with momentum, theta_0 saved) "
                                "or polynomial (two-layer x^alpha network, binary tasks)"),
    dataset: Optional[str] = typer.Option(None, help="mnist, cifar10, digits or npz"),
    task: Optional[str] = typer.Option(None, help="odd_even, vehicles_animals or multiclass"),
    n_per_class: Optional[int] = typer.Option(None, help="training images per class"),
    hidden: Optional[str] = typer.Option(None, help="hidden widths, e.g. 500,500"),
    data_dir: Optional[Path] = typer.Option(None, help="folder with the data files (default $TRAINRECON_DATA or ./data)"),
    task_config: Optional[Path] = typer.Option(None, help="JSON with TaskConfig fields"),
    config: Optional[Path] = typer.Option(None, help="JSON with the trainer's config fields"),
    arch: Optional[Path] = typer.Option(None, help="model.json with kind 'sequential': train this layer list "
                                        "(e.g. a CNN) instead of an MLP"),
    seed: Optional[int] = typer.Option(None),
    device: str = DeviceOpt,
) -> None:
    """Train a victim (resumes from OUT/checkpoint)."""
    from .data.tasks import TaskConfig
    from .pipeline import train_victim
    from .training import TRAINERS

    trainer_cfg = TRAINERS.get(trainer, "--trainer").config
    tcfg = config_from(TaskConfig, task_config, {"dataset": dataset, "task": task, "n_per_class": n_per_class})
    widths = None
    if hidden is not None:
        try:
            widths = [int(v) for v in hidden.split(",")]
        except ValueError:
            raise TrainreconError(f"--hidden: expected comma-separated integers, got {hidden!r}") from None
    layers = None
    if arch is not None:
        from .models.user_weights import layers_from_file

        if hidden is not None:
            raise TrainreconError("--hidden: give hidden widths or --arch, not both")
        layers = layers_from_file(arch)
    rcfg = config_from(trainer_cfg, config, {"hidden": widths, "seed": seed, "layers": layers})
    train_victim(tcfg, rcfg, out, data_dir, _device(device))


@app.command()
def reconstruct(
    victim: Path = typer.Argument(..., help="victim folder"),
    out: Path = typer.Argument(..., help="output folder"),
    method: str = typer.Option("auto", help="auto (the bench's winner for what the attacker is given) or one of: "
                               + ", ".join(METHODS)),
    config: Optional[Path] = typer.Option(None, help="JSON with the method's config fields"),
    m: Optional[int] = typer.Option(None, help="number of candidates (default 2n)"),
    iterations: Optional[int] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    given: Optional[str] = typer.Option(None, "--given", help="threat level: weights, init (plus theta_0), recipe (plus "
                                        "theta_0 and the training recipe); default: everything the victim folder has"),
    resume: bool = typer.Option(False, "--resume", help="continue from OUT's checkpoint"),
    disclose_n: bool = typer.Option(True, "--disclose-n/--no-disclose-n",
                                    help="whether the attacker is told the training-set size (m defaults to 2n)"),
    split: Optional[bool] = typer.Option(None, "--split/--no-split",
                                         help="refine by sample splitting (settings: the config's 'split'); default: "
                                              "on where it wins (power victims), off elsewhere"),
    device: str = DeviceOpt,
) -> None:
    """Reconstruct training data from a victim's weights; the attacker is given only the weights, the input
    mean, n if disclosed, and by threat level (--given) the initial weights and the training recipe (recorded in
    config.json)."""
    from .api import reconstruct as run
    from .attacks import method_named, payload_from_folder
    from .attacks.choice import default_attack
    from .runfolder import RunFolder

    payload = payload_from_folder(victim, disclose_n)
    preset, why = {}, None
    if method == "auto":
        method, preset, why = default_attack(payload, given or "all")
    cfg = config_from(method_named(method).Config, config, {"m": m, "iterations": iterations, "seed": seed,
                                                            "given": given}, base=preset)
    payload.at_level(cfg.given, "--given" if given else "attack.given")  # a level the victim lacks: refused here
    if split is not None:  # explicit: on, or off even where the method would turn it on
        cfg = dataclasses.replace(cfg, split=dataclasses.replace(cfg.split, enabled=split), auto_split=split)
    if why:
        typer.echo(f"method: {method} ({why}; --method names another)")
    folder = RunFolder(out).claim()
    rec = run(payload, cfg, folder, _device(device), resume=resume)
    res = rec.stats
    so = res["second_order"]
    low = so["min_splitting_eigenvalue"]
    typer.echo(f"wrote {out / 'candidates.npz'} ({res['m']} candidates, {res['seconds_per_iteration'] * 1e3:.1f} ms/iteration); "
               f"second order: |grad| {so['grad_norm']:.3g}, min splitting eigenvalue "
               + ("none (the curvature overflowed)" if low is None else f"{low:.3g}")
               + f" ({so['candidates_below_threshold']} of {so['m']} below -{so['threshold']:g}"
               + (f"; {so['candidates_without_eigenvalue']} without one" if so.get("candidates_without_eigenvalue") else "")
               + ")")
    if res.get("restarts"):
        rs = res["restarts"]
        typer.echo(f"restarts: {rs['restarts']} independent descents, kept where they agree: each of the {res['m']} "
                   f"candidates the pixel median of one image's copies (found by {max(rs['group_sizes'])} to "
                   f"{min(rs['group_sizes'])} restarts; attack.restarts)")
    norm = res["normalisation"]
    typer.echo(f"scale: attacked theta / {norm['kappa']:.4g} (homogeneous of degree {norm['degree']}; multipliers x "
               f"{norm['multipliers_to_victim_scale']:.4g} at the victim's scale)" if norm["applied"]
               else f"scale: the victim's own ({norm['reason']})")
    given_record = rec.config["payload"]
    typer.echo(f"threat level: {given_record['threat_level']} (the weights"
               + (", theta_0" if given_record["initial_weights"] else "")
               + (" and the training recipe" if isinstance(given_record["recipe"], dict) else "") + " were given)")
    if cfg.init_tolerance:
        typer.echo(f"residual: each weight forgiven up to {cfg.init_tolerance:g} x PyTorch's default-init bound "
                   "1/sqrt(fan_in) (attack.init_tolerance)")
    adapted = rec.config.get("adapted") or {}
    if adapted.get("reason"):
        typer.echo(f"defaults for this victim: {adapted['reason']}")
    why = f" ({adapted['split']})" if "split" in adapted else ""
    if res["splitting"]:
        sp = res["splitting"]
        typer.echo(f"splitting: {sp['accepted']} of {sp['tried']} splits kept in {sp['rounds']} rounds, "
                   f"{100 * sp['share_of_wall_clock']:.0f}% of wall-clock (log: {out / 'splits.json'}){why}")
    else:
        typer.echo("splitting: off (--no-split)" if split is False else
                   "splitting: off (the default for this victim: no gain over the plain attack at equal wall-clock on "
                   "ReLU-family victims, bench/RESULTS.md; --split turns it on)")


@app.command()
def evaluate(
    victim: Path = typer.Argument(..., help="victim folder"),
    candidates: list[Path] = typer.Argument(..., help="one or more .npz with x (m, C, H, W) in centred space; unioned"),
    out: Path = typer.Option(..., "--out", help="folder for metrics.json, report.html, grid.png, evidence.png, l2_curve.png"),
    data_dir: Optional[Path] = typer.Option(None, help="data folder for the task recorded in train.json"),
    truth: Optional[Path] = typer.Option(None, help=".npz (x, y) of the training set, instead of train.json's task"),
    heldout: Optional[Path] = typer.Option(None, help=".npz of images the victim never saw (more than n): the first n "
                                           "are the held-out control, all of them the headline's comparison pool"),
    null: list[str] = typer.Option([], "--null", help="NAME=FILE: a further negative-control candidate set (.npz, "
                                   "centred in this victim's input space), added beside the built-in controls, whose "
                                   "names it may not take; e.g. shadow=runs/shadow_rec/candidates_in_victim_space.npz; repeatable"),
    threshold: Optional[float] = typer.Option(None, help="the headline's similarity threshold (default 0.5)"),
    allow_cross_victim: bool = typer.Option(False, "--allow-cross-victim", help="score candidates made on another "
                                            "victim (a deliberate experiment; recorded in metrics.json)"),
    allow_mixed_methods: bool = typer.Option(False, "--allow-mixed-methods", help="union candidate files made with "
                                             "different methods (recorded in metrics.json)"),
    truth_start: bool = typer.Option(False, "--truth-start", help="also rerun the run's attack, as long as it ran, "
                                     "started at the training images, and report how many it keeps (the attack's own "
                                     "positive control: does its objective hold the training set at all?)"),
) -> None:
    """Score candidates against the victim's training set (the only step that sees it), with controls."""
    from .metrics.protocols import check_null_names
    from .metrics.headline import HeadlineRule
    from .pipeline import evaluate_run
    from .provenance import OutputFolder
    from .pipeline.evaluation import EVALUATION_FILES

    nulls: dict[str, Path] = {}
    for item in null:
        name, sep, path = item.partition("=")
        if not sep or not path.strip():
            raise TrainreconError(f"--null: expected NAME=FILE, got {item!r}")
        check_null_names(list(nulls) + [name])  # empty, spaced, repeated, or a built-in control's name
        nulls[name] = Path(path)
    rule = config_from(HeadlineRule, None, {"threshold": threshold})
    OutputFolder(out, "evaluate", EVALUATION_FILES).claim()
    evaluate_run(victim, candidates, out, data_dir, truth, heldout, null_files=nulls, rule=rule,
                 allow_cross_victim=allow_cross_victim, allow_mixed_methods=allow_mixed_methods, truth_start=truth_start)


@app.command()
def audit(
    victim: Path = typer.Argument(..., help="victim folder (with theta_0 and the recipe where the owner has them)"),
    out: Path = typer.Option(..., "--out", help="folder for audit.json, report.html and one subfolder per level"),
    data_dir: Optional[Path] = typer.Option(None, help="data folder for the task recorded in train.json"),
    truth: Optional[Path] = typer.Option(None, help=".npz (x, y) of the training set, instead of train.json's task"),
    heldout: Optional[Path] = typer.Option(None, help=".npz of images the victim never saw (more than n)"),
    minutes: float = typer.Option(10.0, help="wall-clock minutes per threat level's attack"),
    given: list[str] = typer.Option([], "--given", help="threat levels to audit (repeatable; default: every level the "
                                    "victim supports: weights, init, recipe)"),
    truth_start: bool = typer.Option(False, "--truth-start", help="also run each attack's own positive control"),
    device: str = DeviceOpt,
) -> None:
    """The owner's audit: at each threat level (the weights; plus theta_0; plus the recipe), the bench's winning
    attack for that level, scored with every control; one report with the verdict per level."""
    from .pipeline.audit import audit_victim

    result = audit_victim(victim, out, data_dir, truth, heldout, minutes, list(given) or None, truth_start,
                          str(_device(device)), log=typer.echo)
    for r in result["levels"]:
        typer.echo(f"{r['level']}: {r['method']} recovered {r['recovered']} of {r['n']} ({r['verdict_kind']}); "
                   f"controls {r['controls']}")
    typer.echo(f"wrote {out / 'report.html'}")


@app.command()
def sweep(
    victim: Path = typer.Argument(..., help="victim folder"),
    out: Path = typer.Argument(..., help="sweep folder: trials/<k>/, study.journal, sweep.json (rerun to continue)"),
    method: Optional[str] = typer.Option(None, help="one of: " + ", ".join(METHODS) + " (default haim)"),
    trials: Optional[int] = typer.Option(None, help="finished trials wanted in all, over every worker and rerun"),
    workers: Optional[int] = typer.Option(None, help="local worker processes"),
    storage: Optional[str] = typer.Option(None, help="database URL shared by workers on several machines, e.g. "
                                          "postgresql://user@host:5432/db (default: the journal file OUT/study.journal)"),
    study: Optional[str] = typer.Option(None, help="study name (default: method and victim hash)"),
    config: Optional[Path] = typer.Option(None, help="JSON with SweepConfig fields; its 'base' holds the method's "
                                          "config fields the trials start from"),
    iterations: Optional[int] = typer.Option(None, help="attack iterations per trial"),
    seed: Optional[int] = typer.Option(None),
    score_with_truth: Optional[bool] = typer.Option(None, "--score-with-truth/--no-score-with-truth", help="research mode: also score every "
                                                    "trial with the honest headline (needs --data-dir or --truth)"),
    data_dir: Optional[Path] = typer.Option(None, help="data folder for the task in train.json (--score-with-truth)"),
    truth: Optional[Path] = typer.Option(None, help=".npz (x, y) of the training set (--score-with-truth)"),
    heldout: Optional[Path] = typer.Option(None, help=".npz of held-out images (--score-with-truth)"),
    device: str = DeviceOpt,
) -> None:
    """Search the method's sensitive hyper-parameters with optuna, scored without the training set."""
    from .pipeline.sweep import run_sweep
    from .sweeps import SweepConfig

    cfg = config_from(SweepConfig, config, {"method": method, "trials": trials, "workers": workers, "storage": storage,
                                            "study": study, "iterations": iterations, "seed": seed,
                                            "score_with_truth": score_with_truth})
    run_sweep(cfg, victim, out, str(_device(device)), data_dir, truth, heldout, log=typer.echo)


@app.command()
def union(
    victim: Path = typer.Argument(..., help="victim folder"),
    runs: list[Path] = typer.Argument(None, help="run folders (or candidate .npz files) to merge"),
    out: Path = typer.Option(..., "--out", help="folder for union.npz, metrics.json, report.html, grid.png"),
    sweep: Optional[Path] = typer.Option(None, help="a sweep's output folder: merge its best trials"),
    top: int = typer.Option(0, help="with --sweep: how many of the best complete trials (0: all)"),
    dedupe: float = typer.Option(0.99, help="drop a candidate whose NCC with a kept one exceeds this"),
    data_dir: Optional[Path] = typer.Option(None, help="data folder for the task recorded in train.json"),
    truth: Optional[Path] = typer.Option(None, help=".npz (x, y) of the training set"),
    heldout: Optional[Path] = typer.Option(None, help=".npz of held-out images"),
    allow_cross_victim: bool = typer.Option(False, "--allow-cross-victim", help="merge runs made on another victim "
                                            "(a deliberate experiment; recorded in metrics.json)"),
    allow_mixed_methods: bool = typer.Option(False, "--allow-mixed-methods", help="merge runs of different methods "
                                             "(recorded in metrics.json)"),
) -> None:
    """Merge the candidates of several runs (or a sweep's best trials), drop near-duplicates, evaluate."""
    from .pipeline.sweep import union_runs

    if top < 0 or not -1 <= dedupe <= 1:
        raise TrainreconError("--top must be >= 0 and --dedupe in [-1, 1]")
    union_runs(victim, out, list(runs or []), sweep, top, dedupe, data_dir, truth, heldout, log=typer.echo,
               allow_cross_victim=allow_cross_victim, allow_mixed_methods=allow_mixed_methods)


def _shape_option(value: Optional[str], name: str) -> Optional[list[int]]:
    if value is None:
        return None
    try:
        shape = [int(v) for v in value.split(",")]
    except ValueError:
        raise TrainreconError(f"{name}: expected C,H,W (three comma-separated integers), got {value!r}") from None
    if len(shape) != 3 or min(shape) <= 0:
        raise TrainreconError(f"{name}: expected C,H,W (three positive integers), got {value!r}")
    return shape


@app.command("import")
def import_(
    weights: Path = typer.Argument(..., help="state dict: .safetensors, or a PyTorch file (loaded weights_only)"),
    args: list[str] = typer.Argument(..., help="[ARCHITECTURE.json] OUT: model.json fields (an MLP's widths, "
                                     "bias, activation, input_shape, or kind 'sequential' with a layer list); "
                                     "without it an MLP state dict's architecture is inferred from its shapes"),
    mean: Optional[Path] = typer.Option(None, help=".npz whose x is the input mean image"),
    module: Optional[str] = typer.Option(None, help="FILE.py:FACTORY: your own code builds the nn.Module the state "
                                         "dict loads into; the victim is written as its layer list"),
    input_shape: Optional[str] = typer.Option(None, help="C,H,W of one input (needed with --module)"),
    init: Optional[Path] = typer.Option(None, "--init", help="the network's initial state dict (theta_0, named as "
                                        "WEIGHTS): the threat level 'init'"),
    init_seed: Optional[int] = typer.Option(None, "--init-seed", help="with --module: theta_0 is what FACTORY builds "
                                            "after torch.manual_seed(INIT_SEED)"),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="JSON of the training recipe (optimizer, lr, loss, "
                                          "batch_size, epochs, ...; never data): with theta_0, the threat level 'recipe'"),
    n: Optional[int] = typer.Option(None, "--n", help="the number of training images, told to attackers (m defaults "
                                    "to 2n)"),
) -> None:
    """Turn a user's weights (plus a layer list, a module factory, or nothing for an MLP) into a victim folder,
    with its initial weights and training recipe when given (what the owner knows: the threat levels)."""
    from .provenance import OutputFolder

    if len(args) not in (1, 2):
        raise TrainreconError("import: expected WEIGHTS [ARCHITECTURE.json] OUT")
    architecture, out = (Path(args[0]), Path(args[1])) if len(args) == 2 else (None, Path(args[0]))
    shape = _shape_option(input_shape, "--input-shape")
    if recipe is not None:
        from .models.recipe import load_recipe

        recipe = load_recipe(recipe)  # checked before the folder is made
    if n is not None:
        from .models.user_weights import imported_n

        imported_n(n)  # checked before the folder is made
    if module is not None:
        from .models.user_weights import import_module_victim

        if architecture is not None:
            raise TrainreconError("import: give an architecture file or --module, not both")
        if shape is None:
            raise TrainreconError("--input-shape: --module needs the input shape C,H,W")
        with OutputFolder(out, "import"):
            import_module_victim(weights, module, shape, out, mean, init, init_seed, recipe, n)
    else:
        from .models.user_weights import import_victim

        if architecture is not None and shape is not None:
            raise TrainreconError("--input-shape: the architecture file gives the input shape")
        if init_seed is not None:
            raise TrainreconError("--init-seed: needs --module (the factory that builds theta_0 from the seed); give "
                                  "the initial state dict with --init")
        with OutputFolder(out, "import"):
            import_victim(weights, architecture, out, mean, shape, init, recipe, n)
    from .models.victim import load_victim

    level = load_victim(out, training_record=False).level
    typer.echo(f"wrote victim folder {out} (threat levels up to {level!r})")


@app.command("run")
def run_(
    experiment: Path = typer.Argument(..., help="experiment JSON: task, trainer, train, method, attack (bench/cases/)"),
    out: Path = typer.Option(..., "--out", help="output folder (rerun to resume)"),
    data_dir: Optional[Path] = typer.Option(None, help="data folder (default $TRAINRECON_DATA or ./data)"),
    device: str = DeviceOpt,
) -> None:
    """Train the victim, attack it and evaluate it, as one experiment file says."""
    from .pipeline import run_experiment

    run_experiment(experiment, out, data_dir, _device(device))


@app.command("train-poly")
def train_poly(
    out: Path = typer.Argument(..., help="victim folder to write"),
    alpha: int = typer.Option(3, help="degree of t -> t^alpha"),
    width: int = typer.Option(50, help="number of neurons"),
    n: int = typer.Option(3, help="training samples"),
    d: int = typer.Option(20, help="input dimension"),
    data: str = typer.Option("sphere", help="sphere, gaussian, digits or mnist (PCA to d dims)"),
    steps: int = typer.Option(5000, help="normalised-GD steps"),
    fixed_second_layer: bool = typer.Option(False, "--fixed-second-layer", help="train W only, a_k = +-1/sqrt(K)"),
    config: Optional[Path] = typer.Option(None, help="JSON with PolyTrainConfig fields"),
    data_dir: Optional[Path] = typer.Option(None, help="data folder for digits/mnist"),
    seed: int = typer.Option(0),
) -> None:
    """Train a two-layer polynomial network toward the KKT direction (identifiability experiments)."""
    from .identifiability.polynomial import PolyDataConfig
    from .training.polynomial import PolyTrainConfig
    from .identifiability.power_victims import make_trained_victim

    dcfg = from_dict(PolyDataConfig, {"kind": data, "n": n, "d": d, "seed": seed}, "option")
    tcfg = config_from(PolyTrainConfig, config, {"alpha": alpha, "width": width, "steps": steps, "seed": seed,
                                          "train_second_layer": False if fixed_second_layer else None})
    info = make_trained_victim(out, dcfg, tcfg, data_dir)
    typer.echo(f"{out}: already trained with this config; nothing to do" if info.get("reused")
               else f"wrote victim folder {out}")


@app.command("exact-kkt")
def exact_kkt(
    out: Path = typer.Argument(..., help="victim folder to write"),
    alpha: int = typer.Option(3),
    n: int = typer.Option(5),
    d: int = typer.Option(10),
    data: str = typer.Option("gaussian", help="sample directions: sphere, gaussian, digits or mnist"),
    data_dir: Optional[Path] = typer.Option(None),
    seed: int = typer.Option(0),
) -> None:
    """Build a network at an exact KKT point for given data (neurons on the moment tensor's eigenvectors)."""
    from .identifiability.polynomial import PolyDataConfig
    from .identifiability.power_victims import make_exact_victim

    dcfg = from_dict(PolyDataConfig, {"kind": data, "n": n, "d": d, "seed": seed}, "option")
    info = make_exact_victim(out, dcfg, alpha, seed, data_dir)
    typer.echo(f"{out}: already built with this config ({info['n_neurons']} neurons); nothing to do" if info.get("reused")
               else f"wrote victim folder {out} ({info['n_neurons']} neurons)")


@app.command()
def identify(
    victim: Path = typer.Argument(..., help="a two-layer polynomial victim folder"),
    out: Path = typer.Option(..., "--out", help="folder for report.json, samples.npz, identify.png"),
    config: Optional[Path] = typer.Option(None, help="JSON with IdentifyConfig fields"),
    margin: Optional[float] = typer.Option(None, help="the victim's margin y f(x) of active samples, if known"),
    polish: Optional[bool] = typer.Option(None, "--polish/--no-polish", help="Levenberg-Marquardt on the KKT equations"),
    truth: Optional[Path] = typer.Option(None, help=".npz (x, y) of the training samples, for scoring only"),
    score: bool = typer.Option(True, "--score/--no-score", help="score against the samples rebuilt from train.json"),
    data_dir: Optional[Path] = typer.Option(None),
) -> None:
    """Certified algebraic reconstruction from a polynomial network: verdict, samples, diagnostics."""
    from .identifiability.certified import IdentifyConfig
    from .pipeline import identify_run

    from .provenance import OutputFolder
    from .pipeline.identify import IDENTIFY_FILES

    cfg = config_from(IdentifyConfig, config, {"margin": margin, "polish": polish})
    with OutputFolder(out, "identify", IDENTIFY_FILES).claim():
        identify_run(victim, out, cfg, truth, score, data_dir)


@app.command("identify-demo")
def identify_demo(out: Path = typer.Option(Path("runs/identify-demo"), help="output folder")) -> None:
    """Exact recovery at exact KKT points, the alpha = 2 counterexample, and a trained network (offline, < 1 min)."""
    from .pipeline import identify_demo as run

    run(out)


def main() -> None:
    """Run the CLI; every failure is one line on stderr: user errors exit 2, interruptions 130 (after saving a
    checkpoint), anything unexpected 1 (``TRAINRECON_DEBUG=1`` shows its traceback)."""
    # typer >= 0.29 vendors its own click and exposes its exception families (pinned in pyproject.toml)
    exits, aborts, usage = typer.Exit, typer.Abort, typer.TyperException
    try:
        rv = app(standalone_mode=False)
        if isinstance(rv, int) and rv:  # no_args_is_help and friends return an exit code
            sys.exit(rv)
    except Interrupted as e:
        typer.echo(f"interrupted: {e}", err=True)
        sys.exit(130)
    except TrainreconError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except exits as e:
        sys.exit(getattr(e, "exit_code", 0))
    except aborts:
        typer.echo("interrupted before any work was saved", err=True)
        sys.exit(130)
    except usage as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # typer printed the help already
        if hasattr(e, "show"):
            e.show()
        else:
            typer.echo(f"error: {e}", err=True)
        sys.exit(getattr(e, "exit_code", 2))
    except OSError as e:
        where = e.filename if e.filename is not None else "file system"
        typer.echo(f"error: {where}: {e.strerror or e}", err=True)
        sys.exit(2)
    except MemoryError:
        typer.echo("error: out of memory; make the problem smaller (fewer candidates, narrower network)", err=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001: the promise is one line, never a traceback
        if os.environ.get("TRAINRECON_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        typer.echo(f"error: unexpected {type(e).__name__}: {msg} (rerun with TRAINRECON_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


__all__ = ["app", "main"]

"""What the single-case benchmarks share: their command-line head and the case's victim (reused or trained)."""

from __future__ import annotations

import argparse
from pathlib import Path

from trainrecon.config import load_config
from trainrecon.pipeline import Experiment, train_victim


def case_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """CASE, --data-dir, --victims (bench/baselines.py results to reuse victims from), --out, --iterations, --device."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("case", type=Path, help="an experiment file (bench/cases/*.json)")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--victims", type=Path, default=None, help="bench/baselines.py results to reuse victims from")
    ap.add_argument("--out", type=Path, default=Path(out))
    ap.add_argument("--iterations", type=int, default=0, help="attack iterations per run (default: the case's)")
    ap.add_argument("--device", default="cpu")
    return ap


def case_victim(a: argparse.Namespace):
    """(experiment, trainer config, attack config, victim folder, output folder): the victim from --victims when it
    is there, else trained (or reused) in OUT/<case>/victim."""
    exp = load_config(Experiment, a.case)
    train_cfg, attack_cfg = exp.configs(str(a.case))
    out = a.out / a.case.stem
    reuse = a.victims / a.case.stem / "victim" if a.victims else None
    victim = reuse if reuse and (reuse / "model.safetensors").is_file() else out / "victim"
    if victim != reuse:
        train_victim(exp.task, train_cfg, victim, a.data_dir, a.device)  # reuses a finished folder of this config
    return exp, train_cfg, attack_cfg, victim, out

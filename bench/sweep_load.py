"""Benchmark: sweeps under load and faults -- W worker processes on one study, two of them SIGKILLed at random
instants and restarted, on a real PostgreSQL server (started as the tests start it) and on the journal file.

    python bench/sweep_load.py [--workers 8] [--trials 64] [--iterations 40] [--out bench/results/sweep_load]

The victim is the tests' tiny one (digits odd/even, 10 images, 64-16-16-1), trained into OUT/victim.  Every
worker is a separate ``trainrecon sweep`` process with one thread (``--workers 1``): on PostgreSQL each has its
own output folder (as workers on separate machines would), on the journal file they share one (one machine).
First one worker alone runs ``--trials`` trials (the throughput baseline); then W workers start together, two
chosen workers are killed (SIGKILL) at random instants while trials run, and two new worker processes take their
place.  Once every process has ended, the study is read back and checked:

* complete / pruned / failed trials; trials failed because their worker was killed and whether each was retried
  (its number in a later trial's ``retry_history``) and that retry finished;
* duplicates: a trial (or its chain of retries) finished more than once -- must be 0;
* lost: a killed trial that was never retried to completion, or a trial still RUNNING / WAITING -- must be 0;
* wall time, trials per minute, and the speed-up against the one worker (on this machine's cores).

Writes OUT/sweep_load.json and OUT/sweep_load.png.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from postgres_server import postgres_bin, postgres_server  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny_victim(folder: Path) -> Path:
    """The tests' tiny victim (tests/conftest.py), trained once into ``folder``."""
    if (folder / "model.safetensors").is_file():
        return folder
    from conftest import TINY_TASK, TINY_TRAIN
    from trainrecon.config import to_dict
    from trainrecon.data.tasks import build_task
    from trainrecon.models.victim import save_victim
    from trainrecon.training import train_binary

    task = build_task(TINY_TASK)
    x = torch.as_tensor(task.centred(task.x_train))
    y = torch.as_tensor(task.y_train, dtype=torch.float64)
    spec, params, summary = train_binary(TINY_TRAIN, x, y, log=lambda *a: None)
    save_victim(folder, spec, params, task.mean, {"task": to_dict(TINY_TASK), "train_indices": task.idx_train.tolist(),
                                                   "final": summary["final"]})
    return folder


def worker(victim: Path, out: Path, config: Path, storage: str | None, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "trainrecon", "sweep", str(victim), str(out), "--config", str(config)]
    cmd += ["--storage", storage] if storage else []
    return subprocess.Popen(cmd, env=ENV, stdout=open(log, "a"), stderr=subprocess.STDOUT)


def study_of(storage: str, name: str):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=storage)


def account(trials: list) -> dict:
    """States, kills, retries, duplicates and losses of a finished study (see the module docstring)."""
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    finished = {t.number for t in trials if t.state.name in ("COMPLETE", "PRUNED")}
    killed = [t for t in trials if t.state.name == "FAIL" and not t.user_attrs.get("failed")]
    gave_up = [t for t in trials if t.state.name == "FAIL" and t.user_attrs.get("failed")]
    root: dict[int, int] = {}  # every trial -> the first trial of its chain of retries
    for t in trials:
        history = t.system_attrs.get("retry_history", [])
        root[t.number] = history[0] if history else t.number
    chains: dict[int, list[int]] = {}
    for number in finished:
        chains.setdefault(root[number], []).append(number)
    retried_ok = [t.number for t in killed if any(root[n] == root[t.number] for n in finished)]
    lost = [t.number for t in killed if t.number not in retried_ok]
    lost += [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    return {"states": states, "killed_trials": [t.number for t in killed], "retried_to_completion": retried_ok,
            "failed_in_the_attack": [t.number for t in gave_up],
            "duplicates": {str(k): v for k, v in chains.items() if len(v) > 1}, "lost": sorted(lost),
            "finished_chains": len(chains)}


def phase(name: str, victim: Path, out: Path, config: Path, storage: str | None, study: str, workers: int,
          kills: int, seed: int) -> dict:
    """Run ``workers`` processes on one study, SIGKILL ``kills`` of them at random instants while trials run,
    start one new process per kill, wait for all; account for every trial."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    folder = (lambda i: out / f"worker{i}") if storage else (lambda i: out / "shared")
    t0 = time.time()
    procs = {i: worker(victim, folder(i), config, storage, out / f"worker{i}.log") for i in range(workers)}
    killed_at = []
    victims = rng.sample(sorted(procs), kills) if kills else []
    for k, i in enumerate(victims):
        time.sleep(rng.uniform(8, 25))  # the workers start (torch import) and run trials meanwhile
        p = procs[i]
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait()  # reaped: a zombie would still look alive to the sweep's dead-worker check
            killed_at.append({"worker": i, "seconds": round(time.time() - t0, 1)})
        new = workers + k
        procs[new] = worker(victim, folder(new), config, storage, out / f"worker{new}.log")
    codes = {i: p.wait() for i, p in procs.items()}
    wall = time.time() - t0
    url = storage
    if storage is None:
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        url = JournalStorage(JournalFileBackend(str(folder(0) / "study.journal")))
    trials = study_of(url, study).get_trials(deepcopy=False)
    acc = account(trials)
    done = acc["states"].get("COMPLETE", 0) + acc["states"].get("PRUNED", 0)
    return {"phase": name, "storage": "postgresql" if storage else "journal file", "workers": workers,
            "kills": killed_at, "exit_codes": codes, "wall_seconds": round(wall, 1),
            "trials_finished": done, "trials_per_minute": round(60 * done / wall, 2), **acc}


def draw(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = [f"{r['storage']}\n{r['workers']} worker(s)" + (f", {len(r['kills'])} killed" if r["kills"] else "")
             for r in rows]
    ax.bar(names, [r["trials_per_minute"] for r in rows], color=["#888", "#4a7", "#888", "#47a"][: len(rows)])
    ax.set_ylabel("finished trials per minute")
    ax.set_title("sweep throughput under faults (2 CPU cores)", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--kills", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--storage", nargs="+", default=["postgresql", "journal"], choices=["postgresql", "journal"])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sweep_load")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    victim = tiny_victim(a.out / "victim")
    config = a.out / "sweep_config_in.json"
    config.write_text(json.dumps({"trials": a.trials, "iterations": a.iterations, "prune": False, "heartbeat": 2,
                                  "seed": a.seed, "base": {"m": 10, "lr": 0.03, "init_scale": 0.05,
                                                           "checkpoint_every": 10, "log_every": 10}}))
    rows = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for kind in a.storage:
        if kind == "postgresql":
            initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
            if initdb is None or pg_ctl is None:
                raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql")
            with postgres_server(initdb, pg_ctl) as url:
                for name, w, kills in (("one worker", 1, 0), (f"{a.workers} workers", a.workers, a.kills)):
                    study = f"load-{kind}-{w}-{stamp}"
                    cfg = json.loads(config.read_text())
                    (a.out / f"{study}.json").write_text(json.dumps({**cfg, "study": study}))
                    rows.append(phase(name, victim, a.out / study, a.out / f"{study}.json", url, study, w, kills,
                                      a.seed))
                    print(json.dumps({k: rows[-1][k] for k in ("storage", "workers", "wall_seconds", "trials_finished",
                                                               "trials_per_minute", "lost", "duplicates")}), flush=True)
        else:
            for name, w, kills in (("one worker", 1, 0), (f"{a.workers} workers", a.workers, a.kills)):
                study = f"load-{kind}-{w}-{stamp}"
                cfg = json.loads(config.read_text())
                (a.out / f"{study}.json").write_text(json.dumps({**cfg, "study": study}))
                rows.append(phase(name, victim, a.out / study, a.out / f"{study}.json", None, study, w, kills, a.seed))
                print(json.dumps({k: rows[-1][k] for k in ("storage", "workers", "wall_seconds", "trials_finished",
                                                           "trials_per_minute", "lost", "duplicates")}), flush=True)
    for r in rows:
        base = next(b for b in rows if b["storage"] == r["storage"] and b["workers"] == 1)
        r["speedup_vs_one_worker"] = round(r["trials_per_minute"] / base["trials_per_minute"], 2)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    result = {"config": vars(a) | {"out": str(a.out)}, "cpu_cores": os.cpu_count(), "rows": rows,
              "peak_child_rss_gib": round(peak, 2), "seconds_per_trial_one_worker":
                  {r["storage"]: round(r["wall_seconds"] / max(r["trials_finished"], 1), 2) for r in rows if r["workers"] == 1}}
    from trainrecon.config import save_json

    save_json(a.out / "sweep_load.json", result)
    draw(rows, a.out / "sweep_load.png")
    ok = all(not r["lost"] and not r["duplicates"] for r in rows)
    print(("OK" if ok else "FAULT") + f": {a.out / 'sweep_load.json'}")


if __name__ == "__main__":
    main()

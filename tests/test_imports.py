"""Every module of the package imports on its own, in an interpreter that has imported nothing of trainrecon's (forked
from one that loaded torch, numpy and scipy only), and changes no global state there."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"
MODULES = sorted(
    ".".join(p.relative_to(SRC).with_suffix("").parts[:-1] if p.name == "__init__.py" else p.relative_to(SRC).with_suffix("").parts)
    for p in (SRC / "trainrecon").rglob("*.py"))

# after importing the module: matplotlib's backend is whatever the interpreter chose, optuna logs at its default
CHECK = """
import importlib, sys
importlib.import_module(sys.argv[1])
if "matplotlib" in sys.modules:
    import matplotlib
    assert matplotlib.rcParams._get_backend_or_none() is None, "the matplotlib backend was set at import"
if "optuna" in sys.modules:
    import optuna
    assert optuna.logging.get_verbosity() == optuna.logging.INFO, "optuna's verbosity was changed at import"
"""

# One fresh interpreter loads the heavy third-party libraries once (torch, numpy, scipy: nothing of trainrecon's,
# neither matplotlib nor optuna, whose state CHECK inspects), then forks a child per module that runs CHECK on it
# alone: each module still imports on its own, without paying torch's import time 70 times.  Prints one JSON
# object {module: "" or the child's last error line}.
FORKS = """
import json, os, signal, sys, tempfile, traceback
import numpy, scipy, scipy.optimize, torch
check = sys.argv[1]
out = {}
for module in sys.argv[2:]:
    with tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:
            signal.alarm(120)
            os.dup2(err.fileno(), 2)
            try:
                sys.argv = ["-c", module]
                exec(compile(check, "<check>", "exec"), {"__name__": "__main__"})
                code = 0
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
        out[module] = "" if status == 0 else (lines[-1] if lines else f"exit status {status}")
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, str]:
    r = subprocess.run([sys.executable, "-c", FORKS, CHECK, *MODULES], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_module_list_is_complete():
    assert "trainrecon" in MODULES and "trainrecon.refinement.splitting" in MODULES and len(MODULES) > 40


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_in_a_fresh_interpreter(module, imported_alone):
    assert imported_alone[module] == "", f"{module}: {imported_alone[module]}"


def test_the_forked_check_catches_a_module_that_fails_on_its_own(tmp_path):
    """The check itself can fail: a module that raises at import, and one that sets matplotlib's backend."""
    (tmp_path / "broken_mod.py").write_text("import torch\nraise ImportError('needs something it did not import')\n")
    (tmp_path / "backend_mod.py").write_text("import matplotlib\nmatplotlib.use('Agg')\n")
    r = subprocess.run([sys.executable, "-c", FORKS, CHECK, "broken_mod", "backend_mod", "json"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert "needs something it did not import" in got["broken_mod"], got
    assert "backend was set at import" in got["backend_mod"] and got["json"] == "", got


def test_no_private_names_of_dependencies():
    """The package reaches into no dependency's private API (optuna's storages above all): every imported module
    path and every attribute taken from optuna is public."""
    import ast

    bad = []
    for p in (SRC / "trainrecon").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level and node.module != "__future__":
                if any(part.startswith("_") for part in node.module.split(".")) or \
                        any(a.name.startswith("_") for a in node.names):
                    bad.append(f"{p.name}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and node.attr in ("_storage", "_trial_id", "_heartbeat"):
                bad.append(f"{p.name}: .{node.attr}")
    assert not bad, bad


def test_the_optuna_api_the_sweeps_use_exists():
    """Fails loudly when an optuna release drops what trainrecon.sweeps relies on (pinned optuna>=4,<6)."""
    import optuna
    from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend

    for name in ("get_trial_id_from_study_id_trial_number", "get_study_id_from_name", "set_trial_state_values",
                 "get_trial"):
        assert callable(getattr(BaseStorage, name, None)), name
    assert callable(optuna.storages.fail_stale_trials) and RetryHeartbeatStaleTrialCallback and JournalFileBackend
    assert issubclass(JournalStorage, BaseStorage) and issubclass(RDBStorage, BaseStorage)

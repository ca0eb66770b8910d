"""Every module of the package imports on its own, in a fresh interpreter, and changes no global state there."""

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


def test_the_module_list_is_complete():
    assert "trainrecon" in MODULES and "trainrecon.refinement.splitting" in MODULES and len(MODULES) > 40


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_in_a_fresh_interpreter(module):
    r = subprocess.run([sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{module}: {r.stderr.strip().splitlines()[-1:]}"


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

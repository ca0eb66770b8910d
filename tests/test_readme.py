"""The README's Python blocks run as written (in a fresh folder, one shared namespace, in order)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


pytestmark = pytest.mark.usefixtures("one_thread")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = python_blocks()
    assert blocks, "README.md has no ```python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    for k, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {k + 1}", "exec"), namespace)
    for k, code in enumerate(blocks):  # and again, as a reader who reruns a notebook cell would
        exec(compile(code, f"README.md python block {k + 1} (rerun)", "exec"), dict(namespace))
    out = capsys.readouterr().out
    assert "headline: " in out and "AUC " in out
    result = namespace["result"]
    assert result.exposure is not None and len(result.exposure.images) == result.headline["n"] == 20
    assert result.controls["positive"] == 20 and result.informative


def test_every_relative_link_and_named_file_resolves():
    """README.md and docs/*.md: every relative markdown link, and every file they name in backticks under docs/,
    bench/, src/ or tests/ (results folders and patterns aside), exists in the repository."""
    root = README.parent
    missing = []
    for f in [README, *sorted((root / "docs").glob("*.md"))]:
        text = f.read_text()
        targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"`((?:docs|bench|src|tests)/[^`\s]+)`", text)
        for t in targets:
            if t.startswith(("http", "#", "mailto")) or any(c in t for c in "{*<>$") or t.startswith("bench/results"):
                continue
            path = t.split("#")[0].split(":")[0]
            if not (root / path).exists():
                missing.append(f"{f.name}: {t}")
    assert not missing, missing
    assert len(README.read_text().splitlines()) < 200  # the front door stays short

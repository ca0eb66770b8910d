"""One atomic-write helper: content replaced whole and synced, nothing torn or left behind on failure."""

import json
import os

import numpy as np
import pytest

from trainrecon import atomic
from trainrecon.config import save_json


def test_writes_replace_whole_files_and_sync_them(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    target = tmp_path / "sub" / "r.json"
    save_json(target, {"a": 1})
    save_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert len(synced) == 4  # the file and its folder, twice
    atomic.write_npz(tmp_path / "c.npz", x=np.arange(3.0))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as d:
        assert d["x"].tolist() == [0.0, 1.0, 2.0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["c.npz", "r.json", "sub"]


def test_a_failing_writer_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.txt"]
    with pytest.raises(ValueError, match="pickled"):
        atomic.write_npz(tmp_path / "o.npz", x=np.array([{"a": 1}], dtype=object))
    assert not (tmp_path / "o.npz").exists()

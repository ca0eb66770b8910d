import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from trainrecon.errors import TrainreconError
from trainrecon.models.mlp import MLPSpec
from trainrecon.models.parameters import forward, init_params
from trainrecon.models.victim import load_victim
from trainrecon.models.user_weights import import_victim

CLI = [sys.executable, "-c", "from trainrecon.cli import main; main()"]
ARCH = {"widths": [64, 8, 1], "bias": [True, False], "activation": "relu", "input_shape": [1, 8, 8]}


def one_line_error(r):
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    return lines[0]


def test_import_state_dict_names_as_is(tmp_path):
    spec = MLPSpec(**ARCH)
    params = init_params(spec, [1.0, 1.0], seed=0)
    sd = dict(zip(spec.param_names(), params))
    torch.save(sd, tmp_path / "w.pt")
    (tmp_path / "arch.json").write_text(json.dumps(ARCH))
    import_victim(tmp_path / "w.pt", tmp_path / "arch.json", tmp_path / "v")
    v = load_victim(tmp_path / "v")
    x = torch.randn(3, 64, dtype=torch.float64)
    assert torch.allclose(forward(v.spec, v.params, x), forward(spec, params, x))
    save_file({k: t.float().contiguous() for k, t in sd.items()}, str(tmp_path / "w.safetensors"))
    r = subprocess.run(CLI + ["import", str(tmp_path / "w.safetensors"), str(tmp_path / "arch.json"), str(tmp_path / "v2")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert load_victim(tmp_path / "v2").params[0].dtype == torch.float64


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.slow
def test_hostile_and_truncated_files_are_refused(tmp_path, tiny_victim):
    (tmp_path / "arch.json").write_text(json.dumps(ARCH))
    torch.save({"layers.0.weight": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    r = subprocess.run(CLI + ["import", str(tmp_path / "evil.pt"), str(tmp_path / "arch.json"), str(tmp_path / "v")],
                       capture_output=True, text=True)
    msg = one_line_error(r)
    assert "evil.pt" in msg and "pwned" not in r.stdout
    # truncated safetensors inside a victim folder
    import shutil

    shutil.copytree(tiny_victim, tmp_path / "cut")
    data = (tmp_path / "cut" / "model.safetensors").read_bytes()
    (tmp_path / "cut" / "model.safetensors").write_bytes(data[: len(data) // 2])
    r = subprocess.run(CLI + ["reconstruct", str(tmp_path / "cut"), str(tmp_path / "o")], capture_output=True, text=True)
    assert "model.safetensors" in one_line_error(r)
    # wrong shape named
    (tmp_path / "arch2.json").write_text(json.dumps({**ARCH, "widths": [64, 9, 1]}))
    with pytest.raises(TrainreconError, match="layers.0.weight"):
        import_victim(tiny_victim / "model.safetensors", tmp_path / "arch2.json", tmp_path / "v3")

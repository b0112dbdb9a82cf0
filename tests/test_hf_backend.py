"""The hf backend without loading a model: registration, options, paths, GGUF chunks, identity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from luopan import models
from luopan.errors import ConfigError
from luopan_hf.backend import HFBackend
from luopan_hf.params import HFParams


def test_registration_and_identity_import_neither_torch_nor_transformers(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    code = (
        "import sys\n"
        "from luopan.plugins import load_registry\n"
        "reg = load_registry()\n"
        "comp = reg.get('backend', 'hf')\n"
        f"b = comp.factory(path={str(tmp_path)!r}, dtype='float32', device='cpu')\n"
        "assert b.identity()['weights']\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent)


def test_params_forbid_unknown_keys_and_check_values():
    HFParams(path="x", batch_size="auto", device="cuda:1", dtype="bfloat16")
    with pytest.raises(ValidationError):
        HFParams(path="x", bacth_size=4)
    with pytest.raises(ValidationError):
        HFParams(path="x", device="gpu")
    with pytest.raises(ValidationError):
        HFParams(path="x", batch_size=0)
    with pytest.raises(ValidationError):
        HFParams(path="x", dtype="int8")


def test_pkg_path_is_the_package_folder_found_without_importing_it():
    r = models.resolve("pkg:luopan_fake")
    assert r.local is not None and (r.local / "__init__.py").is_file()
    with pytest.raises(ConfigError, match="no installed Python package 'no_such_pkg_xyz'"):
        models.resolve("pkg:no_such_pkg_xyz")


def test_missing_local_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        models.resolve(str(tmp_path / "nope"))
    assert models.resolve("org/model").local is None  # a hub id


def _fake_gguf(folder: Path, name: str, n: int = 3) -> bytes:
    data = b"GGUF" + bytes(range(256)) * 5000
    step = len(data) // n + 1
    for i in range(n):
        (folder / f"{name}.part{i:02d}").write_bytes(data[i * step : (i + 1) * step])
    return data


def test_chunked_gguf_is_fingerprinted_without_assembly_then_assembled_once(tmp_path):
    data = _fake_gguf(tmp_path, "m.gguf")
    r = models.resolve(str(tmp_path))
    files = models.weight_files(r, "m.gguf")
    assert [f.name for f in files] == ["m.gguf.part00", "m.gguf.part01", "m.gguf.part02"]
    fp = models.fingerprint(files)
    assert not (tmp_path / "m.gguf").exists()
    out = models.ensure_gguf(r, "m.gguf")
    assert out.read_bytes() == data
    assert models.ensure_gguf(r, "m.gguf") == out
    # once assembled the file itself is what identity reads; chunks keep their own fingerprint
    assert models.fingerprint(models.gguf_parts(r, "m.gguf")) != fp


def test_identity_is_cheap_and_follows_the_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 4096)
    (tmp_path / "config.json").write_text("{}")
    b = HFBackend(path=str(tmp_path), dtype="auto", device="cpu")
    ident = b.identity()
    assert ident["backend"] == "hf" and ident["dtype"] == "float32" and ident["path"] == str(tmp_path)
    assert b.identity() == ident
    (tmp_path / "model.safetensors").write_bytes(b"\1" * 4096)
    assert b.identity()["weights"] != ident["weights"]
    assert HFBackend(path=str(tmp_path), device="cpu", chat_template="{{x}}").identity() != b.identity()


def test_folder_without_weights_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no weight files"):
        HFBackend(path=str(tmp_path), device="cpu").identity()

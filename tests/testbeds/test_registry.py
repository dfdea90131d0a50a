"""The test beds' registry: names resolve without side effects, and loading a plain model imports no trainer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shortlvlm.errors import ModelLoadError
from shortlvlm.io import source
from shortlvlm.testbeds import TOY_NAME, bed_folder, materialize
from shortlvlm.testbeds.toy import TOY_CHECKPOINT


def test_resolving_smol_llava_assembles_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTLVLM_CACHE", str(tmp_path))
    import shortlvlm.testbeds.smol.assemble as assembly

    monkeypatch.setattr(assembly, "assemble", lambda *a, **k: pytest.fail("resolving a name assembled smol-llava"))
    assert source.resolve_model_name("smol-llava") == str(tmp_path / "smol-llava")
    assert source.local_safetensors("smol-llava") is None  # not assembled yet: nothing to identify, nothing built
    assert list(tmp_path.iterdir()) == []


def test_preparing_smol_llava_assembles_it(tmp_path, monkeypatch):
    import shortlvlm.testbeds.smol.assemble as assembly

    monkeypatch.setattr(assembly, "assemble", lambda: tmp_path / "built")
    assert source.prepare_model("smol-llava") == str(tmp_path / "built")


def test_other_names_are_not_test_beds():
    assert bed_folder("owner/model") is None and materialize("owner/model") is None
    assert source.prepare_model("owner/model") == "owner/model"
    assert source.resolve_model_name(TOY_NAME) == str(TOY_CHECKPOINT) == source.prepare_model(TOY_NAME)


def test_a_missing_toy_checkpoint_is_named(tmp_path, monkeypatch):
    import shortlvlm.testbeds as testbeds

    monkeypatch.setattr(testbeds, "TOY_CHECKPOINT", tmp_path / "gone")
    with pytest.raises(ModelLoadError, match=r"toy LVLM is missing.*testbeds\.toy\.train"):
        materialize(TOY_NAME)


@pytest.mark.slow
def test_loading_a_plain_model_folder_imports_no_trainer(tmp_path):
    """In a fresh interpreter: load a saved model folder and prune it; no test bed's trainer was imported."""
    from shortlvlm.testbeds.tiny import tiny_model

    tiny_model("llava", num_layers=3).save_pretrained(tmp_path / "m")
    script = (
        "import sys, json, shortlvlm\n"
        f"model, _ = shortlvlm.load({str(tmp_path / 'm')!r})\n"
        "from shortlvlm.surgery import drop_layers\n"
        "drop_layers(model, [1])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shortlvlm'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "shortlvlm.io.load" in loaded and "shortlvlm.surgery" in loaded  # the run did what it says
    assert not [m for m in loaded if m.endswith(".train")], loaded
    assert "shortlvlm.testbeds.smol.assemble" not in loaded  # nor assembly machinery

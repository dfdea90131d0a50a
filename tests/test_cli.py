"""The CLI: prune writes a verified checkpoint; every bad request is one line on stderr, exit 2, no output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from shortlvlm.cli import main
from shortlvlm.models.tiny import tiny_model
from shortlvlm.plan import PLAN_FILENAME


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for model_type in ("llava", "qwen3_vl"):
        tiny_model(model_type, 6).save_pretrained(root / model_type)
    text_only = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=4, num_attention_heads=2))
    text_only.save_pretrained(root / "llama")
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prune_writes_a_verified_checkpoint(saved_models, tmp_path, capsys):
    out = tmp_path / "pruned"
    code, stdout, _ = run_cli(capsys, "prune", saved_models / "llava", "--layers", "1,3", "--out", out)
    assert code == 0
    assert "removed layers [1, 3] of 6" in stdout
    assert "verified" in stdout and "agree" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["removed_layers"] == [1, 3] and plan["num_layers_before"] == 6
    assert plan["method"] == "manual" and plan["model"]["adapter"] == "LLaVA"
    assert json.loads((out / "config.json").read_text())["text_config"]["num_hidden_layers"] == 4


@pytest.mark.parametrize(
    ("model", "layers", "message"),
    [
        ("llava", "6", "out of range"),
        ("llava", "2,2", "more than once"),
        ("llava", "0,1,2,3,4,5", "cannot remove all 6"),
        ("qwen3_vl", "0,3", "deepstack"),
        ("llama", "1", "no adapter for LlamaForCausalLM"),
        ("missing-dir", "1", "could not be fetched"),
    ],
)
def test_bad_requests_give_one_line_exit_2_and_leave_nothing(saved_models, tmp_path, capsys, model, layers, message):
    code, _, stderr = run_cli(capsys, "prune", saved_models / model, "--layers", layers,
                                   "--out", tmp_path / "out")
    assert code == 2
    assert len(stderr.strip().splitlines()) == 1 and message in stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(saved_models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    code, _, stderr = run_cli(capsys, "prune", saved_models / "llava", "--layers", "1", "--out", out)
    assert code == 2 and "--overwrite" in stderr
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    code, _, _ = run_cli(capsys, "prune", saved_models / "llava", "--layers", "1", "--out", out, "--overwrite")
    assert code == 0 and (out / "model.safetensors").exists() and not (out / "old.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_generic_flag_handles_an_unregistered_class(saved_models, tmp_path, capsys):
    code, stdout, stderr = run_cli(capsys, "prune", saved_models / "llama", "--layers", "1", "--generic",
                                   "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "generic (LlamaForCausalLM)" in stdout


def test_malformed_layer_list_is_a_usage_error(saved_models, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(saved_models / "llava"), "--layers", "1,x", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_models_lists_every_architecture(capsys):
    code, stdout, _ = run_cli(capsys, "models")
    assert code == 0
    for name in ("LLaVA", "LLaVA-NeXT", "Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL", "Idefics3", "SmolVLM",
                 "Gemma 3", "InternVL", "PaliGemma", "Mistral 3", "Qwen-VL-Chat", "mPLUG-Owl2"):
        assert f"\n{name}" in "\n" + stdout


@pytest.mark.slow
def test_console_script_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "shortlvlm.cli", "prune", str(tmp_path / "nope"),
                             "--layers", "1", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode == 2
    assert result.stderr.startswith("shortlvlm: error:") and "Traceback" not in result.stderr

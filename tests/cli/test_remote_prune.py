"""`shortlvlm prune MIMIC --ratio 0.3 --trust-remote-code --calib FILE` end to end on Qwen-VL-Chat and mPLUG-Owl2.

Each mimic folder is laid out as the real checkpoint (remote modeling code, tokenizer, image processor;
tests/models/mimic_checkpoints.py), so the CLI encodes the calibration set with the architecture's own chat
format. The pruned checkpoint is checked against a reference built without the tool: the source model
with the removed layers skipped and the kept layers' weights taken from the checkpoint.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from shortlvlm import load
from shortlvlm.cli import main
from shortlvlm.data.calibration_set import Calibration, read_calibration
from shortlvlm.data.encode import encode_calibration
from shortlvlm.models import get_adapter
from shortlvlm.plan import PLAN_FILENAME

from ..models.mimic_checkpoints import write_calibration, write_mplug_owl2, write_qwen_vl_chat

WRITERS = {"qwen-vl-chat": (write_qwen_vl_chat, "transformer.h", "mlp.c_proj"),
           "mplug-owl2": (write_mplug_owl2, "model.layers", "mlp.down_proj")}


class SkipLayer(torch.nn.Module):
    """A removed layer in the reference: the stream passes through, in the tuple these layers return."""

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,)


def original_name(name: str, layers_path: str, kept: list[int]) -> str:
    """The source checkpoint's name of a pruned checkpoint's weight (kept layer i was layer kept[i])."""
    prefix = f"{layers_path}."
    if not name.startswith(prefix):
        return name
    index, rest = name[len(prefix):].split(".", 1)
    return f"{prefix}{kept[int(index)]}.{rest}"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(params=list(WRITERS))
def mimic(request, tmp_path):
    write, layers_path, writer = WRITERS[request.param]
    return (write(tmp_path / request.param), write_calibration(tmp_path / "calib", count=6), layers_path, writer)


def test_prune_by_ratio_with_scp_reloads_and_equals_the_source_with_layers_skipped(mimic, tmp_path, capsys):
    source, calibration, layers_path, writer = mimic
    out = tmp_path / "pruned"
    code, stdout, err = run_cli(capsys, "prune", source, "--method", "short-lvlm", "--ratio", "0.3",
                                "--trust-remote-code", "--calib", calibration, "--out", out)
    assert code == 0, err
    assert "method short-lvlm, compensation scp" in stdout and "verified: reload max |logit diff|" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    removed = plan["removed_layers"]
    assert len(removed) == round(0.3 * 6) and plan["num_layers_before"] == 6 and plan["compensation"] == "scp"
    assert plan["calibration"]["num_samples"] == 6
    kept = [i for i in range(6) if i not in removed]
    edited = [e["edited_layer"] for e in plan["params"]["compensation_report"] if e["edited_layer"] is not None]
    assert edited and all(e in kept for e in edited)

    # SCP changed the edited layers' MLP writer and nothing else: every other kept weight is the source's.
    before = load_file(source / "model.safetensors")
    after = {original_name(n, layers_path, kept): w for n, w in load_file(out / "model.safetensors").items()}
    changed = {name for name, weight in after.items() if not torch.equal(weight, before[name])}
    assert changed == {f"{layers_path}.{layer}.{writer}.weight" for layer in edited}

    pruned = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert len(get_adapter(pruned).layers) == 4 and pruned.config.num_hidden_layers == 4

    reference, parts = load(source, trust_remote_code=True)
    reference.load_state_dict({**before, **after})
    layers = get_adapter(reference).layers
    for index in removed:
        layers[index] = SkipLayer()
    samples = list(read_calibration(Calibration(source=str(calibration))).samples)
    batch = encode_calibration(samples, parts, get_adapter(reference))[0]
    assert batch.image.any()
    _, saved_parts = load(out, trust_remote_code=True)  # the checkpoint carries its tokenizer (and image processor)
    saved = encode_calibration(samples, saved_parts, get_adapter(pruned))[0]
    assert saved.inputs.keys() == batch.inputs.keys()
    assert all(torch.equal(saved.inputs[key], batch.inputs[key]) for key in batch.inputs)
    with torch.no_grad():
        expected = reference(**batch.model_inputs()).logits
        actual = pruned(**batch.model_inputs()).logits
    real = batch.real
    torch.testing.assert_close(actual[real], expected[real])


@pytest.mark.parametrize("command", ["compare", "eval", "bench"])
def test_commands_that_answer_prompts_refuse_it_before_loading(mimic, tmp_path, capsys, command):
    # Answering goes through a transformers processor's chat template and generate(); these layouts have
    # their own chat code instead, wired into calibration only.
    source, calibration, _, _ = mimic
    out = tmp_path / "answers"
    argv = {"compare": ["--calib", calibration, "--methods", "short-lvlm", "--ratios", "0.3", "--limit", "4"],
            "eval": ["--bench", "shapes", "--limit", "4"], "bench": ["--rounds", "1"]}[command]
    code, _, err = run_cli(capsys, command, source, "--trust-remote-code", *argv, "--out", out)
    assert code == 2 and err.count("shortlvlm: error:") == 1
    assert "answering prompts (compare, eval, bench) is not wired to it" in err and "Loading weights" not in err
    assert not out.exists()

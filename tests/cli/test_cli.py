"""The CLI: prune writes a verified checkpoint; every bad request is one line on stderr, exit 2, no output."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shortlvlm.cli import main
from shortlvlm.cli.flags import given_flags, options_from_args
from shortlvlm.cli.main import build_parser
from shortlvlm.cli.method import calibration_from_args
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.importance import TIS
from shortlvlm.jobs.source import Architecture, Loading
from shortlvlm.plan import PLAN_FILENAME
from shortlvlm.testbeds.tiny import tiny_model
from shortlvlm.testbeds.toy.calibration import write_calibration_set


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
        ("missing-dir", "1", "no such directory: "),
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


def test_score_then_prune_many_ratios_from_the_plan(tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    code, stdout, _ = run_cli(capsys, "score", "toy", "--num-samples", "8", "--out", plan_path)
    assert code == 0 and "removal order" in stdout
    plan = json.loads(plan_path.read_text())
    assert plan_path.with_suffix(".png").stat().st_size > 0
    order = plan["params"]["removal_order"]
    for ratio, count in (("0.1", 2), ("0.3", 5)):
        out = tmp_path / f"pruned-{ratio}"
        code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", ratio, "--plan", plan_path,
                                  "--compensation", "none", "--out", out)
        assert code == 0, stdout
        written = json.loads((out / PLAN_FILENAME).read_text())
        assert written["removed_layers"] == sorted(order[:count]) and written["compensation"] == "none"


def test_the_prune_command_score_prints_calibrates_on_the_plans_set(tmp_path, capsys):
    """score's hint names the calibration it was scored on, so its compensation (the default's bridge) is measured
    there, not on toy's bundled set."""
    calib = write_calibration_set(tmp_path / "my calib", 4, start=500)  # not the bundled set; a space in the path
    plan_path = tmp_path / "plan.json"
    code, stdout, _ = run_cli(capsys, "score", "toy", "--calib", calib, "--num-samples", "3", "--batch-size", "2",
                              "--dtype", "float32", "--out", plan_path)
    assert code == 0
    hint = shlex.split(stdout.strip().splitlines()[-1].partition("prune from it with: ")[2])
    assert hint[:2] == ["shortlvlm", "prune"]
    argv = [str(tmp_path / "pruned") if w == "DIR" else "0.2" if w == "R" else w for w in hint[1:]]
    parsed = build_parser().parse_args(argv)
    assert calibration_from_args(parsed) == Calibration(source=str(calib), num_samples=3, batch_size=2)
    assert (parsed.plan, parsed.dtype) == (str(plan_path), "float32")
    assert run_cli(capsys, *argv)[0] == 0
    scored = json.loads(plan_path.read_text())
    pruned = json.loads((tmp_path / "pruned" / PLAN_FILENAME).read_text())
    assert pruned["compensation"] == "lstsq" and pruned["calibration"]["hash"] == scored["calibration"]["hash"]
    assert "scp_calibration" not in pruned["params"]  # recorded when the compensation's set differs from the plan's


def test_given_flags_repeat_a_command_line():
    """What given_flags renders parses back to the same options: switches, --no- switches, lists, memory caps."""
    argv = ["score", "toy", "--out", "p.json", "--device-map", "auto", "--max-memory", "0=1GiB,cpu=2GiB",
            "--trust-remote-code", "--writers", "a.b,c", "--generic", "--tis-layers", "4,8", "--no-tis-skip-template",
            "--num-samples", "3"]
    args = build_parser().parse_args(argv)
    words = [w for cls in (Loading, Architecture, TIS, Calibration) for w in given_flags(cls, args)]
    assert "--no-tis-skip-template" in words and "--out" not in words and "toy" not in words
    again = build_parser().parse_args(["score", "toy", "--out", "p.json", *words])
    for cls in (Loading, Architecture, TIS, Calibration):
        assert options_from_args(cls, again) == options_from_args(cls, args) != cls()


def test_template_skip_is_on_by_default_and_can_be_turned_off(tmp_path, capsys):
    plans = {}
    for flag in ("--tis-skip-template", "--no-tis-skip-template"):
        path = tmp_path / f"{flag}.json"
        assert run_cli(capsys, "score", "toy", "--method", "short-lvlm", "--num-samples", "8", flag,
                       "--out", path)[0] == 0
        plans[flag] = json.loads(path.read_text())
    assert plans["--tis-skip-template"]["scorer"]["tis"]["skip_template"] is True
    assert plans["--tis-skip-template"]["params"]["template_tokens_skipped"] == 3  # <s> USER :
    assert plans["--no-tis-skip-template"]["scorer"]["tis"]["skip_template"] is False
    assert plans["--no-tis-skip-template"]["params"]["template_tokens_skipped"] == 0
    default = tmp_path / "default.json"
    assert run_cli(capsys, "score", "toy", "--num-samples", "8", "--out", default)[0] == 0
    assert json.loads(default.read_text())["scorer"]["tis"]["skip_template"] is True
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    assert "--tis-skip-template" in capsys.readouterr().out


def test_sleb_plan_is_ranked_up_to_max_ratio_and_angular_plan_prunes_its_block(tmp_path, capsys):
    sleb = tmp_path / "sleb.json"
    code, _, _ = run_cli(capsys, "score", "toy", "--method", "sleb", "--num-samples", "8", "--max-ratio", "0.2",
                         "--out", sleb)
    assert code == 0 and len(json.loads(sleb.read_text())["params"]["removal_order"]) == 3
    code, _, err = run_cli(capsys, "prune", "toy", "--plan", sleb, "--ratio", "0.3", "--out", tmp_path / "x")
    assert code == 2 and "ranks only 3 layers" in err and not (tmp_path / "x").exists()
    angular = tmp_path / "angular.json"
    assert run_cli(capsys, "score", "toy", "--method", "angular", "--num-samples", "8", "--out", angular)[0] == 0
    block = json.loads(angular.read_text())["params"]["removal_sets"]["5"]
    out = tmp_path / "angular-30"
    code, _, _ = run_cli(capsys, "prune", "toy", "--plan", angular, "--ratio", "0.3", "--out", out)
    assert code == 0 and json.loads((out / PLAN_FILENAME).read_text())["removed_layers"] == block


def test_prune_short_lvlm_by_ratio_compensates_and_verifies(tmp_path, capsys):
    out = tmp_path / "short"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--method", "short-lvlm", "--ratio", "0.2", "--num-samples", "8",
                              "--out", out)
    assert code == 0
    assert "method short-lvlm, compensation scp" in stdout and "edited layer" in stdout and "verified" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert len(plan["removed_layers"]) == 3 and plan["calibration"]["num_samples"] == 8


@pytest.mark.parametrize("compensation", ["lstsq", "scp"])
def test_listed_layers_are_bridged_when_a_compensation_is_asked(tmp_path, capsys, compensation):
    out = tmp_path / "listed"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--layers", "3,4,9", "--compensation", compensation,
                              "--num-samples", "8", "--out", out)
    assert code == 0 and f"method manual, compensation {compensation}" in stdout and "verified" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["removed_layers"] == [3, 4, 9] and plan["compensation"] == compensation
    assert [(e["removed"], e["edited_layer"]) for e in plan["params"]["compensation_report"]] == [([3, 4], 2), ([9], 8)]
    assert plan["calibration"]["num_samples"] == 8
    from shortlvlm import Calibration, load
    from shortlvlm.compensation import compensation_named
    from shortlvlm.pruning import prune_listed

    model, processor = load("toy")  # the CLI's checkpoint is the library's listed prune
    model, _ = prune_listed(model, processor, [3, 4, 9], compensation=compensation_named(compensation),
                            calibration=Calibration(num_samples=8), source="toy")
    saved, _ = load(out)
    for name, value in model.state_dict().items():
        assert torch.equal(saved.state_dict()[name], value), name


def test_a_plan_recording_bridge_options_is_pruned_with_them_unless_flags_say_otherwise(tmp_path, capsys):
    scored = tmp_path / "plan.json"
    assert run_cli(capsys, "score", "toy", "--method", "block-influence", "--num-samples", "8", "--out", scored)[0] == 0
    plan = json.loads(scored.read_text())
    plan.update(compensation="lstsq", compensation_options={"ridge": 0.5, "tokens": "all", "prior": "zero",
                                                            "streams": "unpruned"})
    scored.write_text(json.dumps(plan))  # as compare writes plans/block-influence+lstsq[ridge=0.5,...].json
    for flags, expected in (([], 0.5), (["--lstsq-ridge", "0.2"], 0.2)):
        out = tmp_path / f"out{len(flags)}"
        code, _, _ = run_cli(capsys, "prune", "toy", "--plan", scored, "--ratio", "0.2", "--num-samples", "8", *flags,
                             "--out", out)
        written = json.loads((out / PLAN_FILENAME).read_text())
        assert code == 0 and written["compensation"] == "lstsq"
        assert written["compensation_options"]["ridge"] == expected
        assert written["compensation_options"]["prior"] == ("zero" if not flags else "identity")


def test_a_plan_made_before_the_bridge_had_a_prior_is_pruned_with_the_zero_prior(tmp_path, capsys):
    scored = tmp_path / "plan.json"
    assert run_cli(capsys, "score", "toy", "--method", "block-influence", "--num-samples", "8", "--out", scored)[0] == 0
    plan = json.loads(scored.read_text())
    plan.update(compensation="lstsq", compensation_options={"ridge": 0.5, "tokens": "all", "streams": "unpruned"})
    scored.write_text(json.dumps(plan))  # no "prior": written when the only prior was zero
    out = tmp_path / "out"
    code, _, _ = run_cli(capsys, "prune", "toy", "--plan", scored, "--ratio", "0.2", "--num-samples", "8", "--out", out)
    written = json.loads((out / PLAN_FILENAME).read_text())
    assert code == 0 and written["compensation_options"] == {"ridge": 0.5, "tokens": "all", "prior": "zero",
                                                             "streams": "unpruned"}


def test_prune_with_the_least_squares_bridge_records_its_options(tmp_path, capsys):
    out = tmp_path / "bridged"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", "0.2", "--method", "block-influence", "--num-samples",
                              "8", "--compensation", "lstsq", "--lstsq-ridge", "0.5", "--out", out)
    assert code == 0 and "method block-influence, compensation lstsq" in stdout and "gap left" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["compensation"] == "lstsq"
    assert plan["compensation_options"] == {"ridge": 0.5, "tokens": "all", "prior": "identity",
                                            "streams": "sequential"}
    assert plan["scp"] is None and {e.get("ridge") for e in plan["params"]["compensation_report"]} <= {0.5, None}


def test_prune_with_the_magnitude_compensation_records_its_options(tmp_path, capsys):
    out = tmp_path / "rescaled"
    code, stdout, _ = run_cli(capsys, "prune", "toy", "--ratio", "0.2", "--method", "block-influence", "--num-samples",
                              "8", "--compensation", "magnitude", "--magnitude-tokens", "important", "--out", out)
    assert code == 0 and "method block-influence, compensation magnitude" in stdout and "magnitude factor" in stdout
    assert "verified" in stdout
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["compensation"] == "magnitude" and plan["compensation_options"] == {"tokens": "important"}
    assert plan["scp"] is None
    report = [e for e in plan["params"]["compensation_report"] if e["edited_layer"] is not None]
    assert report and all(e["factor"] > 0 and e["edited_layers"] for e in report)


@pytest.mark.parametrize(("argv", "message"), [
    (["--layers", "1", "--ratio", "0.3"], "exactly one of --layers"),
    (["--ratio", "0.3", "--compensation", "lstsq", "--lstsq-ridge", "-1"], "LstSq.ridge (--lstsq-ridge) must be"),
    (["--ratio", "0"], "strictly between 0 and 1"),
    (["--ratio", "0.3", "--calib", "missing.jsonl"], "missing.jsonl"),
    (["--ratio", "0.3", "--method", "tis-cosine", "--tis-top-p", "0"], "TIS.top_p (--tis-top-p) must be in (0, 1]"),
])
def test_bad_method_requests_exit_2_and_leave_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "pruned"
    code, _, err = run_cli(capsys, "prune", "toy", *argv, "--out", out)
    assert code == 2 and err.count("shortlvlm: error:") == 1 and message in err
    assert "Loading weights" not in err  # refused before any weights were loaded
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_plan_from_another_model_is_refused_before_loading(saved_models, tmp_path, capsys):
    plan_path = tmp_path / "plan.json"
    assert run_cli(capsys, "score", "toy", "--num-samples", "4", "--out", plan_path)[0] == 0
    code, _, err = run_cli(capsys, "prune", saved_models / "llava", "--ratio", "0.3", "--plan", plan_path,
                           "--out", tmp_path / "x")
    assert code == 2 and "16 decoder layers" in err


def test_a_plan_scored_on_other_weights_needs_plan_other_weights(tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from shortlvlm.testbeds.toy import TOY_CHECKPOINT

    plan_path = tmp_path / "plan.json"
    assert run_cli(capsys, "score", "toy", "--method", "last", "--out", plan_path)[0] == 0
    tuned = shutil.copytree(TOY_CHECKPOINT, tmp_path / "tuned")  # the toy's config, one weight changed
    tensors = load_file(tuned / "model.safetensors")
    tensors["language_model.model.embed_tokens.weight"][0, 0] += 0.5
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    argv = ["prune", tuned, "--ratio", "0.25", "--plan", plan_path, "--out", tmp_path / "x"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "scored on other weights" in err and "--plan-other-weights" in err
    assert not (tmp_path / "x").exists()
    assert run_cli(capsys, *argv, "--plan-other-weights")[0] == 0
    order = json.loads(plan_path.read_text())["params"]["removal_order"]
    assert json.loads((tmp_path / "x" / PLAN_FILENAME).read_text())["removed_layers"] == sorted(order[:4])

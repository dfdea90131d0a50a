"""The bad-input table of docs/errors.md, row by row, through the CLI a user runs.

Every row: exit code 2, the message names the problem (and the fix), one line, no traceback,
nothing written at --out, and, where the row says so, no weights were loaded first.
`test_the_docs_table_and_these_cases_agree` keeps docs/errors.md and CASES in step.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from transformers import GPT2Config, GPT2LMHeadModel

from shortlvlm.cli import main
from shortlvlm.testbeds.tiny import tiny_model

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


@dataclass
class World:
    """Files the cases point at, built once: images, calibration files, models, plans."""

    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)

    def calib(self, name: str, lines: list, images: dict[str, Callable[[Path], None]] | None = None) -> str:
        folder = self.root / f"calib-{name}"
        (folder / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "img" / "ok.png")
        for image, make in (images or {}).items():
            make(folder / image)
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        (folder / "c.jsonl").write_bytes(text.encode("utf-8", "surrogateescape"))
        return str(folder / "c.jsonl")


GOOD = {"image": "img/ok.png", "prompt": "What colour is the square?", "answer": "red"}


def truncated_png(path: Path) -> None:
    Image.new("RGB", (64, 64), (0, 90, 200)).save(path)
    path.write_bytes(path.read_bytes()[:60])


def truncated_jpeg(path: Path) -> None:
    """A JPEG cut inside its pixel data: its headers read, so PIL's verify() passes it; decoding fails."""
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    noise.save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[:(data.index(b"\xff\xda") + len(data)) // 2])  # half of the scan after start-of-scan
    with Image.open(path) as img:
        img.verify()  # the old check let it through


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("world"))
    tiny_model("llava", 6).save_pretrained(w.root / "llava6")
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(w.root / "gpt2")
    (w.root / "not-a-model").mkdir()
    (w.root / "not-a-model" / "notes.txt").write_text("hello")
    pickle_only = w.root / "pickle-only"
    tiny_model("llava", 4).save_pretrained(pickle_only)
    (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
    remote = w.root / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "mystery_vlm", "architectures": ["MysteryModel"],
        "auto_map": {"AutoConfig": "configuration_mystery.MysteryConfig"}}))
    (remote / "configuration_mystery.py").write_text("raise SystemExit('remote code ran')\n")
    import datasets

    Image.new("RGB", (32, 32), (200, 30, 30)).save(w.root / "split.png")
    rows = datasets.Dataset.from_dict({"prompt": ["What colour?"], "image": ["split.png"]})
    datasets.DatasetDict({"train": rows, "test": rows}).save_to_disk(str(w.root / "splits"))
    (w.root / "existing-file").write_text("x")
    (w.root / "existing-dir").mkdir()
    (w.root / "plan-broken.json").write_text('{"method": "short-lvlm", ')
    toy_plan = w.root / "plan-toy.json"
    assert main(["score", "toy", "--method", "last", "--out", str(toy_plan)]) == 0
    plan = json.loads(toy_plan.read_text())
    plan["model"]["fingerprint"] = "0123456789abcdef"  # as if scored on another 16-layer model
    (w.root / "plan-other-hash.json").write_text(json.dumps(plan))
    plan["model"].update(fingerprint=json.loads(toy_plan.read_text())["model"]["fingerprint"],
                         weights="0123456789abcdef")  # as if scored on a fine-tune of the toy
    (w.root / "plan-other-weights.json").write_text(json.dumps(plan))
    return w


@dataclass
class Case:
    id: str
    argv: Callable[[World], list[str]]
    message: str  # regular expression the error line must match
    before_load: bool = True  # refused before any weights are read


def prune_toy(calib: Callable[[World], str], *extra: str) -> Callable[[World], list[str]]:
    return lambda w: ["prune", "toy", "--ratio", "0.25", "--calib", calib(w), *extra]


CASES = [
    # calibration files
    Case("calib-file-missing", prune_toy(lambda w: w.path("nowhere.jsonl")), r"calibration file not found"),
    Case("calib-malformed-jsonl", prune_toy(lambda w: w.calib("json", [GOOD, '{"image": "img/ok.png", "pro'])),
         r"c\.jsonl, line 2: not valid JSON"),
    Case("calib-not-an-object", prune_toy(lambda w: w.calib("array", ["[1, 2]"])), r"record 1: expected a JSON object"),
    Case("calib-not-utf8", prune_toy(lambda w: w.calib("latin1", ['{"prompt": "caf\udce9"}'])), r"not UTF-8"),
    Case("calib-empty", prune_toy(lambda w: w.calib("empty", ["", "  "])), r"calibration set is empty"),
    Case("calib-duplicate-id", prune_toy(lambda w: w.calib("dup", [{**GOOD, "id": 1}, {**GOOD, "id": 1}])),
         r"line 2: duplicate id '1' \(also on line 1\)"),
    Case("calib-no-prompt", prune_toy(lambda w: w.calib("noprompt", [{"image": "img/ok.png"}])), r"line 1: no prompt"),
    Case("calib-sample-without-image", prune_toy(lambda w: w.calib("noimage", [{"prompt": "What is it?"}])),
         r"none of its 1 samples has an image; Short-LVLM's token importance compares image and text tokens"),
    Case("calib-image-url", prune_toy(lambda w: w.calib("url", [{**GOOD, "image": "https://example.com/a.png"}])),
         r"line 1: the image is a URL .*download the images first"),
    Case("calib-chat-bad-content", prune_toy(lambda w: w.calib("chat", [
        {"image": "img/ok.png", "messages": [{"role": "user", "content": 7}]}])),
         r"line 1 \(chat messages\): turn 0: 'content' must be a string or a list of parts"),
    Case("calib-several-images", prune_toy(lambda w: w.calib("two", [
        {**GOOD, "image": None, "images": ["img/ok.png", "img/ok.png"]}])), r"'images' holds 2 images"),
    Case("calib-empty-answer", prune_toy(lambda w: w.calib("noanswer", [{**GOOD, "answer": ""}]),
                                         "--method", "sleb"),
         r"c\.jsonl, line 1 \(prompt/answer\): the answer is empty; write the reply, or leave the answer out"),
    Case("calib-two-image-placeholders", prune_toy(lambda w: w.calib("twoph", [
        {**GOOD, "prompt": "<image> Left? <image> Right?"}])),
         r"line 1 \(prompt/answer\): the prompt has 2 <image> placeholders but the sample has 1 image; .*keep one"),
    Case("calib-no-answers-for-a-loss-scorer", prune_toy(lambda w: w.calib("unanswered", [
        {k: v for k, v in GOOD.items() if k != "answer"}]), "--method", "sleb"),
         r"sleb measures the loss on the calibration answers, but none of the 1 sample\(s\) of .*c\.jsonl has an "
         r"answer; give samples with answers"),
    Case("score-no-answers-for-a-loss-scorer", lambda w: ["score", "toy", "--method", "tis-loss", "--calib", w.calib(
        "unanswered", [{k: v for k, v in GOOD.items() if k != "answer"}])], r"tis-loss measures the loss on the "
         r"calibration answers, but none"),
    Case("compare-no-answers-for-a-loss-scorer", lambda w: ["compare", "toy", "--methods", "last,sleb+lstsq", "--calib",
                                                            w.calib("unanswered", [{k: v for k, v in GOOD.items()
                                                                                    if k != "answer"}])],
         r"sleb\+lstsq measures the loss on the calibration answers, but none"),
    Case("calib-folder-not-a-dataset", prune_toy(lambda w: w.path("existing-dir")),
         r"is a folder but not a datasets save_to_disk folder"),
    Case("calib-image-folder-missing", prune_toy(lambda w: w.calib("imgdir", [GOOD]), "--image-folder",
                                                 "/no/such/folder"), r"--image-folder /no/such/folder is not a folder"),
    Case("calib-split-missing", prune_toy(lambda w: w.path("splits")),
         r"has several splits \(train, test\); choose one with --calib-split"),
    Case("calib-hub-dataset-unreachable", prune_toy(lambda w: "no-such-org/no-such-data"),
         r"cannot load the dataset 'no-such-org/no-such-data' from the Hub or its cache .*download it first"),
    Case("calib-image-missing", prune_toy(lambda w: w.calib("gone", [{**GOOD, "image": "img/gone.png"}])),
         r"line 1: image not found: .*gone\.png"),
    Case("calib-image-corrupt", prune_toy(lambda w: w.calib("trunc", [{**GOOD, "image": "img/t.png"}],
                                                            {"img/t.png": truncated_png})),
         r"sample line1: cannot read image .*t\.png.*replace the file"),
    Case("calib-image-truncated-jpeg", prune_toy(lambda w: w.calib("jpeg", [{**GOOD, "image": "img/t.jpg"}],
                                                                    {"img/t.jpg": truncated_jpeg})),
         r"calibration sample line1: cannot read image .*t\.jpg: image file is truncated.*replace the file"),
    Case("calib-image-unsupported", prune_toy(lambda w: w.calib("svg", [{**GOOD, "image": "img/a.svg"}], {
        "img/a.svg": lambda p: p.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')})),
         r"cannot read image .*a\.svg"),
    Case("calib-image-outside-root",
         prune_toy(lambda w: w.calib("escape", [{**GOOD, "image": "../calib-json/img/ok.png"}])),
         r"outside the data folder.*--allow-outside-root"),
    Case("calib-prompt-longer-than-context",
         prune_toy(lambda w: w.calib("long", [{**GOOD, "prompt": "square " * 300}])),
         r"tokens long, more than the model's context of 128", before_load=False),
    Case("calib-num-samples-more-than-the-set", prune_toy(lambda w: w.calib("few", [GOOD, {**GOOD, "id": 2}]),
                                                          "--num-samples", "500"),
         r"--num-samples\) is 500, but .*c\.jsonl has only 2 usable sample\(s\).*give --num-samples 2 or fewer"),
    Case("calib-offset-past-the-set", prune_toy(lambda w: w.calib("few", [GOOD, {**GOOD, "id": 2}]),
                                                "--calib-offset", "2"),
         r"Calibration\.offset \(--calib-offset\) is 2, but .*c\.jsonl has only 2 usable sample\(s\).*smaller"),
    Case("compare-draws-past-the-set", lambda w: ["compare", "toy", "--methods", "block-influence", "--calib",
                                                  w.calib("few", [GOOD, {**GOOD, "id": 2}]), "--num-samples", "2",
                                                  "--calib-draws", "2"],
         r"--calib-draws 2 of 2 sample\(s\) need 4 usable samples; .*c\.jsonl has 2: give fewer draws"),
    Case("compare-draws-without-calibration", lambda w: ["compare", "toy", "--methods", "last,random", "--calib-draws",
                                                         "3"], r"none of --methods reads calibration data"),
    Case("calib-num-samples-zero", prune_toy(lambda w: "toy", "--num-samples", "0"),
         r"Calibration\.num_samples \(--num-samples\) must be a positive integer"),
    # ratios and layers
    Case("ratio-zero", lambda w: ["prune", "toy", "--ratio", "0"], r"strictly between 0 and 1"),
    Case("ratio-negative", lambda w: ["prune", "toy", "--ratio", "-0.3"], r"strictly between 0 and 1"),
    Case("ratio-one", lambda w: ["prune", "toy", "--ratio", "1"], r"strictly between 0 and 1"),
    Case("ratio-removes-every-layer", lambda w: ["prune", "toy", "--ratio", "0.99"], r"at most 15 can go"),
    Case("ratio-removes-nothing", lambda w: ["prune", "toy", "--ratio", "0.01"], r"removes no layer"),
    Case("layers-all", lambda w: ["prune", w.path("llava6"), "--layers", "0,1,2,3,4,5"], r"at least one"),
    Case("layers-out-of-range", lambda w: ["prune", w.path("llava6"), "--layers", "6"], r"out of range"),
    Case("layers-and-ratio", lambda w: ["prune", "toy", "--layers", "1", "--ratio", "0.3"], r"exactly one of"),
    # methods and architectures
    Case("method-unknown", lambda w: ["prune", "toy", "--ratio", "0.3", "--method", "shortgpt"],
         r"argument --method: invalid choice: 'shortgpt'"),
    Case("method-bad-parameter", lambda w: ["prune", "toy", "--ratio", "0.3", "--tis-top-p", "1.5"],
         r"TIS\.top_p \(--tis-top-p\) must be in \(0, 1\]"),
    Case("tis-layers-out-of-range", lambda w: ["prune", "toy", "--ratio", "0.3", "--tis-layers", "99"],
         r"TIS\.layers \(--tis-layers\) \[99\] must be indices in 0\.\.15: the model has 16 decoder layers"),
    Case("score-tis-layers-out-of-range", lambda w: ["score", w.path("llava6"), "--method", "tis-loss", "--tis-layers",
                                                     "2,6"], r"\[2, 6\] must be indices in 0\.\.5: the model has 6"),
    Case("scp-rank-zero", lambda w: ["prune", "toy", "--ratio", "0.3", "--scp-rank", "0"],
         r"SCP\.rank \(--scp-rank\) must be a positive integer"),
    Case("layers-with-method", lambda w: ["prune", "toy", "--layers", "3", "--method", "sleb"],
         r"--method sleb chooses layers for --ratio, but --layers names them"),
    Case("layers-calib-without-compensation", lambda w: ["prune", "toy", "--layers", "3", "--num-samples", "8"],
         r"calibration flags are read only to choose layers \(--ratio\) or to bridge them"),
    Case("device-map-unknown", lambda w: ["prune", "toy", "--layers", "1", "--device-map", "foo"],
         r"Loading\.device_map \(--device-map\) must be auto, balanced"),
    Case("ratio-not-a-number", lambda w: ["prune", "toy", "--ratio", "abc"],
         r"argument --ratio: invalid float value: 'abc' \(see shortlvlm prune --help\)"),
    Case("eval-batch-size-zero", lambda w: ["eval", "toy", "--bench", "shapes", "--eval-batch-size", "0"],
         r"argument --eval-batch-size: takes a positive integer \(got 0\)"),
    Case("eval-old-batch-size-zero", lambda w: ["eval", "toy", "--bench", "shapes", "--batch-size", "0"],
         r"argument --batch-size: takes a positive integer \(got 0\)"),
    Case("compare-eval-batch-size-zero", lambda w: ["compare", "toy", "--eval-batch-size", "0"],
         r"argument --eval-batch-size: takes a positive integer \(got 0\)"),
    Case("max-ratio-out-of-range", lambda w: ["score", "toy", "--method", "sleb", "--max-ratio", "2"],
         r"argument --max-ratio: takes a fraction strictly between 0 and 1 \(got 2\)"),
    Case("max-ratio-without-a-count-scorer", lambda w: ["score", "toy", "--method", "block-influence", "--max-ratio",
                                                        "0.3"],
         r"--max-ratio bounds the scorers whose ranking depends"),
    Case("lstsq-ridge-negative", lambda w: ["prune", "toy", "--ratio", "0.3", "--compensation", "lstsq",
                                            "--lstsq-ridge", "-1"],
         r"LstSq\.ridge \(--lstsq-ridge\) must be a finite number >= 0"),
    Case("laco-scale-not-finite", lambda w: ["prune", "toy", "--layers", "3", "--compensation", "laco",
                                             "--laco-scale", "nan"],
         r"LaCo\.scale \(--laco-scale\) must be a finite number, got nan"),
    Case("layers-calib-with-laco", lambda w: ["prune", "toy", "--layers", "3", "--compensation", "laco",
                                              "--num-samples", "8"],
         r"calibration flags are read only to choose layers \(--ratio\) or to bridge them .*laco reads none"),
    Case("architecture-unknown", lambda w: ["prune", w.path("gpt2"), "--layers", "1"], r"--generic"),
    # models, outputs, plans
    Case("model-path-not-a-model", lambda w: ["prune", w.path("not-a-model"), "--layers", "1"],
         r"not a model directory \(no config\.json"),
    Case("model-path-missing", lambda w: ["prune", "./no-such-local-model", "--layers", "1"],
         r"no such directory: \./no-such-local-model \(MODEL is a local model folder or a hub id"),
    Case("model-not-found", lambda w: ["prune", "no-such-org/no-such-model", "--layers", "1"],
         r"cannot load 'no-such-org/no-such-model'"),
    Case("model-pickle-only", lambda w: ["prune", w.path("pickle-only"), "--layers", "1"],
         r"weights only as pickle files \(pytorch_model\.bin\).*safetensors only"),
    Case("model-remote-code-without-flag", lambda w: ["prune", w.path("remote"), "--layers", "1"],
         r"needs its own Python code.*--trust-remote-code"),
    Case("output-exists", lambda w: ["prune", "toy", "--layers", "1", "--out-existing"], r"--overwrite"),
    Case("output-is-a-file", lambda w: ["prune", "toy", "--layers", "1", "--out-file"],
         r"--out .*existing-file is an existing file; --out must be a directory path: choose another --out"),
    Case("output-is-a-file-overwrite", lambda w: ["prune", "toy", "--layers", "1", "--overwrite", "--out-file"],
         r"--out .*existing-file is an existing file; --out must be a directory path"),
    Case("compare-output-is-a-file", lambda w: ["compare", "toy", "--methods", "last", "--ratios", "0.1", "--limit",
                                                "2", "--out-file"], r"--out .*existing-file is an existing file"),
    Case("bench-unrelated-models", lambda w: ["bench", "toy", w.path("llava6")],
         r"llava6 is not toy or a pruned version of it \(config hash [0-9a-f]{16}, toy's [0-9a-f]{16}\), so a speedup "
         r"between them would mean nothing"),
    Case("plan-malformed", lambda w: ["prune", "toy", "--ratio", "0.3", "--plan", w.path("plan-broken.json")],
         r"not valid JSON"),
    Case("plan-other-layer-count", lambda w: ["prune", w.path("llava6"), "--ratio", "0.3", "--plan",
                                              w.path("plan-toy.json")], r"made for a model with 16 decoder layers"),
    Case("plan-other-model-hash", lambda w: ["prune", "toy", "--ratio", "0.3", "--plan",
                                             w.path("plan-other-hash.json")], r"made for another model"),
    Case("plan-other-weights", lambda w: ["prune", "toy", "--ratio", "0.3", "--plan",
                                          w.path("plan-other-weights.json")],
         r"scored on other weights of this config \(toy, weights hash 0123456789abcdef; this model's is "
         r"[0-9a-f]{16}\)\. Score this model .*--plan-other-weights", before_load=False),
    Case("plan-with-method", lambda w: ["prune", "toy", "--ratio", "0.3", "--plan", w.path("plan-toy.json"),
                                        "--method", "sleb"], r"--plan already names its method.*drop --method sleb"),
    Case("plan-with-layers", lambda w: ["prune", "toy", "--layers", "1", "--plan", w.path("plan-toy.json")],
         r"--plan is a ranking to cut at --ratio; drop --layers"),
    # loading layer by layer
    Case("activations-dir-without-layerwise", lambda w: ["prune", "toy", "--layers", "1", "--activations-dir",
                                                         w.path("existing-dir")],
         r"--activations-dir needs --layerwise"),
    Case("layerwise-with-max-memory", lambda w: ["prune", "toy", "--layers", "1", "--layerwise", "--device-map", "auto",
                                                 "--max-memory", "cpu=1GiB"], r"drop --max-memory"),
    Case("layerwise-with-device-map-auto", lambda w: ["prune", "toy", "--layers", "1", "--layerwise", "--device-map",
                                                      "auto"], r"give --device-map one device"),
    Case("layerwise-activations-dir-missing", lambda w: ["prune", "toy", "--layers", "1", "--layerwise",
                                                         "--activations-dir", w.path("nowhere")],
         r"is not an existing folder; create it first"),
    # evaluation data
    Case("bench-data-missing", lambda w: ["eval", "toy", "--bench", "pope", "--data", w.path("nowhere")],
         r"data folder not found"),
    Case("eval-shapes-limit-past-the-split", lambda w: ["eval", "toy", "--bench", "shapes", "--limit", "100000"],
         r"--limit 100000: the shapes test split is generated and holds 10000 questions .*give --limit 10000 or fewer"),
    Case("demo-limit-past-the-split", lambda w: ["demo", "--limit", "100000"],
         r"--limit 100000: the shapes test split"),
    Case("demo-num-samples-more-than-the-set", lambda w: ["demo", "--num-samples", "300"],
         r"--num-samples\) is 300, but the bundled toy set has only 256 usable sample\(s\)"),
    Case("bench-data-not-given", lambda w: ["eval", "toy", "--bench", "mme"], r"--data is required"),
    Case("eval-mmbench-policy-unknown", lambda w: ["eval", "toy", "--bench", "mmbench", "--mmbench-policy", "judge"],
         r"argument --mmbench-policy: invalid choice: 'judge' \(choose from 'exact', 'lmms-eval'\)"),
    Case("eval-mmbench-policy-other-bench", lambda w: ["eval", "toy", "--bench", "pope", "--mmbench-policy",
                                                       "lmms-eval"],
         r"--mmbench-policy lmms-eval applies to --bench mmbench only; pope reads answers by its own rules"),
    Case("eval-mmbench-policy-with-lenient", lambda w: ["eval", "toy", "--bench", "mmbench", "--lenient",
                                                        "--mmbench-policy", "lmms-eval"],
         r"--lenient replaces those rules altogether: give one of the two"),
]


def run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code
    return code, capsys.readouterr().err


def with_out(argv: list[str], w: World, out: Path) -> list[str]:
    if "--out-existing" in argv:
        return [a for a in argv if a != "--out-existing"] + ["--out", w.path("existing-dir")]
    if "--out-file" in argv:
        return [a for a in argv if a != "--out-file"] + ["--out", w.path("existing-file")]
    return [*argv, "--out", str(out)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line_and_leaves_nothing(world, tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out" / ("results.json" if case.argv(world)[0] == "eval" else "pruned")
    code, err = run(with_out(case.argv(world), world, out), capsys)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and re.search(case.message, lines[0]), err
    assert "Traceback" not in err and "remote code ran" not in err
    assert not (tmp_path / "out").exists()  # nothing written, not even the parent folder
    if case.before_load:
        assert "Loading weights" not in err and "self-check" not in err  # the demo's self-check loads models too
    assert (world.root / "existing-file").read_text() == "x" and not any((world.root / "existing-dir").iterdir())


@pytest.mark.parametrize("argv", [["prune", "toy", "--ratio", "abc", "--out", "x"], ["eval", "toy", "--bench", "nope"],
                                  ["compare", "toy", "--out", "x", "--eval-batch-size", "0"]])
def test_usage_errors_are_one_line_without_the_usage_dump(capsys, argv):
    code, err = run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "usage:" not in err and "--help" in err


@pytest.mark.parametrize("argv", [
    [], ["models", "--x"], ["score", "toy", "--out", "p.json", "--max-ratio", "2"],
    ["score", "toy", "--out", "p.json", "--method", "block-influence", "--max-ratio", "0.3"],
    ["prune", "toy", "--out", "x", "--ratio", "abc"], ["prune", "toy", "--out", "x", "--ratio", "0"],
    ["compare", "toy", "--out", "x", "--eval-batch-size", "0"], ["compare", "toy", "--out", "x", "--ratios", "2"],
    ["eval", "toy", "--out", "r.json", "--bench", "nope"], ["eval", "toy", "--out", "r.json", "--bench", "mme"],
    ["bench", "toy", "--out", "b.json", "--nope"], ["bench", "toy", "--out", "b.json", "--rounds", "0"],
    ["demo", "--limit", "x"], ["demo", "--out", "EXISTING-FILE"]])
def test_every_commands_user_errors_share_one_prefix(world, tmp_path, monkeypatch, capsys, argv):
    """argparse's errors and the project's alike, in every command: `shortlvlm: error: ...`, one line."""
    monkeypatch.chdir(tmp_path)
    code, err = run([world.path("existing-file") if a == "EXISTING-FILE" else a for a in argv], capsys)
    assert code == 2 and err.startswith("shortlvlm: error: ") and len(err.strip().splitlines()) == 1, err
    if argv[:1] == ["models"] or "--nope" in argv:  # a flag the subcommand does not know: its help, not the top's
        assert err.endswith(f"(see shortlvlm {argv[0]} --help)\n")


def test_evals_old_batch_size_name_still_works_and_says_to_use_the_new_one(capsys):
    """--batch-size is the calibration batch in prune/score/compare; eval's generation batch is --eval-batch-size."""
    from shortlvlm.cli.main import build_parser

    args = build_parser().parse_args(["eval", "toy", "--bench", "shapes", "--batch-size", "4", "--out", "r.json"])
    assert args.eval_batch_size == 4 and not hasattr(args, "batch_size")
    assert capsys.readouterr().err == ("shortlvlm: warning: --batch-size is deprecated here, use --eval-batch-size "
                                       "(--batch-size is the calibration batch in prune, score and compare)\n")
    assert build_parser().parse_args(["eval", "toy", "--bench", "shapes", "--out", "r.json"]).eval_batch_size == 16
    assert capsys.readouterr().err == ""
    for command in (["prune", "toy", "--ratio", "0.3"], ["score", "toy"], ["compare", "toy"]):
        parsed = build_parser().parse_args([*command, "--batch-size", "4", "--out", "o"])
        assert parsed.batch_size == 4 and capsys.readouterr().err == ""  # the calibration batch, not deprecated


def test_the_docs_table_and_these_cases_agree():
    """Every table row names a test that exists here (by case id) or elsewhere (file::function)."""
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ") and "`" in line.split("|")[-2]]
    referenced = [re.findall(r"`([^`]+)`", line.split("|")[-2])[0] for line in rows]
    case_ids = {c.id for c in CASES}
    here = {r for r in referenced if "::" not in r}
    assert here == case_ids, f"in docs only: {sorted(here - case_ids)}; in tests only: {sorted(case_ids - here)}"
    root = DOC.parents[1]
    for ref in referenced:
        if "::" in ref:
            file, function = ref.split("::")
            assert re.search(rf"^def {re.escape(function)}\(", (root / file).read_text(), re.M), ref

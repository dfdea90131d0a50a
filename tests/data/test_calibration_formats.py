"""Calibration data in the formats users have: the same samples give the same samples, and the same scores.

Each format is written from the same four samples of the toy's bundled set: LLaVA's own JSON array
(paths relative to an image folder, with a multi-turn and a text-only record mixed in), ShareGPT /
OpenAI chat messages with string and with list content, a datasets save_to_disk folder, a parquet
file with image bytes, and JSONL with a UTF-8 BOM.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from shortlvlm import load, score
from shortlvlm.data.calibration import CalibrationError, read_calibration_file, toy_calibration
from shortlvlm.scoring import SLEB, BlockInfluence, TISCosine
from shortlvlm.scoring.base import ScoringError

datasets = pytest.importorskip("datasets")

REFERENCE = toy_calibration(4)


def llava_array(root: Path) -> tuple[Path, Path]:
    """mix665k-style: one JSON array in one folder, images in another (paths relative to it)."""
    images = root / "images"
    (images / "shapes").mkdir(parents=True)
    records = []
    for i, sample in enumerate(REFERENCE):
        shutil.copy(sample.image_path, images / "shapes" / f"{i}.png")
        records.append({"id": f"s{i}", "image": f"shapes/{i}.png", "conversations": [
            {"from": "human", "value": f"<image>\n{sample.prompt}"}, {"from": "gpt", "value": sample.answer},
            *([{"from": "human", "value": "And the rest?"}, {"from": "gpt", "value": "Left out."}] if i == 1 else []),
        ]})
        if i == 2:  # a text-only record, as mix665k has
            records.append({"id": "text", "conversations": [{"from": "human", "value": "Say hi."},
                                                            {"from": "gpt", "value": "Hi."}]})
    (root / "data").mkdir()
    path = root / "data" / "mix.json"
    path.write_text(json.dumps(records, indent=1))
    return path, images


def messages_jsonl(root: Path, list_content: bool) -> Path:
    lines = []
    for i, sample in enumerate(REFERENCE):
        name = f"{i}.png"
        shutil.copy(sample.image_path, root / name)
        if list_content:
            data_uri = "data:image/png;base64," + base64.b64encode(sample.image_path.read_bytes()).decode()
            user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri}},
                                                 {"type": "text", "text": sample.prompt}]}
            record = {"messages": [{"role": "system", "content": "Be brief."}, user,
                                   {"role": "assistant", "content": [{"type": "text", "text": sample.answer}]}]}
        else:
            record = {"images": [name], "messages": [{"role": "user", "content": f"<image>{sample.prompt}"},
                                                     {"role": "assistant", "content": sample.answer}]}
        lines.append(json.dumps(record))
    path = root / "chat.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def hf_dataset(with_image_feature: bool):
    rows = {"image": [str(s.image_path) if with_image_feature else s.image_path.read_bytes() for s in REFERENCE],
            "question": [s.prompt for s in REFERENCE], "answer": [s.answer for s in REFERENCE]}
    dataset = datasets.Dataset.from_dict(rows)
    return dataset.cast_column("image", datasets.Image()) if with_image_feature else dataset


def bom_jsonl(root: Path) -> Path:
    path = root / "bom.jsonl"
    lines = [json.dumps({"image": str(s.image_path.relative_to(s.image_path.parents[1])), "prompt": s.prompt,
                         "answer": s.answer}) for s in REFERENCE]
    shutil.copytree(REFERENCE[0].image_path.parent, root / REFERENCE[0].image_path.parent.name)
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    return path


def write_format(name: str, root: Path) -> tuple[Path, dict]:
    """(--calib, extra reader options) of the reference samples in one format."""
    root.mkdir(parents=True, exist_ok=True)
    if name == "llava-json-array":
        path, images = llava_array(root)
        return path, {"image_folder": images}
    if name == "chat-string-content":
        return messages_jsonl(root, list_content=False), {}
    if name == "chat-list-content":
        return messages_jsonl(root, list_content=True), {}
    if name == "save-to-disk":
        hf_dataset(with_image_feature=True).save_to_disk(str(root / "ds"))
        return root / "ds", {}
    if name == "parquet-image-bytes":
        hf_dataset(with_image_feature=False).to_parquet(str(root / "calib.parquet"))
        return root / "calib.parquet", {}
    if name == "bom-jsonl":
        return bom_jsonl(root), {}
    raise AssertionError(name)


FORMATS = ["llava-json-array", "chat-string-content", "chat-list-content", "save-to-disk", "parquet-image-bytes",
           "bom-jsonl"]


def pixels(sample) -> torch.Tensor:
    return torch.tensor(list(sample.load_image().getdata()))


@pytest.fixture(scope="module")
def toy():
    return load("toy")


@pytest.fixture(scope="module")
def reference_scores(toy):
    model, processor = toy
    return score(model, processor, scorer=TISCosine(), calibration=REFERENCE).layer_scores


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_gives_the_same_samples_and_the_same_scores(name, tmp_path, toy, reference_scores):
    source, extra = write_format(name, tmp_path)
    notes: list[str] = []
    samples = read_calibration_file(source, report=notes.append, **extra)
    assert [(s.prompt, s.answer) for s in samples] == [(s.prompt, s.answer) for s in REFERENCE]
    for sample, expected in zip(samples, REFERENCE, strict=True):
        assert torch.equal(pixels(sample), pixels(expected))
    if name == "llava-json-array":
        assert notes == [
            "calibration: skipped 1 text-only sample(s) without an image (token importance compares image and "
            "text tokens); using 4",
            "calibration: 1 multi-turn conversation(s) give their first exchange; 1 later exchange(s) left out "
            "(one exchange per image spreads --num-samples over more images)"]
    else:
        assert notes == []
    model, processor = toy
    plan = score(model, processor, scorer=TISCosine(), calibration=samples)
    assert plan.layer_scores == reference_scores


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
def test_every_format_calibrates_prune_end_to_end(name, tmp_path, capsys):
    from shortlvlm.cli import main
    from shortlvlm.plan import PLAN_FILENAME

    source, extra = write_format(name, tmp_path / "data")
    flags = ["--image-folder", str(extra["image_folder"])] if "image_folder" in extra else []
    out = tmp_path / "pruned"
    code = main(["prune", "toy", "--ratio", "0.2", "--calib", str(source), *flags, "--no-verify", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    plan = json.loads((out / PLAN_FILENAME).read_text())
    assert plan["calibration"]["num_samples"] == 4 and len(plan["removed_layers"]) == 3
    assert ("skipped 1 text-only sample(s)" in err) == (name == "llava-json-array")


def test_a_datasets_folder_with_several_splits_needs_calib_split(tmp_path):
    datasets.DatasetDict({"train": hf_dataset(True), "test": hf_dataset(True).select([0])}).save_to_disk(
        str(tmp_path / "dd"))
    with pytest.raises(CalibrationError, match=r"has several splits \(train, test\); choose one with --calib-split"):
        read_calibration_file(tmp_path / "dd")
    assert len(read_calibration_file(tmp_path / "dd", split="test")) == 1
    with pytest.raises(CalibrationError, match="has no split 'val'"):
        read_calibration_file(tmp_path / "dd", split="val")


RECOGNISED_BUT_WRONG = [
    ({"image": "a.png", "messages": [{"role": "user", "content": 5}]},
     r"line 1 \(chat messages\): turn 0: 'content' must be a string or a list of parts"),
    ({"image": "a.png", "messages": [{"role": "assistant", "content": "hi"}]},
     r"line 1 \(chat messages\): the conversation has no human turn; add \{\"role\": \"user\""),
    ({"image": "a.png", "conversations": [{"from": "gpt", "value": "x"}]},
     r"line 1 \(LLaVA conversations\): the conversation has no human turn"),
    ({"images": ["a.png", "a.png"], "prompt": "q"}, r"line 1: 'images' holds 2 images; calibration samples take one"),
    ({"image": "https://example.com/a.png", "prompt": "q"},
     r"line 1: the image is a URL \(https://example.com/a.png\); shortlvlm does not download .* download the images"),
    ({"image": "data:image/png;base64,@@@", "prompt": "q"}, r"line 1: the image data URI is not valid base64"),
    ({"image": "a.png", "text": "q"}, r"line 1: no prompt in a supported format \(its keys: image, text\); "
                                      r"supported: LLaVA conversations"),
    # an empty reply (issue 32): refused for every scorer, with the way to give a sample without an answer
    ({"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": ""}]},
     r"line 1 \(LLaVA conversations\): the answer is empty; write the reply, or leave the answer out"),
    ({"image": "a.png", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": []}]},
     r"line 1 \(chat messages\): the answer is empty"),
    ({"image": "a.png", "prompt": "q", "answer": " \n"}, r"line 1 \(prompt/answer\): the answer is empty.*tis-loss"),
    # more image placeholders than the sample's one image (issue 32), however the placeholders are written
    ({"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nq <image>"}]},
     r"line 1 \(LLaVA conversations\): the prompt has 2 <image> placeholders but the sample has 1 image"),
    ({"image": "a.png", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                                                    {"type": "text", "text": "q"}]}]},
     r"line 1 \(chat messages\): the prompt has 2 <image> placeholders but the sample has 1 image"),
    ({"prompt": "<image> q <image>"}, r"line 1 \(prompt/answer\): the prompt has 2 <image> placeholders but the "
                                      r"sample has no image"),
    ({"image": "a.png", "prompt": "q", "answer": "<image> red"},
     r"line 1 \(prompt/answer\): the answer holds 1 <image> placeholder\(s\); the image goes in the prompt"),
]


def test_one_placeholder_per_image_and_no_answer_are_fine(tmp_path):
    """What the refusals above leave alone: one <image> (as text or as a chat part) and a sample without answer."""
    shutil.copy(REFERENCE[0].image_path, tmp_path / "a.png")
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"image": "a.png", "prompt": "<image>\nq"},
        {"image": "a.png", "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
                                        {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]}]))
    samples = read_calibration_file(path)
    assert [(s.prompt, s.answer) for s in samples] == [("q", None), ("q", "red")]


@pytest.mark.parametrize(("record", "message"), RECOGNISED_BUT_WRONG)
def test_a_recognised_but_wrong_record_names_its_format_the_record_and_the_fix(tmp_path, record, message):
    shutil.copy(REFERENCE[0].image_path, tmp_path / "a.png")
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(CalibrationError, match=message):
        read_calibration_file(path)


def test_embedded_bytes_that_are_not_an_image_name_the_row(tmp_path):
    datasets.Dataset.from_dict({"image": [b"not a png"], "prompt": ["q"]}).to_parquet(str(tmp_path / "c.parquet"))
    with pytest.raises(CalibrationError, match=r"c\.parquet, row 0: cannot read the embedded image"):
        read_calibration_file(tmp_path / "c.parquet")


def test_a_folder_that_is_not_a_dataset_and_a_missing_image_folder_are_refused(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(CalibrationError, match="is a folder but not a datasets save_to_disk folder"):
        read_calibration_file(tmp_path / "plain")
    path, _ = llava_array(tmp_path / "a")
    with pytest.raises(CalibrationError, match=r"image not found: .*; fix the path .* --image-folder"):
        read_calibration_file(path)  # relative to the JSON's folder, where the images are not
    with pytest.raises(CalibrationError, match=r"--image-folder .* is not a folder"):
        read_calibration_file(path, image_folder=tmp_path / "nowhere")


def test_samples_without_answers_calibrate_the_scorers_that_need_none(toy, reference_scores):
    """Leaving the answer out is the way to give a sample without one (an empty answer is refused): the scorers
    that measure no loss rank with it, and a loss scorer is told what it lacks (the CLI says so before load)."""
    model, processor = toy
    unanswered = [dataclasses.replace(s, answer=None) for s in REFERENCE]
    for scorer in (TISCosine(), BlockInfluence()):
        scores = score(model, processor, scorer=scorer, calibration=unanswered).layer_scores
        assert sum(math.isfinite(v) for v in scores if v is not None) >= 14, scorer.name
    # the answers were part of what it measured
    assert score(model, processor, scorer=TISCosine(), calibration=unanswered).layer_scores != reference_scores
    assert not TISCosine.needs_answers and not BlockInfluence.needs_answers and SLEB.needs_answers
    with pytest.raises(ScoringError, match="no answer tokens; loss-based scorers need answers"):
        score(model, processor, scorer=SLEB(), calibration=unanswered, num_remove=2)

"""Calibration JSONL: both layouts, lazy image checks, path confinement, actionable errors, a stable hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from shortlvlm.data.calibration import (
    CalibrationError,
    CalibrationSample,
    calibration_hash,
    load_calibration,
    read_calibration_jsonl,
)
from shortlvlm.data.calibration_set import Calibration, read_calibration
from shortlvlm.errors import ShortLVLMError


def write_png(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), color).save(path)
    return path


def write_lines(path: Path, lines: list[object]) -> Path:
    """Each item is a JSON object (dumped) or a raw line (written as is)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path


def llava(sample_id: str = "a", image: object = "img/a.png", question: str = "What is it?") -> dict:
    return {"id": sample_id, "image": image, "conversations": [
        {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": "A dog."},
        {"from": "human", "value": "And then?"}, {"from": "gpt", "value": "Ignored."},
    ]}


@pytest.fixture
def folder(tmp_path) -> Path:
    write_png(tmp_path / "img" / "a.png")
    write_png(tmp_path / "img" / "b.png", (30, 200, 30))
    return tmp_path


def test_llava_format_uses_first_exchange_and_resolves_the_image(folder):
    path = write_lines(folder / "calib.jsonl", [llava(), "", llava("b", "img/b.png", "Colour?")])
    samples = read_calibration_jsonl(path)
    assert [s.id for s in samples] == ["a", "b"]
    assert samples[0] == CalibrationSample(id="a", prompt="What is it?", answer="A dog.",
                                           image_path=folder / "img" / "a.png")
    assert samples[0].load_image().mode == "RGB" and samples[0].load_image().size == (4, 3)


def test_user_and_assistant_roles_and_placeholder_after_text(folder):
    record = {"image": "img/a.png", "conversations": [
        {"from": "system", "value": "be brief"}, {"from": "user", "value": "Describe.\n<image>"},
        {"from": "assistant", "value": "Red."}]}
    (sample,) = read_calibration_jsonl(write_lines(folder / "c.jsonl", [record]))
    assert (sample.id, sample.prompt, sample.answer) == ("line1", "Describe.", "Red.")


def test_simple_format_question_synonym_and_optional_answer(folder):
    path = write_lines(folder / "c.jsonl", [
        {"id": 7, "image": "img/a.png", "prompt": "<image> What?", "answer": "x"},
        {"image": "./img/b.png", "question": "Why?"},
        {"id": "c", "image": "img/a.png", "prompt": "Which?", "answer": None},
    ])
    samples = read_calibration_jsonl(path)
    assert [(s.id, s.prompt, s.answer) for s in samples] == [
        ("7", "What?", "x"), ("line2", "Why?", None), ("c", "Which?", None)]
    assert samples[1].image_path == folder / "img" / "b.png"


def test_conversation_without_reply_has_no_answer(folder):
    record = {"image": "img/a.png", "conversations": [{"from": "human", "value": "<image>\nHi"}]}
    (sample,) = read_calibration_jsonl(write_lines(folder / "c.jsonl", [record]))
    assert sample.answer is None


def test_limit_stops_reading(folder):
    path = write_lines(folder / "c.jsonl", [llava("a"), llava("b", "img/b.png"), "not json at all"])
    assert [s.id for s in read_calibration_jsonl(path, limit=2)] == ["a", "b"]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(CalibrationError, match="positive integer"):
            read_calibration_jsonl(path, limit=bad)


def test_images_are_not_opened_while_reading(folder):
    (folder / "img" / "broken.png").write_bytes(b"not a png")
    (sample,) = read_calibration_jsonl(write_lines(folder / "c.jsonl", [llava("x", "img/broken.png")]))
    with pytest.raises(CalibrationError, match=r"sample x: cannot read image .*broken\.png"):
        sample.load_image()


def test_image_optional_when_not_required(folder):
    path = write_lines(folder / "c.jsonl", [{"prompt": "text only"}])
    (sample,) = read_calibration_jsonl(path, require_image=False)
    assert sample.image_path is None and sample.load_image() is None
    with pytest.raises(CalibrationError, match=r"none of its 1 samples has an image; Short-LVLM's token importance"):
        read_calibration_jsonl(path)  # text-only samples are skipped, and a set of only those is refused


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"id": "a", "image": "img/a.png"}, "no prompt"),
    ({"image": "img/a.png", "prompt": 3}, "'prompt' must be a string"),
    ({"image": "img/a.png", "prompt": "q", "answer": ["x"]}, "'answer' must be a string"),
    ({"image": "img/a.png", "prompt": "<image>\n  "}, "prompt is empty"),
    ({"image": "img/a.png", "prompt": "q", "question": "q"}, "both 'prompt' and 'question'"),
    ({"image": 5, "prompt": "q"}, "'image' must be a path, image bytes or an image"),
    ({"image": ["img/a.png", "img/b.png"], "prompt": "q"}, "'image' holds 2 images"),
    ({"image": "img/missing.png", "prompt": "q"}, "image not found"),
    ({"id": True, "image": "img/a.png", "prompt": "q"}, "'id' must be"),
    ({"image": "img/a.png", "conversations": "hi"}, "'conversations' must be a list"),
    ({"image": "img/a.png", "conversations": ["hi"]}, "conversation turn 0 must be an object"),
    ({"image": "img/a.png", "conversations": [{"from": "human", "value": 1}]}, "turn 0 'value' must be"),
    ({"image": "img/a.png", "conversations": [{"from": "gpt", "value": "x"}]}, "no human turn"),
    ({"image": "img/a.png", "conversations": [], "prompt": "q"}, "both 'conversations' and 'prompt'"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_malformed_lines_name_file_line_and_problem(folder, line, message):
    path = write_lines(folder / "c.jsonl", [llava(), "", line])
    with pytest.raises(CalibrationError, match=message) as info:
        read_calibration_jsonl(path)
    assert "c.jsonl, line 3" in str(info.value)


def test_duplicate_ids_name_both_lines(folder):
    path = write_lines(folder / "c.jsonl", [llava("a"), llava("b", "img/b.png"), llava("a")])
    with pytest.raises(CalibrationError, match=r"line 3: duplicate id 'a' \(also on line 1\)"):
        read_calibration_jsonl(path)


def test_default_ids_cannot_collide_silently(folder):
    path = write_lines(folder / "c.jsonl", [{"id": "line2", "image": "img/a.png", "prompt": "q"},
                                            {"image": "img/a.png", "prompt": "q"}])
    with pytest.raises(CalibrationError, match="duplicate id 'line2'"):
        read_calibration_jsonl(path)


def test_empty_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        read_calibration_jsonl(write_lines(tmp_path / "empty.jsonl", ["", "  "]))
    with pytest.raises(CalibrationError, match="calibration file not found"):
        read_calibration_jsonl(tmp_path / "nowhere.jsonl")
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(CalibrationError, match="not UTF-8"):
        read_calibration_jsonl(tmp_path / "latin.jsonl")


@pytest.mark.parametrize("where", ["../outside.png", "img/../../outside.png", "ABSOLUTE"])
def test_images_outside_the_folder_are_refused_unless_allowed(tmp_path, where):
    outside = write_png(tmp_path / "outside.png")
    data = tmp_path / "data"
    write_png(data / "img" / "a.png")
    image = str(outside) if where == "ABSOLUTE" else where
    path = write_lines(data / "c.jsonl", [{"image": image, "prompt": "q"}])
    with pytest.raises(CalibrationError, match=r"line 1: .*outside the data folder.*--allow-outside-root"):
        read_calibration_jsonl(path)
    (sample,) = read_calibration_jsonl(path, allow_outside_root=True)
    assert sample.image_path.resolve() == outside.resolve()
    (again,) = load_calibration(path, allow_outside_root=True)
    assert again == sample


def test_hash_is_stable_and_sensitive_to_images_text_and_order(folder):
    path = write_lines(folder / "c.jsonl", [llava("a"), llava("b", "img/b.png")])
    samples = read_calibration_jsonl(path)
    reference = calibration_hash(samples)
    assert reference == calibration_hash(read_calibration_jsonl(path)) and len(reference) == 64
    assert calibration_hash(samples[::-1]) != reference
    assert calibration_hash(samples[:1]) != reference
    changed_prompt = CalibrationSample(id="b", prompt="Other?", answer="A dog.", image_path=samples[1].image_path)
    assert calibration_hash([samples[0], changed_prompt]) != reference
    no_answer = CalibrationSample(id="b", prompt=samples[1].prompt, answer=None, image_path=samples[1].image_path)
    empty_answer = CalibrationSample(id="b", prompt=samples[1].prompt, answer="", image_path=samples[1].image_path)
    assert len({calibration_hash([samples[0], s]) for s in (no_answer, empty_answer)} | {reference}) == 3
    raw = bytearray((folder / "img" / "b.png").read_bytes())
    raw[-20] ^= 1
    (folder / "img" / "b.png").write_bytes(bytes(raw))
    assert calibration_hash(samples) != reference


def test_hash_of_in_memory_images_follows_pixels():
    red, blue = Image.new("RGB", (4, 3), (255, 0, 0)), Image.new("RGB", (4, 3), (0, 0, 255))
    sample = CalibrationSample(id="m", prompt="q", answer="a", image=red)
    assert sample == CalibrationSample(id="m", prompt="q", answer="a", image=blue)  # image not compared
    assert calibration_hash([sample]) == calibration_hash([CalibrationSample(id="m", prompt="q", answer="a",
                                                                             image=red.copy())])
    assert calibration_hash([sample]) != calibration_hash([CalibrationSample(id="m", prompt="q", answer="a",
                                                                             image=blue)])
    assert sample.load_image().getpixel((0, 0)) == (255, 0, 0)


def test_hash_of_a_deleted_image_is_an_error(folder):
    samples = read_calibration_jsonl(write_lines(folder / "c.jsonl", [llava("a")]))
    (folder / "img" / "a.png").unlink()
    with pytest.raises(CalibrationError, match=r"sample a: cannot read image"):
        calibration_hash(samples)


def test_load_calibration_sources(folder):
    path = write_lines(folder / "c.jsonl", [llava("a"), llava("b", "img/b.png")])
    assert [s.id for s in load_calibration(str(path), limit=1)] == ["a"]
    assert [s.id for s in load_calibration(None, model_name="toy", limit=3)] == [
        "calibration-0", "calibration-1", "calibration-2"]
    assert len(load_calibration("toy", model_name="llava-hf/llava-1.5-7b-hf", limit=2)) == 2
    with pytest.raises(CalibrationError,
                       match=r"--calib is required for llava-hf/llava-1.5-7b-hf: calibration samples as LLaVA"):
        load_calibration(None, model_name="llava-hf/llava-1.5-7b-hf")
    assert issubclass(CalibrationError, ShortLVLMError)


def test_num_samples_beyond_the_set_is_refused_and_the_default_takes_all(folder):
    """--num-samples is a promise about the statistics: 3 of a 2-sample file is refused, not quietly 2 (issue 32)."""
    path = write_lines(folder / "c.jsonl", [llava("a"), {"prompt": "text only"}, llava("b", "img/b.png")])  # 2 usable
    assert [s.id for s in read_calibration(Calibration(source=str(path), num_samples=2)).samples] == ["a", "b"]
    assert len(read_calibration(Calibration(source=str(path))).samples) == 2
    with pytest.raises(CalibrationError, match=r"Calibration\.num_samples \(--num-samples\) is 3, but .*c\.jsonl has "
                                               r"only 2 usable sample\(s\) \(with an image\); give --num-samples 2 or "
                                               r"fewer, or leave it out"):
        read_calibration(Calibration(source=str(path), num_samples=3))
    with pytest.raises(CalibrationError, match=r"is 257, but the bundled toy set has only 256 usable"):
        read_calibration(Calibration(num_samples=257), "toy")

"""Property-based fuzzing of the readers of untrusted files: any input gives a valid result or a project error.

Calibration JSONL files, pruning plans and the partial-answer files of resumable evaluation are read
from disk and may be hand-edited, truncated or hostile. Each test feeds generated inputs (arbitrary
bytes, pathological JSON, near-valid records with one or two fields bent) and accepts exactly two
outcomes: a result that satisfies the reader's invariants, or a `ShortLVLMError`. Runs are bounded
(`max_examples`) and deterministic (`derandomize=True`, no example database).

`pytest tests/test_fuzz_readers.py --hypothesis-show-statistics` shows how often each kind of input
is accepted or rejected (and why), i.e. how deep the generated inputs reach into each reader.
"""

from __future__ import annotations

import functools
import io
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from shortlvlm.data.calibration import read_calibration_jsonl
from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.fingerprint import model_fingerprint
from shortlvlm.models import get_adapter
from shortlvlm.plan import Plan, PlanError
from shortlvlm.resume.answers import read_partial_answers
from shortlvlm.selection import check_plan_matches, planned_removal
from shortlvlm.testbeds.tiny import tiny_model

TINY_LAYERS = 6


def fuzz_settings(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------- shared

# Inputs that break naive readers: Python's json raises RecursionError past ~1000 nesting levels and
# ValueError (not JSONDecodeError) for integer literals over 4300 digits; the OS refuses file names
# over 255 bytes and paths over 4096 (ENAMETOOLONG). Generated files hold these short markers, which
# `expand` replaces just before writing, so that failing examples stay readable.
MARKERS = {
    "@DEEP_ARRAY@": "[" * 100_000 + "]" * 100_000,
    "@DEEP_OBJECT@": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "@HUGE_INT@": "1" * 5000,
    "@LONG_NAME@": "n" * 300,
    "@LONG_PATH@": "d/" * 3000 + "a.png",
}
PATHOLOGICAL_LINES = (
    "@DEEP_ARRAY@", "@DEEP_OBJECT@", "@HUGE_INT@", "-@HUGE_INT@", "1e999", "NaN", "-Infinity", "null", "[]",
    "{}", '"\\ud800"', "\x00", "\ufeff{}", '{"id": @HUGE_INT@}', '{"a": @DEEP_ARRAY@}',
    '{"prompt": "x", "image": "a.png", "id": @HUGE_INT@}', '{"prompt": "x", "image": "a.png", "id": 1@HUGE_INT@}',
)


def expand(data: bytes) -> bytes:
    """The file content the markers stand for."""
    for marker, text in MARKERS.items():
        data = data.replace(marker.encode(), text.encode())
    return data


def write(folder: Path, name: str, data: bytes) -> Path:
    """folder/name holding `data` with its markers expanded."""
    path = folder / name
    path.write_bytes(expand(data))
    return path


def rejected(exc: ShortLVLMError) -> None:
    """Count the kinds of rejection (pytest --hypothesis-show-statistics), to see what the inputs reach."""
    message = re.split(r", line \d+: |\.json |\.jsonl: |: ", str(exc), maxsplit=1)[-1]
    message = re.sub(r"[0-9]+", "N", message)[:40].encode("ascii", "backslashreplace").decode()  # no lone surrogates
    event(f"rejected ({type(exc).__name__}): {message}")


def mostly(common, rare, odds: int = 4):
    """`common`, or `rare` about once in `odds` draws (st.one_of ignores repeated branches, so it cannot weight)."""
    return st.integers(0, odds - 1).flatmap(lambda i: rare if i == 0 else common)


def one_in(n: int):
    """A boolean strategy that is True about once in `n` draws (hypothesis' integers favour the bounds)."""
    return st.sampled_from([True] + [False] * (n - 1))


json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**40), max_value=10**40)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def dumps(value: object) -> str:
    """One-line JSON text of a generated value (NaN/Infinity included, as Python's json writes them)."""
    return json.dumps(value)


# ----------------------------------------------------------------------------------- calibration JSONL

IMAGE_CHOICES = (
    "a.png", "./a.png", "sub/b.png", "sub/../a.png", "sub//b.png", "sub/b.png/", "../outside.png",
    "sub/../../outside.png", "../data/a.png", "@ROOT@/a.png", "@ROOT@/../outside.png", "@OUTSIDE@",
    "missing.png", "dir.png", "sub", ".", "..", "", "   ", "a.png\x00", "\x00", "a\x00.png", "@LONG_NAME@",
    "@LONG_PATH@", "sub/@LONG_NAME@", "@ROOT@/@LONG_NAME@", "/", "/etc/passwd", "~/a.png", "a.png\n",
    "\ud800.png", "C:\\a.png", "<image>", "calib.jsonl",
)
image_values = mostly(st.sampled_from(IMAGE_CHOICES), st.text(max_size=20) | json_values, 3)
good_prompts = st.sampled_from(["<image>\nWhat is shown?", "What colour is it?", "<image> Why? <image>", "Q",
                                "q<image>q", "<ima", "\x00", "\ud800", "<IMAGE>", "ünïcödé 🙂"])
prompt_texts = (good_prompts | st.text(max_size=30)
                | st.sampled_from(["<image>", "<image>\n", " <image> ", "<image><image>", " ", "", "\u2028"])
                | st.lists(st.sampled_from(["<image>", " ", "\n", "Why", "\t"]), max_size=5).map("".join))
mostly_good_prompts = mostly(good_prompts, prompt_texts, 4)
loose_text = prompt_texts | json_values
roles = st.sampled_from(["human", "user", "gpt", "assistant", "system", "HUMAN", "Gpt", "USER", ""]) | json_values
id_values = (st.sampled_from(["a", "b", "c", 1, 2, "1", 0, -1, "line1", "line2", "", " ", True, 1.5])
             | st.text(max_size=8) | json_values)
calibration_fields = {
    "id": id_values, "image": image_values, "prompt": loose_text, "question": loose_text, "answer": loose_text,
    "conversations": st.lists(st.fixed_dictionaries({}, optional={"from": roles, "value": loose_text}) | json_values,
                              max_size=5) | json_values,
    "extra": json_values,
}


@st.composite
def conversations(draw) -> list:
    """A LLaVA conversation: skipped turns, the human turn, maybe a reply, maybe anything after."""
    skipped = draw(st.lists(st.fixed_dictionaries({"from": st.sampled_from(["system", "gpt", "assistant", "tool"]),
                                                   "value": loose_text}), max_size=2))
    human = {"from": draw(st.sampled_from(["human", "user", "Human", "USER"])), "value": draw(mostly_good_prompts)}
    reply = draw(st.lists(st.fixed_dictionaries({"from": st.sampled_from(["gpt", "assistant", "GPT"]),
                                                 "value": prompt_texts}), max_size=1))
    later = draw(st.lists(st.fixed_dictionaries({}, optional={"from": roles, "value": loose_text}), max_size=2))
    return [*skipped, human, *reply, *later]


@st.composite
def near_valid_records(draw) -> dict:
    """A calibration record in one of the two layouts, then up to two fields deleted, replaced or added."""
    record = {}
    if draw(st.booleans()):
        record["id"] = draw(st.sampled_from(["a", "b", "c", 1, 2, 3, "x y", "ünï"]))
    if not draw(one_in(8)):
        record["image"] = draw(image_values | st.sampled_from(["a.png", "sub/b.png", "@ROOT@/a.png", "@OUTSIDE@"]))
    layout = draw(st.sampled_from(["prompt", "question", "conversations"]))
    if layout == "conversations":
        record["conversations"] = draw(conversations())
    else:
        record[layout] = draw(mostly_good_prompts)
        if draw(st.booleans()):
            record["answer"] = draw(st.none() | prompt_texts)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        name = draw(st.sampled_from(sorted(calibration_fields)))
        if draw(st.booleans()):
            record.pop(name, None)
        else:
            record[name] = draw(calibration_fields[name])
    return record


record_lines = mostly(near_valid_records().map(dumps),
                      near_valid_records().map(lambda r: json.dumps(r, ensure_ascii=False))
                      | st.fixed_dictionaries({}, optional=calibration_fields).map(dumps), 3)
structured_lines = mostly(record_lines, st.sampled_from(PATHOLOGICAL_LINES)
                          | st.sampled_from(["", "   ", "\t", "\x0c", "\u2028", "\x85"]), 4)
newlines = st.sampled_from(["\n", "\n", "\r\n", "\r"])
limits = st.none() | st.integers(min_value=1, max_value=4)  # bad limits: test_calibration_bad_limit_...


@st.composite
def calibration_files(draw) -> bytes:
    """The bytes of a calibration file: near-valid records, raw text lines, or arbitrary bytes."""
    kind = draw(st.sampled_from(["structured"] * 4 + ["text", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    lines = draw(st.lists(structured_lines if kind == "structured" else (st.text(max_size=40) | structured_lines),
                          min_size=0, max_size=5))
    text = draw(newlines).join(lines) + draw(st.sampled_from(["", "\n"]))
    encoded = text.encode("utf-8", errors="surrogatepass")
    if draw(one_in(10)):  # corrupt the file: invalid UTF-8, NUL, a stray line break
        position = draw(st.integers(0, len(encoded)))
        encoded = encoded[:position] + draw(st.sampled_from([b"\xff", b"\x00", b"\xc3", b"\n", b"\xed\xa0\x80"])) \
            + encoded[position:]
    return encoded


def calibration_folder(base: Path) -> Path:
    """base/data (the JSONL folder) with two real PNGs, a directory named like an image, and an image outside."""
    root = base / "data"
    (root / "sub").mkdir(parents=True)
    (root / "dir.png").mkdir()
    Image.new("RGB", (2, 2), (255, 0, 0)).save(root / "a.png")
    Image.new("RGB", (3, 1), (0, 0, 255)).save(root / "sub" / "b.png")
    Image.new("RGB", (1, 1)).save(base / "outside.png")
    return root


def expand_image_placeholders(data: bytes, root: Path) -> bytes:
    """Put the real folder in the generated @ROOT@ / @OUTSIDE@ image paths (known only once the folder exists)."""
    return (data.replace(b"@ROOT@", str(root).encode())
            .replace(b"@OUTSIDE@", str(root.parent / "outside.png").encode()))


def nonblank_lines(data: bytes) -> int:
    """How many lines the reader must turn into samples: it reads text mode (universal newlines)."""
    with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace") as handle:
        return sum(1 for line in handle if line.strip())


def check_calibration(data: bytes, limit, allow_outside_root: bool, require_image: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = calibration_folder(Path(tmp))
        data = expand(expand_image_placeholders(data, root))
        path = write(root, "calib.jsonl", data)
        try:
            samples = read_calibration_jsonl(path, limit=limit, allow_outside_root=allow_outside_root,
                                             require_image=require_image)
        except ShortLVLMError as exc:
            rejected(exc)
            return
        event("accepted")
        assert isinstance(samples, list) and samples
        # Every non-blank line up to the limit became a sample (a bad line is an error, never skipped);
        # only text-only samples are skipped (and counted) when images are required. A file that starts
        # with "[" is one JSON array, whose records are not lines.
        expected = min(nonblank_lines(data), limit or math.inf)
        if not data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            assert len(samples) <= expected if require_image else len(samples) == expected
        ids = [sample.id for sample in samples]
        assert all(isinstance(i, str) and i.strip() for i in ids)
        assert len(set(ids)) == len(ids), ids
        real_root = root.resolve()
        for sample in samples:
            assert isinstance(sample.prompt, str) and sample.prompt.strip(), sample
            assert "<image>" not in sample.prompt, sample
            assert sample.answer is None or isinstance(sample.answer, str)
            if sample.image_path is None:
                assert not require_image, sample
                continue
            assert sample.image_path.is_file(), sample
            if not allow_outside_root:
                assert sample.image_path.resolve().is_relative_to(real_root), sample
                event("accepted an image inside the folder")
            else:
                event("accepted an image (outside allowed)")


@fuzz_settings(max_examples=300)
@given(data=calibration_files(), limit=limits, allow_outside_root=st.booleans(), require_image=st.booleans())
def test_calibration_reader_gives_samples_or_a_project_error(data, limit, allow_outside_root, require_image):
    check_calibration(data, limit, allow_outside_root, require_image)


@fuzz_settings(max_examples=200)
@given(records=st.lists(near_valid_records(), min_size=1, max_size=3), allow_outside_root=st.booleans())
def test_calibration_image_paths_stay_inside_the_folder(records, allow_outside_root):
    # Only near-valid records, so that most lines reach the image checks.
    data = "\n".join(json.dumps(r) for r in records).encode("utf-8", errors="surrogatepass")
    check_calibration(data, None, allow_outside_root, True)


@pytest.mark.parametrize("limit", [0, -1, True, 2.0, "2"])
def test_calibration_bad_limit_is_a_project_error(limit):
    with tempfile.TemporaryDirectory() as tmp:
        root = calibration_folder(Path(tmp))
        path = write(root, "calib.jsonl", b'{"prompt": "Q", "image": "a.png"}\n')
        assert len(read_calibration_jsonl(path, limit=1)) == 1  # the file itself is fine
        with pytest.raises(ShortLVLMError):
            read_calibration_jsonl(path, limit=limit)


# Crashes the fuzzer found in read_calibration_jsonl (data/calibration.py), pinned so they stay caught.
CALIBRATION_CRASHES = {
    "json nested 100000 deep (RecursionError)": "@DEEP_ARRAY@",
    "integer id of 5000 digits (ValueError)": '{"prompt": "x", "image": "a.png", "id": @HUGE_INT@}',
    "image file name of 300 characters (OSError ENAMETOOLONG)": '{"prompt": "x", "image": "@LONG_NAME@"}',
    "image path of 6000 characters (OSError ENAMETOOLONG)": '{"prompt": "x", "image": "@LONG_PATH@"}',
}


@pytest.mark.parametrize("allow_outside_root", [False, True])
@pytest.mark.parametrize("line", CALIBRATION_CRASHES.values(), ids=CALIBRATION_CRASHES.keys())
def test_calibration_known_crashes_are_project_errors(line, allow_outside_root):
    with tempfile.TemporaryDirectory() as tmp:
        root = calibration_folder(Path(tmp))
        path = write(root, "calib.jsonl", line.encode() + b"\n")
        with pytest.raises(ShortLVLMError):
            read_calibration_jsonl(path, allow_outside_root=allow_outside_root)


# --------------------------------------------------------------------------------------- pruning plans

@functools.cache
def tiny():
    """One tiny model (built once, on first use) with its adapter and fingerprint, for the plan-vs-model checks."""
    model = tiny_model("llava", TINY_LAYERS)
    return model, get_adapter(model), model_fingerprint(model)


def prefixes_of_permutations(num: int):
    """Distinct layer indices in 0..num-1, in any order (a removal order or a removal set)."""
    return st.permutations(range(num)).flatmap(lambda order: st.integers(0, num).map(lambda n: order[:n]))


def valid_params(num: int):
    """params as `shortlvlm score` writes them: a removal order and, for some scorers, removal sets."""
    sets = st.fixed_dictionaries({str(n): st.permutations(range(num)).map(lambda order, n=n: order[:n])
                                  for n in range(1, min(num, 8))})
    return st.fixed_dictionaries({"removal_order": prefixes_of_permutations(num)}, optional={
        "removal_sets": sets, "scorer": st.sampled_from(["angular", "tis-cosine"]), "score_meaning": st.text(),
        "scoring_seconds": st.floats(0, 10)})


# Layer lists a hand-edited plan might hold: in-range with repeats, out of range, not integers.
bad_layer_lists = (st.lists(st.integers(0, TINY_LAYERS - 1), min_size=2, max_size=TINY_LAYERS + 1)
                   | st.lists(st.integers(min_value=-1, max_value=TINY_LAYERS), max_size=TINY_LAYERS + 2)
                   | st.lists(st.sampled_from([0, 1, True, False, 1.0, "1", None, 10**30]), max_size=4)
                   | json_values)
removal_set_keys = st.sampled_from([str(n) for n in range(-1, TINY_LAYERS + 2)] + ["01", " 1", "x", "", "1.0"])
# params whose removal order and sets pass check_plan_matches but may still be inconsistent.
layer_orders = (prefixes_of_permutations(TINY_LAYERS)
                | st.lists(st.integers(0, TINY_LAYERS - 1), max_size=TINY_LAYERS + 1))
odd_params = st.fixed_dictionaries({"removal_order": layer_orders | bad_layer_lists}, optional={
    "removal_sets": st.dictionaries(removal_set_keys, layer_orders, max_size=TINY_LAYERS)
    | st.dictionaries(removal_set_keys, bad_layer_lists, max_size=2) | json_values})
BAD_FIELD_VALUES = {
    "num_layers_before": st.sampled_from([0, -1, True, 2.5, "6", None, 10**30, TINY_LAYERS + 1]) | json_values,
    "removed_layers": bad_layer_lists,
    "params": st.fixed_dictionaries({}, optional={
        "removal_order": bad_layer_lists | prefixes_of_permutations(TINY_LAYERS),
        "removal_sets": st.dictionaries(removal_set_keys, bad_layer_lists | prefixes_of_permutations(TINY_LAYERS),
                                        max_size=TINY_LAYERS) | json_values,
    }) | json_values,
    "model": st.fixed_dictionaries({"fingerprint": st.sampled_from(["0" * 16, ""]) | json_values}) | json_values,
    "layer_scores": st.lists(json_scalars, min_size=1, max_size=3) | json_values,
}
PLAN_FIELDS = ("method", "num_layers_before", "removed_layers", "compensation", "ratio", "layer_scores",
               "scorer", "scp", "params", "calibration", "model", "version", "format", "unexpected")


@st.composite
def near_valid_plans(draw, num_layers: int | None = None, removed: bool = True, params=None) -> dict:
    """A plan dict as `score`/`prune` write it, then up to two fields deleted or replaced by something odd.

    With `num_layers`, the plan is for that many layers; with removed=False it removes none (a `score` plan);
    `params` replaces the strategy for well-formed params.
    """
    num = num_layers or draw(st.integers(1, 64) | st.just(TINY_LAYERS))
    plan = {
        "method": draw(st.sampled_from(["short-lvlm", "angular", "random"]) | st.text(max_size=12)),
        "num_layers_before": num,
        "removed_layers": draw(st.just([]) | (prefixes_of_permutations(num) if removed else st.nothing())),
    }
    plan.update(draw(st.fixed_dictionaries({}, optional={
        "compensation": st.sampled_from(["none", "scp"]),
        "ratio": st.none() | st.floats(0, 1) | st.just(0),
        "layer_scores": st.none() | st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5),
                                             min_size=num, max_size=num),
        "params": valid_params(num) if params is None else params,
        "calibration": st.fixed_dictionaries({}, optional={"hash": st.text(max_size=8), "num_samples": st.integers()}),
        "model": st.fixed_dictionaries({}, optional={"fingerprint": st.just("@FINGERPRINT@"),
                                                     "name_or_path": st.text(max_size=8)}),
        "version": st.sampled_from(["", "0.1.0"]) | st.text(max_size=6),
    })))
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        name = draw(st.sampled_from(PLAN_FIELDS))
        if draw(one_in(3)):
            plan.pop(name, None)
        else:
            plan[name] = draw(BAD_FIELD_VALUES.get(name, json_values))
    return plan


def check_accepted_plan(plan: Plan, source: dict | None) -> None:
    """Invariants of a plan the reader accepted, including a lossless to_dict / JSON round trip."""
    assert isinstance(plan.method, str) and isinstance(plan.compensation, str) and isinstance(plan.version, str)
    num, removed = plan.num_layers_before, plan.removed_layers
    assert isinstance(num, int) and not isinstance(num, bool) and num >= 1
    assert all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < num for i in removed)
    assert len(set(removed)) == len(removed), removed
    assert plan.ratio is None or (isinstance(plan.ratio, (int, float)) and not isinstance(plan.ratio, bool))
    assert plan.layer_scores is None or all(
        isinstance(s, (int, float)) and not isinstance(s, bool) for s in plan.layer_scores)
    assert all(isinstance(part, dict) for part in (plan.params, plan.calibration, plan.model))
    if source is not None:
        assert (plan.method, num, removed) == (source["method"], source["num_layers_before"], source["removed_layers"])
    if num <= 100_000:  # kept_layers lists every kept index, so a plan claiming 10**30 layers cannot list them
        kept = plan.kept_layers
        assert kept == sorted(kept) and sorted(kept + removed) == list(range(num))
    as_dict = plan.to_dict()
    text = json.dumps(as_dict)
    assert Plan.from_dict(as_dict) == plan
    # Through JSON text too (compared as text: NaN scores are not equal to themselves).
    assert json.dumps(Plan.from_dict(json.loads(text)).to_dict()) == text


@fuzz_settings(max_examples=300)
@given(value=mostly(near_valid_plans(), json_values, 3))
def test_plan_from_dict_gives_a_plan_or_a_project_error(value):
    try:
        plan = Plan.from_dict(value)
    except ShortLVLMError as exc:
        rejected(exc)
        return
    event("accepted")
    check_accepted_plan(plan, value)


plan_files = (
    st.binary(max_size=200)
    | st.sampled_from(PATHOLOGICAL_LINES).map(str.encode)
    | json_values.map(lambda v: dumps(v).encode())
    | near_valid_plans().map(lambda p: json.dumps(p, indent=2).encode())
    | near_valid_plans().map(lambda p: json.dumps(p, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    | st.sampled_from([
        b"\xff\xfe{}", b"\xef\xbb\xbf{}", b'{"method": "x", "num_layers_before": @HUGE_INT@}',
        b'{"method": "x", "num_layers_before": 2, "removed_layers": [], "params": @DEEP_ARRAY@}',
        b'{"method": "x", "num_layers_before": 2, "removed_layers": [], "params": {"a": '
        + b"[" * 900 + b"]" * 900 + b"}}",
        b'{"method": "\xe9", "num_layers_before": 2, "removed_layers": []}',
    ])
)


@fuzz_settings(max_examples=250)
@given(data=plan_files)
def test_plan_load_gives_a_plan_or_a_project_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "pruning_plan.json", data)
        try:
            plan = Plan.load(path)
        except ShortLVLMError as exc:
            rejected(exc)
            return
        event("accepted")
        check_accepted_plan(plan, None)
        plan.save(path)  # what was accepted can be written and read back unchanged
        assert json.dumps(Plan.load(path).to_dict()) == json.dumps(plan.to_dict())


# Crashes the fuzzer found in Plan.load / Plan.from_dict / Plan.to_dict (fixed in plan.py), pinned.
PLAN_CRASHES = {
    "json nested 100000 deep (RecursionError)": b"@DEEP_ARRAY@",
    "integer of 5000 digits (ValueError)": b'{"method": "x", "num_layers_before": @HUGE_INT@, "removed_layers": []}',
    "not UTF-8 (UnicodeDecodeError)": b'{"method": "\xe9", "num_layers_before": 2, "removed_layers": []}',
    "params nested 900 deep (RecursionError in to_dict)": b'{"method": "x", "num_layers_before": 2, '
    b'"removed_layers": [], "params": {"a": ' + b"[" * 900 + b"]" * 900 + b"}}",
    "removed_layers listing a layer twice": b'{"method": "x", "num_layers_before": 4, "removed_layers": [1, 1]}',
    "method that is not a string": b'{"method": ["x"], "num_layers_before": 4, "removed_layers": []}',
    "params that is not an object": b'{"method": "x", "num_layers_before": 4, "removed_layers": [], "params": []}',
    "layer_scores that are not numbers": b'{"method": "x", "num_layers_before": 1, "removed_layers": [], '
    b'"layer_scores": ["high"]}',
}


@pytest.mark.parametrize("data", PLAN_CRASHES.values(), ids=PLAN_CRASHES.keys())
def test_plan_known_bad_files_are_plan_errors(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "pruning_plan.json", data)
        with pytest.raises(PlanError):
            Plan.load(path)


@fuzz_settings(max_examples=300)
@given(source=near_valid_plans(num_layers=TINY_LAYERS, removed=False, params=valid_params(TINY_LAYERS) | odd_params))
def test_plan_matching_a_model_gives_distinct_layers_or_a_project_error(source):
    model, adapter, fingerprint = tiny()
    if isinstance(source.get("model"), dict) and source["model"].get("fingerprint") == "@FINGERPRINT@":
        source["model"]["fingerprint"] = fingerprint
    try:
        plan = Plan.from_dict(source)
        check_plan_matches(plan, model, adapter)
    except ShortLVLMError as exc:
        rejected(exc)
        return
    event("accepted")
    assert not plan.removed_layers  # check_plan_matches only passes a plan from `score`
    for count in range(1, TINY_LAYERS):  # what layers_to_remove can ask of a TINY_LAYERS-layer model
        try:
            layers = planned_removal(plan, count)
        except ShortLVLMError:
            continue
        event("planned a removal")
        assert isinstance(layers, list) and len(layers) == count, (count, layers)
        assert all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < TINY_LAYERS for i in layers), layers
        assert len(set(layers)) == len(layers), layers


# Crashes and wrong answers the fuzzer found in planned_removal (pruning.py), pinned so they stay caught.
PRUNING_BUGS = {
    "removal_sets key that is not a number (ValueError)": ({"removal_order": [0, 1], "removal_sets": {"x": [0]}}, 1),
    "removal_order listing a layer twice (duplicate layers)": ({"removal_order": [0, 0, 1]}, 2),
    "removal_sets entry of the wrong size (1 layer for count 2)": (
        {"removal_order": [0, 1], "removal_sets": {"2": [0]}}, 2),
}


@pytest.mark.parametrize(("params", "count"), PRUNING_BUGS.values(), ids=PRUNING_BUGS.keys())
def test_planned_removal_inputs_found_by_fuzzing(params, count):
    model, adapter, _ = tiny()
    plan = Plan.from_dict({"method": "angular", "num_layers_before": TINY_LAYERS, "removed_layers": [],
                           "params": params})
    try:
        check_plan_matches(plan, model, adapter)
        layers = planned_removal(plan, count)
    except ShortLVLMError:
        return
    assert len(layers) == count and len(set(layers)) == count, layers


# ------------------------------------------------------------------------------- partial eval answers

KEY = {"bench": "shapes", "model": "toy", "limit": 8}
answer_records = st.fixed_dictionaries({"id": st.text(max_size=6), "answer": st.text(max_size=10)})
not_a_string = st.none() | st.booleans() | st.integers() | st.floats() | st.lists(json_scalars, max_size=2)
# Lines that can never be a {"id": str, "answer": str} record: torn records, other JSON, garbage.
junk_lines = (answer_records.map(lambda r: json.dumps(r)[:-1]).flatmap(
                  lambda text: st.integers(0, len(text)).map(lambda n: text[:n]))
              | (json_scalars | st.lists(json_values, max_size=3)).map(dumps)
              | st.fixed_dictionaries({"id": not_a_string, "answer": json_values}).map(dumps)
              | st.fixed_dictionaries({"id": st.text(max_size=4), "answer": not_a_string}).map(dumps)
              | st.sampled_from(["id", "answer"])
              .flatmap(lambda name: st.dictionaries(st.just(name), st.text(max_size=4)))
              .map(dumps)
              | st.sampled_from(PATHOLOGICAL_LINES)
              | st.binary(max_size=30).map(lambda b: b.replace(b"{", b"(").decode("latin-1")))


@st.composite
def partial_answer_files(draw) -> tuple[bytes, dict[str, str] | None]:
    """(file bytes, the answers read_partial_answers must return for KEY, or None if unknown)."""
    if draw(one_in(5)):
        return draw(st.binary(max_size=300)), None  # arbitrary bytes: only the result's type is known
    header_key = draw(mostly(st.just(KEY), st.just({**KEY, "limit": 9}) | json_values, 3))
    header = json.dumps({"key": header_key}) if draw(st.booleans()) or header_key == KEY else draw(junk_lines)
    if draw(one_in(6)):
        header = draw(junk_lines)
    expected: dict[str, str] = {}
    lines = [header]
    for kind, value in draw(st.lists(st.tuples(st.just("record"), answer_records)
                                     | st.tuples(st.just("junk"), junk_lines), max_size=6)):
        if kind == "record":
            expected[value["id"]] = value["answer"]  # a later answer for the same id wins
            lines.append(json.dumps(value))
        else:
            lines.append(value)
    matches = header == json.dumps({"key": header_key}) and header_key == KEY
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    return data, expected if matches else {}


@pytest.mark.parametrize("line", ["@DEEP_ARRAY@", "@HUGE_INT@", '{"id": "b", "answer": @DEEP_ARRAY@}'])
def test_partial_answers_skip_unreadable_lines(line):
    header = json.dumps({"key": KEY})
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "answers.partial.jsonl",
                     f'{header}\n{line}\n{{"id": "a", "answer": "yes"}}\n'.encode())
        assert read_partial_answers(path, KEY) == {"a": "yes"}
        path = write(Path(tmp), "answers.partial.jsonl", f"{line}\n".encode())  # as the header: nothing to reuse
        assert read_partial_answers(path, KEY) == {}


@fuzz_settings(max_examples=250)
@given(case=partial_answer_files())
def test_partial_answers_never_raise(case):
    data, expected = case
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), "answers.partial.jsonl", data)
        answers = read_partial_answers(path, KEY)
        assert isinstance(answers, dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in answers.items())
        if expected is not None:
            event(f"{min(len(expected), 3)}+ answers expected")
            assert answers == expected
        assert read_partial_answers(Path(tmp) / "missing.jsonl", KEY) == {}

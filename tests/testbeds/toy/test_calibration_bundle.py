"""The bundled toy calibration set is exactly what the generator writes, and is disjoint from the test split."""

from __future__ import annotations

import pytest
from PIL import Image

from shortlvlm.data.calibration import calibration_hash, read_calibration_jsonl, toy_calibration
from shortlvlm.errors import OutputExistsError
from shortlvlm.testbeds.toy import BUNDLED_CALIBRATION
from shortlvlm.testbeds.toy.calibration import main, write_calibration_set
from shortlvlm.testbeds.toy.data import make_split

SIZE = 256


@pytest.fixture(scope="module")
def bundled():
    return toy_calibration()


def test_bundle_reads_back_with_images(bundled):
    assert len(bundled) == SIZE
    assert all(s.image_path is not None and s.image_path.is_file() for s in bundled)
    assert bundled[0].load_image().size == (48, 48)
    assert all(s.prompt and "<image>" not in s.prompt for s in bundled)


def test_regenerating_gives_the_same_set(tmp_path, bundled):
    jsonl = write_calibration_set(tmp_path / "calib", SIZE)
    assert jsonl.read_bytes() == BUNDLED_CALIBRATION.read_bytes()
    images = sorted((tmp_path / "calib" / "images").iterdir())
    shipped = sorted((BUNDLED_CALIBRATION.parent / "images").iterdir())
    assert [p.name for p in images] == [p.name for p in shipped]
    # Pixels, not PNG bytes: the compressed bytes depend on the Pillow/zlib build.
    pixels = lambda path: Image.open(path).convert("RGB").tobytes()  # noqa: E731
    different = [p.name for p, q in zip(images, shipped, strict=True) if pixels(p) != pixels(q)]
    assert not different, f"regenerated images differ from the bundled ones: {different[:5]}"
    assert calibration_hash(toy_calibration()) == calibration_hash(bundled)


def test_answers_and_questions_are_the_generators(bundled):
    toy = make_split("calibration", SIZE)
    assert [(s.id, s.prompt, s.answer) for s in bundled] == [(t.id, t.question, t.answer) for t in toy]
    assert list(bundled[5].load_image().getdata()) == list(toy[5].image().getdata())


def test_calibration_is_disjoint_from_the_test_split(bundled):
    test = make_split("test", 600)
    assert not {s.id for s in bundled} & {t.id for t in test}
    test_pixels = {t.image().tobytes() for t in test}
    assert not any(s.load_image().tobytes() in test_pixels for s in bundled)


def test_writer_refuses_to_overwrite_and_replaces_when_asked(tmp_path):
    out = tmp_path / "calib"
    write_calibration_set(out, 3)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_calibration_set(out, 2)
    assert main(["--out", str(out), "--size", "2", "--overwrite"]) == 0
    assert [s.id for s in read_calibration_jsonl(out / "calibration.jsonl")] == ["calibration-0", "calibration-1"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["calibration-0.png", "calibration-1.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["calib"]  # no staging folders left behind


def test_another_start_writes_a_disjoint_draw_of_the_same_split(tmp_path, bundled):
    assert main(["--out", str(tmp_path / "draw"), "--size", "4", "--start", "20000"]) == 0
    draw = read_calibration_jsonl(tmp_path / "draw" / "calibration.jsonl")
    assert [s.id for s in draw] == [f"calibration-{i}" for i in range(20000, 20004)]
    assert [(s.prompt, s.answer) for s in draw] == [(t.question, t.answer) for t in make_split("calibration", 4, 20000)]
    assert not {s.id for s in draw} & {s.id for s in bundled}
    with pytest.raises(ValueError, match="start must be a non-negative integer"):
        write_calibration_set(tmp_path / "bad", 2, start=-1)


def test_families_keep_only_those_questions_balanced_and_from_the_start(tmp_path):
    """--families writes a set without the left-out families: a transfer study's calibration."""
    assert main(["--out", str(tmp_path / "some"), "--size", "6", "--start", "60000", "--families",
                 "exists,choice"]) == 0
    draw = read_calibration_jsonl(tmp_path / "some" / "calibration.jsonl")
    # the split interleaves exists, attribute, count, spatial, compositional, choice: index % 6 is the family
    assert [s.id for s in draw] == [f"calibration-{i}" for i in (60000, 60005, 60006, 60011, 60012, 60017)]
    expected = [make_split("calibration", 1, i)[0] for i in (60000, 60005, 60006, 60011, 60012, 60017)]
    assert [t.family for t in expected] == ["exists", "choice"] * 3
    assert [(s.prompt, s.answer) for s in draw] == [(t.question, t.answer) for t in expected]
    with pytest.raises(ValueError, match="families must be some of"):
        write_calibration_set(tmp_path / "bad", 2, families=("exists", "colour"))
    with pytest.raises(SystemExit) as exit_info:  # an empty list is refused on the command line, exit 2
        main(["--out", str(tmp_path / "bad"), "--size", "2", "--families", ","])
    assert exit_info.value.code == 2 and not (tmp_path / "bad").exists()

"""Actionable errors: missing files, malformed lines, paths leaving the data folder, bad arguments."""

from __future__ import annotations

import json

import pytest

from shortlvlm.data.benchmarks import BENCHMARKS, BenchSample, expected_layout, load_benchmark
from shortlvlm.data.errors import BenchmarkDataError
from shortlvlm.errors import ShortLVLMError
from tests.data.benchmarks.builders import (
    build_mmbench,
    build_mme,
    build_pope,
    build_scienceqa,
    build_seed,
    write_image,
    write_jsonl,
)


def _rewrite_jsonl(path, change):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records)
    write_jsonl(path, records)


def test_registry_and_error_type():
    assert BENCHMARKS == ("pope", "mme", "mmbench", "scienceqa-img", "seed-img", "aokvqa", "easy-vqa")
    assert issubclass(BenchmarkDataError, ShortLVLMError)
    assert "llava_pope_test.jsonl" in expected_layout("pope")
    with pytest.raises(BenchmarkDataError, match=r"unknown benchmark 'vqav2'.*pope"):
        load_benchmark("vqav2", ".")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_missing_folder_and_files_name_the_expected_layout(tmp_path, name):
    with pytest.raises(BenchmarkDataError, match="data folder not found"):
        load_benchmark(name, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkDataError, match="Expected layout") as caught:
        load_benchmark(name, tmp_path / "empty")
    assert str(tmp_path / "empty") in str(caught.value)


def test_missing_label_file_is_named(tmp_path):
    root = build_pope(tmp_path / "pope")
    (root / "coco" / "coco_pope_random.json").unlink()
    with pytest.raises(BenchmarkDataError, match=r"missing benchmark file: .*coco_pope_random\.json"):
        load_benchmark("pope", root)


def test_malformed_json_line_names_file_and_line(tmp_path):
    root = build_pope(tmp_path / "pope")
    lines = (root / "llava_pope_test.jsonl").read_text().splitlines()
    lines[1] = lines[1][:-3]
    (root / "llava_pope_test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(BenchmarkDataError, match=r"llava_pope_test\.jsonl, line 2: invalid JSON line"):
        load_benchmark("pope", root)


def test_malformed_json_file_names_line(tmp_path):
    root = build_scienceqa(tmp_path / "scienceqa")
    (root / "problems.json").write_text('{\n  "1": {\n  "choices": [,]\n}')
    with pytest.raises(BenchmarkDataError, match=r"problems\.json: invalid JSON at line 3"):
        load_benchmark("scienceqa-img", root)


@pytest.mark.parametrize("image", ["../../outside.jpg", "/etc/hostname", "../val2014/../../outside.jpg"])
def test_image_path_leaving_the_data_folder_is_refused(tmp_path, image):
    write_image(tmp_path / "outside.jpg")  # exists, so only the check can stop it
    root = build_pope(tmp_path / "pope")
    _rewrite_jsonl(root / "llava_pope_test.jsonl", lambda records: records[0].update(image=image))
    _rewrite_jsonl(
        root / "coco" / "coco_pope_adversarial.json", lambda records: records[0].update(image=image)
    )
    with pytest.raises(BenchmarkDataError, match="outside the data folder"):
        load_benchmark("pope", root)


def test_scienceqa_image_escape_is_refused(tmp_path):
    root = build_scienceqa(tmp_path / "scienceqa")
    entries = json.loads((root / "llava_test_CQM-A.json").read_text())
    entries[0]["image"] = "../../../../outside.png"
    (root / "llava_test_CQM-A.json").write_text(json.dumps(entries))
    with pytest.raises(BenchmarkDataError, match="refusing to read it"):
        load_benchmark("scienceqa-img", root)


def test_symlinked_image_folder_is_accepted(tmp_path):
    root = build_pope(tmp_path / "pope")
    (root / "val2014").rename(tmp_path / "coco_val2014")
    (root / "val2014").symlink_to(tmp_path / "coco_val2014", target_is_directory=True)
    assert load_benchmark("pope", root)[0].image_path.is_file()


def test_missing_image_is_named(tmp_path):
    root = build_pope(tmp_path / "pope")
    (root / "val2014" / "COCO_val2014_000000000003.jpg").unlink()
    with pytest.raises(BenchmarkDataError, match=r"image not found: .*COCO_val2014_000000000003\.jpg"):
        load_benchmark("pope", root)


def test_pope_questions_out_of_step_with_labels(tmp_path):
    root = build_pope(tmp_path / "pope")
    _rewrite_jsonl(root / "coco" / "coco_pope_popular.json", lambda records: records.reverse())
    with pytest.raises(BenchmarkDataError, match="same order"):
        load_benchmark("pope", root)


def test_mme_malformed_answer_line(tmp_path):
    root = build_mme(tmp_path / "MME")
    (root / "MME_Benchmark_release_version" / "count" / "0001.txt").write_text(
        "Q1?\tYes\nQ2 without answer\n"
    )
    with pytest.raises(BenchmarkDataError, match=r"0001\.txt, line 2: expected 'question<TAB>Yes'"):
        load_benchmark("mme", root)


def test_mme_llava_question_without_ground_truth(tmp_path):
    root = build_mme(tmp_path / "MME")
    _rewrite_jsonl(root / "llava_mme.jsonl", lambda records: records[5].update(text="Something else?"))
    with pytest.raises(BenchmarkDataError, match=r"llava_mme\.jsonl, line 6: no matching question"):
        load_benchmark("mme", root)


def test_mme_missing_subtask_folder(tmp_path):
    root = build_mme(tmp_path / "MME")
    (root / "MME_Benchmark_release_version" / "OCR").rename(root / "OCR_moved")
    with pytest.raises(BenchmarkDataError, match=r"missing MME subtask folder: .*OCR"):
        load_benchmark("mme", root)


def test_mmbench_bad_rows(tmp_path):
    root = build_mmbench(tmp_path / "mmbench")
    path = root / "mmbench_dev_20230712.tsv"
    lines = path.read_text().splitlines()
    fields = lines[2].split("\t")
    fields[7] = "D"  # answer D for a question with three options
    path.write_text("\n".join([lines[0], lines[1], "\t".join(fields)]) + "\n")
    with pytest.raises(BenchmarkDataError, match="answer among them, got 'D'"):
        load_benchmark("mmbench", root)
    path.write_text(lines[0].replace("\timage", "\timages") + "\n" + lines[1] + "\n")
    with pytest.raises(BenchmarkDataError, match=r"header lacks columns \['image'\]"):
        load_benchmark("mmbench", root)


def test_seed_question_unknown_to_annotations(tmp_path):
    root = build_seed(tmp_path / "seed_bench")
    _rewrite_jsonl(root / "llava-seed-bench.jsonl", lambda records: records[1].update(question_id="999"))
    with pytest.raises(BenchmarkDataError, match=r"line 2: question_id '999' is not in .*SEED-Bench\.json"):
        load_benchmark("seed-img", root)


def test_duplicate_ids_and_bad_limit(tmp_path):
    root = build_pope(tmp_path / "pope")
    _rewrite_jsonl(root / "llava_pope_test.jsonl", lambda records: records[1].update(question_id=1))
    with pytest.raises(BenchmarkDataError, match="duplicate question ids"):
        load_benchmark("pope", root)
    with pytest.raises(BenchmarkDataError, match="limit must be a positive"):
        load_benchmark("pope", root, limit=0)


def test_undecodable_image_raises_project_error():
    sample = BenchSample(id="x", image_path=None, image_base64="bm90IGFuIGltYWdl", question="q", answer="A")
    with pytest.raises(BenchmarkDataError, match="sample x: cannot decode image"):
        sample.load_image()


@pytest.mark.parametrize("text", ["[" * 100_000, "1" * 5000])
def test_pathological_json_is_a_project_error_not_a_crash(tmp_path, text):
    """json raises RecursionError for deep nesting and ValueError for >4300-digit integers."""
    from shortlvlm.data.benchmarks.base import read_json, read_jsonl

    path = tmp_path / "data.json"
    path.write_text(text + "\n")
    with pytest.raises(BenchmarkDataError, match=r"data\.json: invalid JSON at line 1"):
        read_json(path)
    with pytest.raises(BenchmarkDataError, match=r"data\.json, line 1: invalid JSON line"):
        read_jsonl(path)

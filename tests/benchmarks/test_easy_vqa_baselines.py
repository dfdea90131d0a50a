"""benchmarks/easy_vqa_baselines.py: the text-only predictor reads the training questions, never the test answers."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from easy_vqa_baselines import question_majority

from shortlvlm.data.benchmarks import load_benchmark
from tests.data.benchmarks.builders import build_easy_vqa


def test_question_majority_is_the_training_majority_per_question_else_per_answer_type(tmp_path):
    root = build_easy_vqa(tmp_path / "data")
    train = [["what is the red shape?", "circle", 0], ["what is the red shape?", "circle", 1],
             ["what is the red shape?", "triangle", 2], ["is there a blue shape?", "no", 3],
             ["what color is the circle?", "green", 4]]
    (root / "train").mkdir()
    (root / "train" / "questions.json").write_text(json.dumps(train))
    samples = load_benchmark("easy-vqa", root)
    predictions = question_majority(samples, root)
    assert predictions["0"] == "circle"  # seen 3 times in training: circle twice (the test label is triangle)
    assert predictions["3"] == "no"  # seen once
    # unseen questions: the most frequent training answer of the same answer type
    assert predictions["1"] == "green" and predictions["4"] == "green"  # color questions
    assert predictions["2"] == "no"  # yes/no

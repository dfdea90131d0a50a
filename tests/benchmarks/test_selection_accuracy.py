"""benchmarks/selection_accuracy.py: the selection split's accuracy of a checkpoint, written as JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import selection_accuracy

from shortlvlm import load
from shortlvlm.data.benchmarks.shapes import load_shapes
from shortlvlm.eval.evaluate import evaluate


def test_the_selection_split_is_scored_on_questions_past_index_100000(tmp_path, monkeypatch):
    out = tmp_path / "selection.json"
    monkeypatch.setattr(sys, "argv", ["selection_accuracy.py", "toy", "--out", str(out), "--select", "6"])
    selection_accuracy.main()
    result = json.loads(out.read_text())
    model, processor = load("toy")
    questions = load_shapes(6, split="calibration", start=100_000)
    metrics, _ = evaluate(model, processor, "shapes", questions, batch_size=6)
    assert result["selection_accuracy"] == metrics["accuracy"]
    assert result["per_family"] == metrics["per_family"] and result["folder"] == "toy"

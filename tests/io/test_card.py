"""The model card (README.md) of a pruned checkpoint names the method, the compensation with its options, the
calibration data, and what the compensation did to each removed run."""

from __future__ import annotations

from shortlvlm import Plan
from shortlvlm.io.save import _model_card
from shortlvlm.testbeds.tiny import tiny_model

CALIBRATION = {"source": "calib.jsonl", "num_samples": 64, "offset": 128, "hash": "4e9b5ecf9b6e995173c6a3"}


def card(**fields) -> str:
    plan = Plan(method=fields.pop("method", "tis-loss+lstsq"), num_layers_before=6, removed_layers=[1, 2, 4],
                **fields)
    return _model_card(tiny_model("llava", 6), plan)


def test_the_card_names_method_options_compensation_and_calibration():
    text = card(scorer={"name": "tis-loss", "tis": {"top_p": 0.5}, "bridge": True},
                compensation="lstsq", compensation_options={"ridge": 0.01, "prior": "identity"},
                calibration=CALIBRATION)
    assert "3 of 6 decoder layers removed (kept 3)" in text
    assert "- method: `tis-loss+lstsq` (scorer `tis-loss`: tis.top_p=0.5, bridge=True)" in text
    assert "- compensation: `lstsq` (ridge=0.01, prior=identity)" in text
    assert "- calibration: 64 samples of `calib.jsonl` from sample 128 (hash 4e9b5ecf9b6e)" in text
    assert "removed layers (original indices): [1, 2, 4]" in text


def test_each_run_gets_a_row_with_what_its_compensation_did():
    report = [
        {"removed": [1, 2], "edited_layer": 0, "gap_left": 0.0312, "distance_from_identity": 1.2},
        {"removed": [4], "edited_layer": 3, "cosine_distance_before": 0.2, "cosine_distance_after": 0.05},
        {"removed": [0], "edited_layer": None, "reason": "run starts at layer 0: nothing below"},
    ]
    text = card(compensation="lstsq", compensation_options={"ridge": 0.01},
                params={"compensation_report": report})
    assert "| removed layers | edited layer | effect |" in text
    assert "| 1, 2 | 0 | linear bridge; on the calibration tokens 3.1% of the gap" in text
    assert "| 4 | 3 | linear bridge, cosine distance to the unpruned stream 0.2 -> 0.05" in text
    assert "| 0 | None | not compensated: run starts at layer 0: nothing below |" in text
    assert "fitted on the calibration samples above" in text


def test_scp_magnitude_and_laco_rows():
    report = [
        {"removed": [1], "edited_layer": 0, "rank": 8, "alpha": 0.5, "energy_captured": 0.877},
        {"removed": [2], "edited_layer": 3, "edited_layers": [3, 5], "factor": 1.0625},
        {"removed": [4], "edited_layer": 3, "relative_change": 0.25},
    ]
    text = card(compensation="scp", params={"compensation_report": report})
    assert "SCP edit, rank 8, alpha 0.5, 87.7% of the gap's energy" in text
    assert "writers of layers [3, 5] rescaled by 1.0625" in text
    assert "merged into it (parameters changed by 25.0%)" in text


def test_without_compensation_there_is_no_table_and_no_fitted_caveat():
    text = card(method="block-influence", compensation="none", calibration=CALIBRATION)
    assert "- compensation: `none`" in text and "What the compensation did" not in text
    assert "fitted on the calibration samples" not in text
    assert "- method: `block-influence`\n" in text  # no scorer options recorded, none shown

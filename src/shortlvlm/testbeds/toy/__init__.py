"""The bundled toy LVLM: a small LLaVA trained on synthetic shapes questions, shipped with the package."""

from pathlib import Path

TOY_NAME = "toy"
TOY_CHECKPOINT = Path(__file__).parent / "checkpoint"
BUNDLED_CALIBRATION = Path(__file__).parent / "calibration_set" / "calibration.jsonl"

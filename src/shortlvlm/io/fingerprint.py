"""Identities of what a result depends on: a model's config, its weights files, and its weights' values."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from shortlvlm.io.offload import read_weight_ends
from shortlvlm.io.source import local_safetensors

# Config fields that name, place or dress a model without changing what it computes.
_CONFIG_VOLATILE = {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "_attn_implementation",
                    "_attn_implementation_autoset", "architectures", "use_cache"}


def model_fingerprint(model: nn.Module) -> str:
    """Short hash of the model's config (minus names, dtype, attention kernel): a plan's target."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in sorted(value.items()) if k not in _CONFIG_VOLATILE}
        return value
    text = json.dumps(clean(model.config.to_dict()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _hub_blob_hash(file: Path) -> str | None:
    """The sha256 a hub-cache symlink's blob is named by (the file's content hash), else None."""
    target = file.resolve()
    return target.name if file.is_symlink() and len(target.name) == 64 else None


def weights_fingerprint(name_or_path: str | os.PathLike) -> str | None:
    """sha256 over a checkpoint's safetensors files (names and contents): which weights, not just which config.

    A local folder (and `toy`) is hashed file by file (about a second per GB); a hub id uses the
    content hashes its local cache already names its files by. None where the weights cannot be
    found locally (nothing is downloaded for this).
    """
    files = local_safetensors(name_or_path)
    if files is None:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        if blob := _hub_blob_hash(file):
            digest.update(blob.encode())
            continue
        with open(file.resolve(), "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def weights_stamp(name_or_path: str | os.PathLike) -> str | None:
    """A cheap identity of a checkpoint's weights, reading no weights: each safetensors file's name,
    size and modification time (hub cache: its content hash). Weights rewritten at the same path
    (a retrained model) get a new stamp; for keys of transient caches, where hashing every byte of
    a 70B checkpoint on each run would cost minutes. None where the weights are not local.
    """
    files = local_safetensors(name_or_path)
    if files is None:
        return None
    digest = hashlib.sha256()
    for file in files:
        stat = file.resolve().stat()
        digest.update(f"{file.name}\0{_hub_blob_hash(file) or (stat.st_size, stat.st_mtime_ns)}\0".encode())
    return digest.hexdigest()[:16]


SAMPLED_ELEMENTS = 4096  # from each end of every parameter


def weights_sample_fingerprint(model: nn.Module) -> str | None:
    """Short hash of a sample of the loaded weights' values: which weights a plan was scored on.

    Every parameter gives its name, shape and its first and last 4096 elements (flattened), compared at
    bfloat16 precision, so the same checkpoint hashes alike loaded in float32 or bfloat16, on any device,
    offloaded or layer by layer (offloaded weights are read from accelerate's map or their file, only the
    ends). It tells apart another training, fine-tune or seed, and edits that reach the sampled ends of a
    parameter; it misses edits confined to the elements in between and changes below bfloat16 precision,
    and may tell apart the same weights loaded in float16 from a wider type (range, double rounding).
    None where no parameter holds a value (a skeleton on the meta device).
    """
    digest, sampled = hashlib.sha256(), False
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            values = read_weight_ends(module, name, SAMPLED_ELEMENTS)
            if values is None:
                continue
            sampled = True
            digest.update(f"{module_name}.{name}\0{tuple(parameter.shape)}\0".encode())
            if values.is_floating_point():
                values = values.to(torch.bfloat16).view(torch.int16)
            digest.update(values.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16] if sampled else None

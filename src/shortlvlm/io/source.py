"""Where a model comes from: the test beds' names, local folders, and the checks made before any weights load."""

from __future__ import annotations

import os
import re
from pathlib import Path

from shortlvlm.errors import ModelLoadError
from shortlvlm.testbeds import bed_folder, materialize

PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # name, or owner/name


def resolve_model_name(name_or_path: str | os.PathLike) -> str:
    """`toy` names the bundled toy LVLM's folder, `smol-llava` the testbed's folder in the cache (where it is or
    will be: nothing is assembled here); anything else is a hub id or a path (`~` expanded)."""
    name = str(name_or_path)
    if (folder := bed_folder(name)) is not None:
        return str(folder)
    return os.path.expanduser(name) if name.startswith("~") else name


def prepare_model(name_or_path: str | os.PathLike) -> str:
    """What `from_pretrained` is given for `name_or_path`: a test bed made ready to load (the toy checked to be
    installed, smol-llava assembled on first use: docs/testbed.md), else `resolve_model_name`'s answer."""
    folder = materialize(str(name_or_path))
    return str(folder) if folder is not None else resolve_model_name(name_or_path)


def looks_like_path(name: str) -> bool:
    """Whether `name` is meant as a local folder rather than a hub id: it starts with `.`, `/` or `~`, has a
    separator where a hub id has none, more parts than owner/name, or a first part that is a folder here."""
    if name.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in name) or not HUB_ID.fullmatch(name):
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def check_model_path(name: str) -> None:
    """Refuse a local path that does not exist (before the Hub is asked), a folder that is not a model, or one
    that holds its weights only as pickle files."""
    path = Path(name)
    if looks_like_path(name) and not path.exists():
        raise ModelLoadError(f"no such directory: {name} (MODEL is a local model folder or a hub id such as "
                             "owner/name)")
    if path.exists() and not (path / "config.json").is_file():
        raise ModelLoadError(f"'{name}' exists but is not a model directory (no config.json in it)")
    if path.is_dir() and not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
        if pickled:
            raise ModelLoadError(
                f"'{name}' holds its weights only as pickle files ({', '.join(pickled[:3])}), which can run code "
                "when loaded; shortlvlm reads safetensors only. Convert them once in a trusted environment: "
                "model = AutoModelForImageTextToText.from_pretrained(DIR); model.save_pretrained(NEW_DIR)"
            )


def local_safetensors(name_or_path: str | os.PathLike) -> list[Path] | None:
    """A checkpoint's safetensors files on this machine (a folder, `toy`, or the hub cache), never downloaded."""
    name = resolve_model_name(name_or_path)
    folder = Path(name)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(name, local_files_only=True, allow_patterns=["*.safetensors"]))
        except Exception:  # not in the local cache, or not a hub id: nothing to identify
            return None
    return sorted(folder.glob("*.safetensors")) or None

"""Load a model, save a pruned checkpoint atomically, and verify that it reloads identically."""

from __future__ import annotations

import atexit
import ctypes
import errno
import glob
import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from shortlvlm.errors import ModelLoadError, OutputExistsError, VerificationError
from shortlvlm.layerwise import (
    Layerwise,
    default_execution_device,
    layer_device_map,
    offloaded_layer_lists,
    streamed_parts,
    untied_head,
    use_layerwise,
)
from shortlvlm.offload import has_offloaded_weights, input_device
from shortlvlm.plan import PLAN_FILENAME, Plan


def _auto_model_class(config):
    """AutoModelForImageTextToText for LVLMs transformers knows; AutoModelForCausalLM for remote code."""
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    auto_map = getattr(config, "auto_map", None) or {}
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or (
        "AutoModelForImageTextToText" in auto_map
    ):
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def _load_error(name_or_path: str, err: Exception) -> ModelLoadError:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "trust_remote_code" in str(err):
        return ModelLoadError(
            f"'{name_or_path}' needs its own Python code to load; pass --trust-remote-code "
            "(trust_remote_code=True) only if you trust its source"
        )
    if Path(name_or_path).exists():
        return ModelLoadError(f"'{name_or_path}' is not a loadable model directory: {message}")
    return ModelLoadError(
        f"cannot load '{name_or_path}': it is not a local model directory and could not be "
        f"fetched from the Hub ({message})"
    )


def load_skeleton(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False) -> nn.Module:
    """The model's module tree on the meta device (no weights, no memory): for checks before loading."""
    from transformers import AutoConfig

    name = resolve_model_name(name_or_path)
    _check_model_path(name)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return _auto_model_class(config).from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err) from err


def resolve_model_name(name_or_path: str | os.PathLike) -> str:
    """`toy` names the bundled toy LVLM; anything else is a hub id or a local path."""
    from shortlvlm.toy import TOY_CHECKPOINT, TOY_NAME

    name = str(name_or_path)
    if name != TOY_NAME:
        return name
    if not (TOY_CHECKPOINT / "config.json").is_file():
        raise ModelLoadError(
            f"the bundled toy LVLM is missing from this installation ({TOY_CHECKPOINT}); "
            "reinstall shortlvlm or train it with `python -m shortlvlm.toy.train --out DIR`"
        )
    return str(TOY_CHECKPOINT)


def _local_safetensors(name_or_path: str | os.PathLike) -> list[Path] | None:
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
    files = _local_safetensors(name_or_path)
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
    files = _local_safetensors(name_or_path)
    if files is None:
        return None
    digest = hashlib.sha256()
    for file in files:
        stat = file.resolve().stat()
        digest.update(f"{file.name}\0{_hub_blob_hash(file) or (stat.st_size, stat.st_mtime_ns)}\0".encode())
    return digest.hexdigest()[:16]


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _check_model_path(name: str) -> None:
    path = Path(name)
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


def load(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "auto",
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
    revision: str | None = None,
    layerwise: bool | Layerwise = False,
    layers_path: str | None = None,
    **model_kwargs,
) -> tuple[nn.Module, object | None]:
    """Load a model and its processor from a hub id, a local directory or `toy` (safetensors only).

    `trust_remote_code` runs code shipped with the checkpoint; it is never enabled implicitly.
    `layerwise=True` (or Layerwise(activations_dir=...)) leaves every decoder layer in the
    checkpoint's files (accelerate disk offload, read in place) and puts the rest of the model on
    `device_map` if it names one device ("cuda:1", "cpu"), else on the first GPU or the CPU; capture
    passes over it then run one layer at a time (shortlvlm.layerwise). `layers_path` names the
    decoder layer list for models without a built-in adapter.
    Returns (model, processor); processor is the tokenizer when the checkpoint has no processor,
    or None when it has neither.
    """
    from transformers import AutoConfig

    name = resolve_model_name(name_or_path)
    _check_model_path(name)
    hub_kwargs = {"trust_remote_code": trust_remote_code}
    if revision is not None:
        hub_kwargs["revision"] = revision
    if layerwise:
        device_map = _layerwise_map(name, device_map, layers_path, trust_remote_code)
        model_kwargs.setdefault("offload_folder", _scratch_folder())
    try:
        config = AutoConfig.from_pretrained(name, **hub_kwargs)
        with warnings.catch_warnings():  # a map keyed by a parameter (LLaVA-NeXT's image_newline) is valid
            warnings.filterwarnings("ignore", message="The following device_map keys do not match any submodules")
            model = _auto_model_class(config).from_pretrained(
                name,
                config=config,
                dtype=dtype,
                device_map=device_map,
                attn_implementation=attn_implementation,
                use_safetensors=True,
                **hub_kwargs,
                **model_kwargs,
            )
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err) from err
    model.eval()
    if layerwise:
        use_layerwise(model, layerwise if isinstance(layerwise, Layerwise) else Layerwise())
    return model, _load_processor(name, hub_kwargs)


def _layerwise_map(name: str, device_map, layers_path: str | None, trust_remote_code: bool) -> dict[str, str]:
    """The device map of a layer-by-layer load: decoder layers on disk, the rest on one device."""
    from shortlvlm.models import get_adapter

    if device_map is not None and (not isinstance(device_map, (str, torch.device)) or str(device_map) == "auto"):
        raise ModelLoadError("layer-by-layer loading places the model itself: give --device-map one device "
                             "(e.g. cuda:0 or cpu) or leave it out, and no --max-memory")
    skeleton = load_skeleton(name, trust_remote_code=trust_remote_code)
    lists, on_disk = streamed_parts(skeleton, layers_path or get_adapter(skeleton).layers_path)
    device = torch.device(device_map) if device_map is not None else default_execution_device()
    return layer_device_map(skeleton, lists, device, on_disk)


def _scratch_folder() -> str:
    """A folder for accelerate's offload index, removed when the process ends. Safetensors weights
    are read in place, so normally nothing but an index is written here."""
    folder = tempfile.mkdtemp(prefix="shortlvlm-offload-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# Files whose presence means a checkpoint ships a tokenizer or processor.
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json",
                   "tokenizer.json", "tokenizer.model", "vocab.json", "chat_template.jinja")


def _load_processor(name: str, hub_kwargs: dict) -> object | None:
    """The processor, else the tokenizer, else None (never one invented for a bare directory)."""
    from transformers import AutoProcessor, AutoTokenizer

    path = Path(name)
    if path.is_dir() and not any((path / f).exists() for f in PROCESSOR_FILES):
        return None
    processor = None
    for loader in (AutoProcessor, AutoTokenizer):
        try:
            processor = loader.from_pretrained(name, **hub_kwargs)
            break
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return processor


def _model_card(model: nn.Module, plan: Plan) -> str:
    kept = plan.num_layers_before - len(plan.removed_layers)
    return (
        "---\nlibrary_name: transformers\ntags:\n- shortlvlm\n- layer-pruning\n---\n\n"
        f"# Pruned {type(model).__name__}\n\n"
        f"Produced by shortlvlm {plan.version}: {len(plan.removed_layers)} of "
        f"{plan.num_layers_before} decoder layers removed (kept {kept}).\n\n"
        f"- method: `{plan.method}`, compensation: `{plan.compensation}`\n"
        f"- removed layers (original indices): {plan.removed_layers}\n"
        f"- source model: {plan.model.get('name_or_path', 'unknown')}\n\n"
        "The architecture is unchanged apart from the layer count, so it loads with plain "
        "`transformers` (`AutoModelForImageTextToText.from_pretrained(path)`). The full plan is in "
        f"`{PLAN_FILENAME}`.\n"
    )


def save(
    model: nn.Module,
    processor: object | None,
    plan: Plan,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    check: Callable[[Path], object] | None = None,
) -> Path:
    """Write model (safetensors), config, processor, plan and model card to out_dir atomically.

    Everything is written to a temporary sibling directory that replaces out_dir only once
    complete and, if `check` is given, once check(temp_dir) has returned without raising (e.g.
    a verify() call). On any failure nothing new is left behind and an existing out_dir is kept.
    An existing out_dir is swapped with the new one in a single atomic rename (Linux
    renameat2 RENAME_EXCHANGE), so even SIGKILL leaves out_dir holding either the old or the new
    checkpoint; elsewhere two renames are used and a kill between them is repaired by the next run
    (`recover_interrupted_save`).
    """
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    created = [p for p in reversed(out.parents) if not p.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{_TMP_TAG}{os.getpid()}-", dir=out.parent))
    backup = None
    try:
        if has_offloaded_weights(model):
            # accelerate-offloaded weights are gathered one shard at a time: keep shards small so the
            # save never holds much more than one shard in memory.
            with warnings.catch_warnings():  # its advice (memory > shard size) is what the small shards ensure
                warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
                model.save_pretrained(tmp, max_shard_size=OFFLOADED_SHARD_SIZE)
        else:
            model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        plan.save(tmp / PLAN_FILENAME)
        (tmp / "README.md").write_text(_model_card(model, plan))
        _fsync_tree(tmp)
        if check is not None:
            check(tmp)
        if out.exists():
            if exchange_paths(tmp, out):
                backup = tmp  # now holds the previous checkpoint
            else:
                backup = out.with_name(f".{out.name}{_OLD_TAG}{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
                _move_aside(out, backup)
                tmp.rename(out)
        else:
            tmp.rename(out)
    except BaseException:
        if backup is None or backup != tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None and backup != tmp and backup.exists() and not out.exists():
            backup.rename(out)
        for directory in reversed(created):
            if directory.exists() and not any(directory.iterdir()):
                directory.rmdir()
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    return out


OFFLOADED_SHARD_SIZE = "1GB"

# Sibling names used while saving `out`: .{out.name}.tmp-{pid}-{random} (the new checkpoint being
# written) and .{out.name}.old-{pid}-{random} (the previous one, moved aside for an instant).
_TMP_TAG = ".tmp-"
_OLD_TAG = ".old-"


def exchange_paths(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False  # filesystem or kernel without exchange: fall back to two renames
    raise OSError(error, f"cannot swap {a} and {b}: {os.strerror(error)}")


def _move_aside(out: Path, backup: Path) -> None:
    """First of the two fallback renames (its own function so interruption tests can stop right after it)."""
    out.rename(backup)


def _fsync_tree(root: Path) -> None:
    """Flush every file of a finished checkpoint to disk before it is renamed into place."""
    for path in [*root.rglob("*"), root]:
        if path.is_file() or path == root:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted_save(out: str | os.PathLike) -> list[str]:
    """Repair what a killed save of `out` left behind; returns what was done, one line each.

    A previous checkpoint moved aside (fallback path) is renamed back when `out` is missing;
    temporary and backup siblings of processes that no longer run are deleted.
    """
    out = Path(out)
    if not out.parent.is_dir():
        return []
    actions = []
    for tag in (_OLD_TAG, _TMP_TAG):
        for path in sorted(out.parent.glob(f".{glob.escape(out.name)}{tag}*")):
            pid_text = path.name[len(f".{out.name}{tag}"):].split("-", 1)[0]
            if not path.is_dir() or not pid_text.isdigit() or _pid_alive(int(pid_text)):
                continue
            if tag == _OLD_TAG and not out.exists():
                path.rename(out)
                actions.append(f"restored {out} from {path.name}, left by an interrupted save")
            else:
                shutil.rmtree(path, ignore_errors=True)
                actions.append(f"removed {path.name}, left by an interrupted save")
    return actions


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write a temporary sibling, then rename: `path` holds either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail early (before any expensive work) if out cannot be written; first repair an interrupted save."""
    for action in recover_interrupted_save(out):
        print(f"shortlvlm: {action}", file=sys.stderr)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path {out} exists and is not a directory; choose another --out")


@dataclass
class VerifyReport:
    """Outcome of reloading a saved checkpoint and comparing it with the in-memory model."""

    num_layers: int
    max_abs_logit_diff: float
    tolerance: float
    generation_agrees: bool | None


def _special_token_ids(config, name_parts: tuple[str, ...] = ("",)) -> set[int]:
    """Token ids named in the config (attributes ending in _token_id/_token_index[es])."""
    ids = set()
    for cfg in {id(c): c for c in (config, config.get_text_config())}.values():
        for key, value in vars(cfg).items():
            if key.endswith(("_token_id", "_token_index", "_token_ids")) and any(p in key for p in name_parts):
                ids.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, int))
    return ids


def text_probe_inputs(model: nn.Module, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """A deterministic text-only batch (no special or image tokens) that any model accepts."""
    vocab = model.config.get_text_config().vocab_size
    special = _special_token_ids(model.config)
    allowed = torch.tensor([i for i in range(min(vocab, 4096)) if i not in special])
    generator = torch.Generator().manual_seed(seed)
    ids = allowed[torch.randint(len(allowed), (1, length), generator=generator)]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _reload(model: nn.Module, out: Path, trust_remote_code: bool) -> nn.Module:
    """Reload out as a user would (Auto classes, else the model's own class), same dtype and attention."""
    from transformers import AutoConfig

    kwargs = {"dtype": model.dtype}
    attn = getattr(model.config, "_attn_implementation", None)
    if attn is not None:
        kwargs["attn_implementation"] = attn
    offloaded_lists = offloaded_layer_lists(model)
    if offloaded_lists:
        # The source did not fit in memory: keep the reloaded copy's layer lists on disk as well.
        skeleton = load_skeleton(out, trust_remote_code=trust_remote_code)
        kwargs["device_map"] = layer_device_map(skeleton, offloaded_lists, input_device(model), untied_head(skeleton))
        kwargs["offload_folder"] = _scratch_folder()
    try:
        config = AutoConfig.from_pretrained(out, trust_remote_code=trust_remote_code)
    except (KeyError, ValueError):  # a class not registered with the Auto API (e.g. hand-built)
        return type(model).from_pretrained(out, **kwargs).eval()
    auto = _auto_model_class(config)
    return auto.from_pretrained(out, trust_remote_code=trust_remote_code, **kwargs).eval()


def _greedy(model: nn.Module, inputs: dict, use_cache: bool, new_tokens: int) -> torch.Tensor:
    # A generated image placeholder would make the uncached re-run ask for image features.
    placeholders = _special_token_ids(model.config, ("image", "video", "vision", "boi", "eoi"))
    return model.generate(
        **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        use_cache=use_cache, suppress_tokens=sorted(placeholders) or None,
    )


@torch.no_grad()
def verify(
    model: nn.Module,
    out_dir: str | os.PathLike,
    inputs: dict[str, torch.Tensor] | None = None,
    *,
    check_generation: bool = True,
    new_tokens: int = 4,
    trust_remote_code: bool = False,
) -> VerifyReport:
    """Reload out_dir as a user would and check it reproduces `model` (logits, cached generation)."""
    out = Path(out_dir)
    reloaded = _reload(model, out, trust_remote_code)
    device = input_device(model)
    if getattr(reloaded, "hf_device_map", None) is None:
        reloaded.to(device)
    inputs = {k: v.to(device) for k, v in (inputs or text_probe_inputs(model)).items()}
    expected = model(**inputs).logits.float()
    actual = reloaded(**inputs).logits.float()
    if "attention_mask" in inputs and expected.shape == actual.shape:
        # Padding positions attend to nothing; their logits are arbitrary and not compared.
        attended = inputs["attention_mask"].bool()
        expected, actual = expected[attended], actual[attended]
    if expected.shape != actual.shape:
        raise VerificationError(
            f"reloaded model gives logits of shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        )
    low_precision = model.dtype in (torch.float16, torch.bfloat16)
    tolerance = (1e-2 if low_precision else 1e-5) * max(1.0, expected.abs().max().item())
    diff = (expected - actual).abs().max().item()
    if not diff <= tolerance:
        raise VerificationError(
            f"reloaded checkpoint in {out} differs from the pruned model: max |logit diff| "
            f"{diff:.3g} > {tolerance:.3g}"
        )
    agrees = None
    if check_generation and hasattr(reloaded, "generate"):
        cached = _greedy(reloaded, inputs, True, new_tokens)
        uncached = _greedy(reloaded, inputs, False, new_tokens)
        agrees = torch.equal(cached, uncached)
        if not agrees:
            raise VerificationError(
                f"checkpoint in {out}: greedy generation with and without KV cache disagree "
                "(a stale layer index or per-layer config entry)"
            )
    layers = getattr(reloaded.config.get_text_config(), "num_hidden_layers", None)
    if layers != model.config.get_text_config().num_hidden_layers:
        raise VerificationError(
            f"reloaded config has num_hidden_layers={layers}, the pruned model has "
            f"{model.config.get_text_config().num_hidden_layers}"
        )
    return VerifyReport(layers, diff, tolerance, agrees)

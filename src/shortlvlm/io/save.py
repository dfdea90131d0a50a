"""Save a pruned checkpoint (safetensors, config, processor, plan, model card) so that it lands whole or not at all."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from torch import nn

from shortlvlm.errors import OutputExistsError
from shortlvlm.io import atomic
from shortlvlm.io.offload import has_offloaded_weights
from shortlvlm.io.output import follow_umask, writing
from shortlvlm.plan import PLAN_FILENAME, Plan

logger = logging.getLogger(__name__)

OFFLOADED_SHARD_SIZE = "1GB"


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
    (`recover_interrupted_save`). Without `overwrite`, an out_dir that appeared during the run is
    kept (the check is the rename itself: renameat2 RENAME_NOREPLACE). Files and folders get the
    modes the umask gives. A failing write (full disk, permissions) raises OutputWriteError.
    """
    out = Path(out_dir)
    check_output_dir(out, overwrite)
    created = [p for p in reversed(out.parents) if not p.exists()]
    backup = tmp = None
    try:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{atomic.TMP_TAG}{os.getpid()}-", dir=out.parent))
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
            follow_umask(tmp)  # mkdtemp makes 0700 and safetensors 0600; save_pretrained into a new folder would not
            atomic.fsync_tree(tmp)
        if check is not None:
            check(tmp)
        with writing(out):
            if out.exists() and overwrite:
                if atomic.exchange_paths(tmp, out):
                    backup = tmp  # now holds the previous checkpoint
                else:
                    backup = out.with_name(f".{out.name}{atomic.OLD_TAG}{os.getpid()}-{tmp.name.rsplit('-', 1)[-1]}")
                    atomic.move_aside(out, backup)
                    tmp.rename(out)
            else:
                try:
                    atomic.rename_noreplace(tmp, out)
                except FileExistsError:
                    raise OutputExistsError(f"{out} appeared while this run was writing it (another program wrote "
                                            "it); it was kept. Pass --overwrite to replace it") from None
    except BaseException:
        if tmp is not None and (backup is None or backup != tmp):
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



def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail early (before any expensive work) if out cannot be written; first repair an interrupted save."""
    for action in atomic.recover_interrupted_save(out):
        logger.warning(action)
    if out.exists() and not out.is_dir():
        raise out_is_a_file(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists; pass --overwrite to replace it")


def out_is_a_file(out: Path) -> OutputExistsError:
    """The error for a directory output (a checkpoint, a comparison, the demo) that names an existing file."""
    return OutputExistsError(f"--out {out} is an existing file; --out must be a directory path: choose another --out")




def check_output_file(out: Path, overwrite: bool, kind: str, example: str) -> None:
    """Refuse an existing file (without overwrite) or a directory as a single-file output."""
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{kind} file {out} already exists; pass --overwrite to replace it")
    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a directory; give a file name such as {example}")

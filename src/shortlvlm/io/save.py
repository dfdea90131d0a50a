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


def _options_text(options: dict | None, prefix: str = "") -> str:
    """An options record as 'name=value, ...' (nested records as 'outer.name=value'; the record's own name left out)."""
    parts = []
    for name, value in (options or {}).items():
        if name == "name" and not prefix:
            continue
        if isinstance(value, dict):
            parts.append(_options_text(value, f"{prefix}{name}."))
        else:
            parts.append(f"{prefix}{name}={value}")
    return ", ".join(part for part in parts if part)


def _run_effect(entry: dict) -> str:
    """What a compensation's report says it did for one removed run, in a few words."""
    if "reason" in entry:
        return f"not compensated: {entry['reason']}"
    if "gap_left" in entry:  # lstsq
        return (f"linear bridge; on the calibration tokens {entry['gap_left']:.1%} of the gap (squared norm of the "
                "removed layers' change to the stream) is left (100%: as without it)")
    if "cosine_distance_after" in entry:  # cosine
        return (f"linear bridge, cosine distance to the unpruned stream {entry['cosine_distance_before']:g} "
                f"-> {entry['cosine_distance_after']:g} on the calibration tokens")
    if "energy_captured" in entry:  # scp
        return (f"SCP edit, rank {entry['rank']}, alpha {entry['alpha']:g}, {entry['energy_captured']:.1%} of "
                "the gap's energy in its subspace")
    if "factor" in entry:  # magnitude
        return f"writers of layers {entry.get('edited_layers')} rescaled by {entry['factor']:g}"
    if "relative_change" in entry:  # laco
        change = entry["relative_change"]
        return "merged into it" + ("" if change is None else f" (parameters changed by {change:.1%})")
    return "compensated"


def _model_card(model: nn.Module, plan: Plan) -> str:
    """README.md of a pruned checkpoint: what was removed, by which method and compensation with which options,
    on which calibration data, what each compensation did, and what a fitted compensation cannot promise."""
    kept = plan.num_layers_before - len(plan.removed_layers)
    scorer = _options_text(plan.scorer)
    compensation = _options_text(plan.compensation_options)
    calibration = plan.calibration or {}
    lines = [
        "---\nlibrary_name: transformers\ntags:\n- shortlvlm\n- layer-pruning\n---\n",
        f"# Pruned {type(model).__name__}\n",
        f"Produced by shortlvlm {plan.version}: {len(plan.removed_layers)} of "
        f"{plan.num_layers_before} decoder layers removed (kept {kept}).\n",
        f"- method: `{plan.method}`" + (f" (scorer `{plan.scorer.get('name')}`: {scorer})" if scorer else ""),
        f"- compensation: `{plan.compensation}`" + (f" ({compensation})" if compensation else ""),
        f"- removed layers (original indices): {plan.removed_layers}",
        f"- source model: {plan.model.get('name_or_path', 'unknown')}",
    ]
    if calibration.get("hash"):
        lines.append(f"- calibration: {calibration.get('num_samples')} samples of `{calibration.get('source')}`"
                     f" from sample {calibration.get('offset', 0)} (hash {calibration['hash'][:12]})")
    lines.append("\nThe architecture is unchanged apart from the layer count, so it loads with plain "
                 "`transformers` (`AutoModelForImageTextToText.from_pretrained(path)`). The full plan is in "
                 f"`{PLAN_FILENAME}`.\n")
    report = plan.params.get("compensation_report") or []
    if plan.compensation != "none" and report:
        lines += ["## What the compensation did\n", "| removed layers | edited layer | effect |", "|---|---|---|"]
        lines += [f"| {', '.join(map(str, entry.get('removed', [])))} | {entry.get('edited_layer', '-')} | "
                  f"{_run_effect(entry)} |" for entry in report]
        lines.append(
            "\nThe compensation was fitted on the calibration samples above. It restores what those samples "
            "exercise: kinds of input missing from them can lose much more than the rest (on shortlvlm's "
            "smol-llava testbed, a 30% cut calibrated on one draw without counting and spatial questions kept "
            "the other question kinds and lost 35 points on those two). Evaluate this model on the inputs it "
            "will serve.\n")
    return "\n".join(lines)


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

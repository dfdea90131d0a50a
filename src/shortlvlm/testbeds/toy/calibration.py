"""The toy model's calibration set: shapes questions from the calibration split, as LLaVA-format JSONL.

Regenerate the bundled copy with

    python -m shortlvlm.testbeds.toy.calibration --out src/shortlvlm/testbeds/toy/calibration_set --size 256 --overwrite
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from shortlvlm.errors import OutputExistsError
from shortlvlm.testbeds.toy.data import FAMILIES, make_sample, make_split

JSONL_NAME = "calibration.jsonl"
IMAGES_DIR = "images"


def family_samples(size: int, start: int, families: tuple[str, ...]) -> list:
    """The first `size` samples of the calibration split from index `start` on whose family is in `families` (the
    split interleaves the families, so each kept family stays balanced)."""
    indices = [i for i in range(start, start + size * len(FAMILIES)) if FAMILIES[i % len(FAMILIES)] in families]
    return [make_sample("calibration", i) for i in indices[:size]]


def write_calibration_set(out_dir: str | os.PathLike, size: int = 256, *, overwrite: bool = False,
                          start: int = 0, families: tuple[str, ...] | None = None) -> Path:
    """Write `size` calibration samples (from index `start` of the calibration split: another draw of the same
    distribution than the bundled set's 0..255; only `families`' questions when given, for transfer studies) to
    out_dir/calibration.jsonl and out_dir/images/; returns the JSONL."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise ValueError(f"start must be a non-negative integer, got {start!r}")
    unknown = sorted(set(families or ()) - set(FAMILIES))
    if families is not None and (not families or unknown):
        raise ValueError(f"families must be some of {', '.join(FAMILIES)}; got {', '.join(unknown) or 'none'}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is an existing file; "
                                "--out must be a directory path: choose another --out")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output directory {out} already exists; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Built next to `out` and renamed into place, so readers never see a half-written set.
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(staging, 0o755)
        (staging / IMAGES_DIR).mkdir()
        lines = []
        samples = make_split("calibration", size, start=start) if families is None else family_samples(
            size, start, tuple(families))
        for sample in samples:
            image = f"{IMAGES_DIR}/{sample.id}.png"
            sample.image().save(staging / image, format="PNG")
            lines.append(json.dumps({
                "id": sample.id,
                "image": image,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{sample.question}"},
                    {"from": "gpt", "value": sample.answer},
                ],
            }) + "\n")
        (staging / JSONL_NAME).write_bytes("".join(lines).encode("utf-8"))
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / JSONL_NAME


def replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`, replacing an existing `out` only once `new` is in place."""
    if not out.exists():
        new.rename(out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    old.rmdir()
    out.rename(old)
    new.rename(out)
    shutil.rmtree(old)


def main(argv: list[str] | None = None) -> int:
    """Command line: write a toy calibration set."""
    parser = argparse.ArgumentParser(prog="python -m shortlvlm.testbeds.toy.calibration", description=__doc__)
    parser.add_argument("--out", required=True, help="folder to write calibration.jsonl and images/ into")
    parser.add_argument("--size", type=int, default=256, help="number of samples (default 256)")
    parser.add_argument("--start", type=int, default=0,
                        help="first index in the calibration split (default 0, the bundled set's; another start "
                             "gives a disjoint draw of the same distribution)")
    parser.add_argument("--families", default=None,
                        help=f"comma-separated question families to keep (of {', '.join(FAMILIES)}; default all): "
                             "a calibration set that leaves families out, to measure how a fit transfers to them")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be a positive integer")
    if args.start < 0:
        parser.error("--start must be a non-negative index")
    families = None if args.families is None else tuple(f.strip() for f in args.families.split(",") if f.strip())
    try:
        path = write_calibration_set(args.out, args.size, overwrite=args.overwrite, start=args.start,
                                     families=families)
    except (OutputExistsError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {args.size} samples to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The test beds: models and data to measure pruning on where no real LVLM can be downloaded.

- `toy` (`testbeds/toy/`): a small LLaVA trained on the synthetic `shapes` visual-QA task, shipped with
  the package with its 256-sample calibration set;
- `smol-llava` (`testbeds/smol/`): a LLaVA on a real pretrained language model (SmolLM2-135M-Instruct),
  assembled into the user's cache from the shipped trained parts on first load;
- `tiny` (`testbeds/tiny/`): randomly initialised models of every supported architecture, built from
  config, for the demo's and self-check's round trips.

Each bed's `train` module holds its training recipe; nothing outside the test beds imports it, and
loading a model never does (docs/design.md §4). This module only names the beds and where their
checkpoints are: resolving a name has no side effect; `materialize` is what assembles smol-llava.
"""

from __future__ import annotations

from pathlib import Path

from shortlvlm.errors import ModelLoadError
from shortlvlm.testbeds.smol import SMOL_NAME
from shortlvlm.testbeds.toy import TOY_CHECKPOINT, TOY_NAME

TESTBED_NAMES = (TOY_NAME, SMOL_NAME)


def bed_folder(name: str) -> Path | None:
    """The folder a test bed's checkpoint is in (smol-llava's before it is assembled: where it will be);
    None for any other name. Reads and writes nothing."""
    if name == TOY_NAME:
        return TOY_CHECKPOINT
    if name == SMOL_NAME:
        from shortlvlm.testbeds.smol.source import cache_dir

        return cache_dir() / SMOL_NAME
    return None


def materialize(name: str) -> Path | None:
    """A test bed's checkpoint folder, ready to load: the toy's checked to be installed, smol-llava assembled
    into the cache on first use (docs/testbed.md). None for any other name."""
    if name == SMOL_NAME:
        from shortlvlm.testbeds.smol.assemble import assemble

        return assemble()
    if name == TOY_NAME and not (TOY_CHECKPOINT / "config.json").is_file():
        raise ModelLoadError(
            f"the bundled toy LVLM is missing from this installation ({TOY_CHECKPOINT}); "
            "reinstall shortlvlm or train it with `python -m shortlvlm.testbeds.toy.train --out DIR`"
        )
    return bed_folder(name)


__all__ = ["SMOL_NAME", "TESTBED_NAMES", "TOY_NAME", "bed_folder", "materialize"]

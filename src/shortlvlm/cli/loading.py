"""The flags every model-loading subcommand shares, and the ModelSource they describe."""

from __future__ import annotations

import argparse

from shortlvlm.cli.flags import add_options, options_from_args
from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.placement import Layerwise
from shortlvlm.jobs.source import Architecture, Loading, ModelSource

LAYERWISE_HELP = (
    "calibrate one decoder layer at a time: the layers stay in the checkpoint's files and are read one by one, "
    "every calibration batch goes through a layer before the next is read, so memory holds about one layer plus "
    "the activations (results identical to the whole-model pass). For models larger than memory; the rest of the "
    "model goes on --device-map if it names one device (cuda:0, cpu), else the first GPU or the CPU")


def add_model_options(parser: argparse.ArgumentParser, *, layerwise: bool = False) -> None:
    group = parser.add_argument_group("loading")
    add_options(group, Loading)
    if layerwise:
        group.add_argument("--layerwise", action="store_true", help=LAYERWISE_HELP)
        add_options(group, Layerwise)
    group = parser.add_argument_group("architecture overrides (models without a built-in adapter)")
    add_options(group, Architecture)


def source_from_args(args: argparse.Namespace, name: str | None = None) -> ModelSource:
    """The model the flags name (MODEL, or `name`), loaded and understood as they say."""
    layerwise = None
    if getattr(args, "activations_dir", None) and not getattr(args, "layerwise", False):
        raise ShortLVLMError("--activations-dir needs --layerwise")
    if getattr(args, "layerwise", False):
        layerwise = options_from_args(Layerwise, args)
    return ModelSource(name or args.model, options_from_args(Loading, args), options_from_args(Architecture, args),
                       layerwise)

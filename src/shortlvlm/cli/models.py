"""`shortlvlm models`: the supported architectures and how each is handled."""

from __future__ import annotations

import argparse
import textwrap

from shortlvlm.models import SPECS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list supported architectures and how each is handled")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for spec in SPECS:
        print(f"{spec.name}" + ("  [remote code: needs --trust-remote-code]" if spec.remote_code else ""))
        print(f"  classes:          {', '.join(spec.model_classes)}")
        print(f"  decoder layers:   {spec.layers_path}")
        print(f"  residual writers: {', '.join(spec.residual_writers)}")
        if spec.modality_inputs:
            print(f"  modality inputs:  {', '.join(spec.modality_inputs)}")
        for line in textwrap.wrap(spec.notes, 90):
            print(f"  {line}")
        print()
    print("Any other model: --generic finds the decoder layer list (the largest ModuleList of identical")
    print("blocks whose length matches num_hidden_layers) and its residual writers by name; override")
    print("with --layers-path and --writers.")
    return 0

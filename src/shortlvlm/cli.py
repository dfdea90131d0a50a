"""Command-line interface: a thin shell over the public API."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from shortlvlm import __version__
from shortlvlm.errors import ShortLVLMError

EXIT_USER_ERROR = 2


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated integers such as 3,7 (got '{text}')"
        ) from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("loading")
    group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype (default: as stored in the checkpoint)")
    group.add_argument("--device-map", default=None,
                       help="accelerate device map, e.g. 'auto' or 'cpu' (default: load on CPU)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow the checkpoint's own Python code to run (Qwen-VL-Chat, mPLUG-Owl2); "
                       "only for sources you trust")
    group = parser.add_argument_group("architecture overrides (models without a built-in adapter)")
    group.add_argument("--generic", action="store_true",
                       help="find decoder layers and residual writers by structure")
    group.add_argument("--layers-path", default=None,
                       help="dotted path of the decoder layer list, e.g. transformer.h")
    group.add_argument("--writers", type=_name_list, default=None,
                       help="comma-separated residual-writing projections inside a layer, "
                       "e.g. attn.c_proj,mlp.c_proj")
    group.add_argument("--image-token-id", type=int, default=None,
                       help="token id that marks image positions in input_ids")


def _load_model(args):
    """Load MODEL with the loading options (dtype, device map, remote code)."""
    import torch

    from shortlvlm.checkpoint import load

    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    return load(args.model, dtype=dtype, device_map=args.device_map, trust_remote_code=args.trust_remote_code)


def _adapter(args, model):
    from shortlvlm.models import get_adapter

    return get_adapter(model, generic=args.generic, layers_path=args.layers_path,
                       writers=args.writers, image_token_id=args.image_token_id)


def cmd_models(args) -> int:
    """List supported architectures and how each is handled."""
    from shortlvlm.models import SPECS

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


def cmd_prune(args) -> int:
    """Remove the given decoder layers and write a verified, standard checkpoint."""
    from shortlvlm.checkpoint import check_output_dir, load_skeleton
    from shortlvlm.pipeline import prune_layers_to_checkpoint
    from shortlvlm.surgery import validate_layer_selection

    # Every check that needs no weights runs first, so a bad request never waits for a large load.
    check_output_dir(Path(args.out), args.overwrite)
    skeleton = load_skeleton(args.model, trust_remote_code=args.trust_remote_code)
    validate_layer_selection(args.layers, _adapter(args, skeleton))
    del skeleton
    model, processor = _load_model(args)
    adapter = _adapter(args, model)
    result = prune_layers_to_checkpoint(
        model, processor, args.layers, args.out, adapter=adapter, overwrite=args.overwrite,
        verify_checkpoint=not args.no_verify, trust_remote_code=args.trust_remote_code,
        source=args.model,
    )
    plan = result.plan
    print(f"removed layers {plan.removed_layers} of {plan.num_layers_before} "
          f"({adapter.spec.name}); {adapter.num_layers} remain")
    print(f"parameters: {result.params_before:,} -> {result.params_after:,} "
          f"({100 * (1 - result.params_after / result.params_before):.1f}% fewer)")
    if result.report is not None:
        generation = "agree" if result.report.generation_agrees else "not checked"
        print(f"verified: reload max |logit diff| {result.report.max_abs_logit_diff:.2e}, "
              f"cached/uncached greedy generation {generation}")
    print(f"wrote {result.out_dir}")
    return 0


def cmd_eval(args) -> int:
    """Answer a benchmark with a model and write metrics and per-sample answers."""
    import json

    from shortlvlm.errors import OutputExistsError
    from shortlvlm.pipeline import benchmark_samples, evaluate

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise OutputExistsError(f"results file {out} already exists; pass --overwrite to replace it")
    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a directory; give a file name such as results.json")
    samples = benchmark_samples(args.bench, args.data, args.limit)  # bad data fails before the load
    model, processor = _load_model(args)
    metrics, predictions = evaluate(model, processor, args.bench, samples, batch_size=args.batch_size)
    result = {"model": args.model, **metrics, "predictions": predictions}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    """Prune and verify a tiny model of every supported architecture."""
    from shortlvlm.demo import run_demo

    return run_demo(Path(args.out), overwrite=args.overwrite, limit=args.limit)


def build_parser() -> argparse.ArgumentParser:
    from shortlvlm.data.benchmarks import BENCHMARKS
    from shortlvlm.toy.bench import NAME as SHAPES

    parser = argparse.ArgumentParser(
        prog="shortlvlm",
        description="Make vision-language models smaller and faster by removing redundant decoder "
        "layers, without training (Short-LVLM). MODEL is a hub id or a local directory.",
    )
    parser.add_argument("--version", action="version", version=f"shortlvlm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list supported architectures and how each is handled")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "prune", help="remove decoder layers and write a standard checkpoint",
        description="Remove the listed decoder layers (original 0-based indices), write a "
        "transformers checkpoint (safetensors, config, processor, pruning_plan.json, model card) "
        "to --out, and verify it by reloading it: logits must match the in-memory model and "
        "greedy generation must agree with and without the KV cache. Nothing appears at --out "
        "unless every step succeeds.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id or local model directory")
    p.add_argument("--layers", type=_layer_list, required=True,
                   help="comma-separated decoder layer indices to remove, e.g. 3,7")
    p.add_argument("--out", required=True, help="output directory for the pruned checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    _add_model_options(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "eval", help="evaluate a model on a benchmark",
        description="Answer a benchmark's questions with greedy decoding (the model's chat template, "
        "batched with left padding) and score them with the benchmark's official metric. "
        "`shapes` is the toy task (generated, no --data needed); the others read the benchmark's "
        "official local layout from --data.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--bench", required=True,
                   choices=[SHAPES, *BENCHMARKS])
    p.add_argument("--data", default=None, help="the benchmark's folder (not needed for shapes)")
    p.add_argument("--limit", type=int, default=None, help="answer only the first N questions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", required=True, help="results JSON (metrics and per-sample answers)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_model_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo", help="the main job on the bundled toy LVLM, with a report",
        description="1) Self-check: a tiny random model of every supported architecture is saved, "
        "loaded back through the code a real checkpoint takes, pruned, saved and verified. "
        "2) The bundled toy LVLM is evaluated on the shapes benchmark, 30%% of its layers are "
        "removed by each available rule, and each verified checkpoint is evaluated again. "
        "Writes demo_report.md/.json, toy_accuracy.png and the pruned checkpoints to --out.",
    )
    p.add_argument("--out", default="shortlvlm-demo", help="output directory (default: shortlvlm-demo)")
    p.add_argument("--limit", type=int, default=600, help="shapes questions per evaluation (default: 600)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ShortLVLMError as err:
        print(f"shortlvlm: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("shortlvlm: interrupted; nothing was written to the output location", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

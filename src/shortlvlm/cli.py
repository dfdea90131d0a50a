"""Command-line interface: a thin shell over the public API."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import textwrap
import threading
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


def _add_model_options(parser: argparse.ArgumentParser, *, layerwise: bool = False) -> None:
    group = parser.add_argument_group("loading")
    group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="weights dtype (default: as stored in the checkpoint)")
    group.add_argument("--device-map", default=None,
                       help="accelerate device map, e.g. 'auto' or 'cpu' (default: load on CPU)")
    group.add_argument("--max-memory", type=_max_memory, default=None,
                       help="per-device memory caps for --device-map auto, e.g. '0=70GiB,cpu=200GiB'; what does "
                       "not fit goes to --offload-folder (scoring, SCP and save work on offloaded models)")
    group.add_argument("--offload-folder", default=None,
                       help="folder for weights accelerate offloads to disk (with --device-map auto)")
    if layerwise:
        group.add_argument("--layerwise", action="store_true",
                           help="calibrate one decoder layer at a time: the layers stay in the checkpoint's files "
                           "and are read one by one, every calibration batch goes through a layer before the next "
                           "is read, so memory holds about one layer plus the activations (results identical to "
                           "the whole-model pass). For models larger than memory; the rest of the model goes on "
                           "--device-map if it names one device (cuda:0, cpu), else the first GPU or the CPU")
        group.add_argument("--activations-dir", default=None,
                           help="with --layerwise: keep the activations between layers (and each batch's masks and "
                           "position embeddings) in files under this folder instead of CPU memory")
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


def _max_memory(text: str) -> dict:
    """'0=70GiB,cpu=200GiB' -> {0: '70GiB', 'cpu': '200GiB'} (accelerate's max_memory)."""
    caps = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, amount = part.partition("=")
        if not sep or not device.strip() or not amount.strip():
            raise argparse.ArgumentTypeError(f"--max-memory takes DEVICE=AMOUNT pairs such as 0=70GiB,cpu=200GiB "
                                             f"(got '{text}')")
        device = device.strip()
        caps[int(device) if device.isdigit() else device] = amount.strip()
    return caps


def _load_model(args):
    """Load MODEL with the loading options (dtype, device map, offload, remote code)."""
    import torch

    from shortlvlm.checkpoint import load

    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    extra = {}
    layerwise = getattr(args, "layerwise", False)
    if getattr(args, "activations_dir", None) and not layerwise:
        raise ShortLVLMError("--activations-dir needs --layerwise")
    if layerwise:
        from shortlvlm.layerwise import Layerwise

        if args.max_memory:
            raise ShortLVLMError("--layerwise places the model itself; drop --max-memory")
        if args.activations_dir and not Path(args.activations_dir).is_dir():
            raise ShortLVLMError(f"--activations-dir {args.activations_dir} is not an existing folder; create it first")
        extra = {"layerwise": Layerwise(args.activations_dir), "layers_path": args.layers_path}
        if args.offload_folder:
            extra["offload_folder"] = args.offload_folder
    elif getattr(args, "max_memory", None) or getattr(args, "offload_folder", None):
        if args.device_map is None:
            raise ShortLVLMError("--max-memory and --offload-folder need --device-map auto")
        extra = {k: v for k, v in (("max_memory", args.max_memory), ("offload_folder", args.offload_folder)) if v}
    model, processor = load(args.model, dtype=dtype, device_map=args.device_map,
                            trust_remote_code=args.trust_remote_code, **extra)
    placement = getattr(model, "hf_device_map", None)
    if placement:
        from collections import Counter

        counts = Counter(str(device) for device in placement.values())
        print("device map: " + ", ".join(f"{n} module group(s) on {d}" for d, n in sorted(counts.items())),
              file=sys.stderr)
    return model, processor


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


def _probe_layers(text: str):
    if text == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tis-layers takes 'all' or indices such as 8,12 (got '{text}')") from None


def _alpha(text: str):
    if text == "fit":
        return "fit"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--scp-alpha takes a number or 'fit' (got '{text}')") from None


def _add_calibration_options(group) -> None:
    group.add_argument("--calib", default=None,
                       help="calibration JSONL (image + LLaVA conversation, or image/prompt/answer); "
                       "paths inside it are relative to the file. Optional for MODEL=toy (bundled set)")
    group.add_argument("--allow-outside-root", action="store_true",
                       help="let image paths in --calib point outside the JSONL file's folder")
    group.add_argument("--num-samples", type=int, default=None, help="use the first N calibration samples")
    group.add_argument("--batch-size", type=int, default=8, help="calibration batch size (default: 8)")


def _add_method_options(parser: argparse.ArgumentParser, *, scp: bool) -> None:
    from shortlvlm.pruning import DEFAULT_TIS_TOP_P
    from shortlvlm.scoring import METHODS

    group = parser.add_argument_group("method")
    group.add_argument("--method", default="short-lvlm", choices=sorted(METHODS),
                       help="layer-selection rule: short-lvlm (default) = tis-cosine scoring + scp compensation; "
                       "tis-cosine (Short-LVLM's scorer alone); block-influence (ShortGPT); angular (Gromov et al., "
                       "best contiguous block); sleb (greedy, re-evaluated after each removal); taylor (Taylor+, "
                       "Shortened LLaMA); ppl (Shortened LLaMA); last; random (seeded). sleb, ppl and taylor "
                       "measure the loss on the calibration answers")
    _add_calibration_options(group)
    group.add_argument("--tis-top-p", type=float, default=DEFAULT_TIS_TOP_P,
                       help=f"fraction of each modality's tokens kept as important (default: {DEFAULT_TIS_TOP_P})")
    group.add_argument("--tis-layers", type=_probe_layers, default="all",
                       help="layers whose attention defines token importance: 'all' (mean) or e.g. 4,8")
    group.add_argument("--tis-joint", action="store_true", help="one top-p over image and text tokens together")
    group.add_argument("--tis-skip-template", action=argparse.BooleanOptionalAction, default=True,
                       help="leave the chat template every calibration sample shares (system prompt, 'USER:'; "
                            "attention sinks) out of the text tokens TIS ranks (default: on)")
    group.add_argument("--tis-tokens", default="important", choices=["important", "all"],
                       help="'all' scores layers on every token (the ablation without TIS)")
    group.add_argument("--iterative", action="store_true", help="re-score after each removal (one pass per layer)")
    group.add_argument("--seed", type=int, default=0, help="seed of --method random")
    if scp:
        from shortlvlm.pruning import DEFAULT_SCP_ALPHA, DEFAULT_SCP_RANK, DEFAULT_SCP_WRITERS

        group.add_argument("--compensation", default=None, choices=["scp", "none"],
                           help="gap compensation (default: scp for short-lvlm, none for the others)")
        group.add_argument("--scp-rank", type=int, default=DEFAULT_SCP_RANK,
                           help=f"directions k of the gap subspace (default: {DEFAULT_SCP_RANK})")
        group.add_argument("--scp-alpha", type=_alpha, default=DEFAULT_SCP_ALPHA,
                           help=f"edit strength, or 'fit' for least squares (default: {DEFAULT_SCP_ALPHA})")
        group.add_argument("--scp-writers", default=DEFAULT_SCP_WRITERS, choices=["mlp", "attn", "both"],
                           help=f"which projections of the kept layer are edited (default: {DEFAULT_SCP_WRITERS})")


def _method_kwargs(args) -> dict:
    return dict(tis_top_p=args.tis_top_p, tis_layers=args.tis_layers, tis_joint=args.tis_joint,
                tis_tokens=args.tis_tokens, tis_skip_template=args.tis_skip_template,
                iterative=args.iterative, seed=args.seed,
                num_samples=args.num_samples, batch_size=args.batch_size, source=args.model)


def _check_method_options(args, method: str) -> None:
    """Build the scorer once and check SCP options, so a bad parameter fails before any weights load."""
    from shortlvlm.pruning import _resolve_method, _scorer_params
    from shortlvlm.scoring import get_scorer

    scorer, _ = _resolve_method(method, getattr(args, "compensation", None))
    get_scorer(scorer, **_scorer_params(scorer, tis_top_p=args.tis_top_p, tis_layers=args.tis_layers,
                                        tis_joint=args.tis_joint, tis_tokens=args.tis_tokens,
                                        tis_skip_template=args.tis_skip_template,
                                        iterative=args.iterative, seed=args.seed))
    if getattr(args, "scp_rank", 1) < 1:
        raise ShortLVLMError(f"--scp-rank must be a positive integer, got {args.scp_rank}")
    if args.num_samples is not None and args.num_samples < 1:
        raise ShortLVLMError(f"--num-samples must be a positive integer, got {args.num_samples}")


def _calibration_first(args, needed: bool):
    """Read the calibration set before any weights load, so a bad file fails fast."""
    from shortlvlm.data.calibration import check_images, load_calibration

    if not needed:
        return None
    samples = load_calibration(args.calib, model_name=args.model, limit=args.num_samples,
                               allow_outside_root=args.allow_outside_root)
    check_images(samples)
    return samples


def _check_output_file(out: Path, overwrite: bool, kind: str, example: str) -> None:
    """Refuse an existing file (without --overwrite) or a directory as --out."""
    from shortlvlm.errors import OutputExistsError

    if out.exists() and not overwrite:
        raise OutputExistsError(f"{kind} file {out} already exists; pass --overwrite to replace it")
    if out.is_dir():
        raise OutputExistsError(f"--out {out} is a directory; give a file name such as {example}")


def cmd_score(args) -> int:
    """Score every decoder layer on calibration data and write the plan (removal order) as JSON."""
    from shortlvlm.checkpoint import write_text_atomically
    from shortlvlm.pruning import needs_calibration, score
    from shortlvlm.report import layer_scores_plot
    from shortlvlm.scoring import METHODS, NEEDS_COUNT

    out = Path(args.out)
    _check_output_file(out, args.overwrite, "plan", "plan.json")
    _check_method_options(args, args.method)
    samples = _calibration_first(args, needs_calibration(METHODS[args.method][0], "none"))
    model, processor = _load_model(args)
    adapter = _adapter(args, model)
    kwargs = _method_kwargs(args)
    num_remove = None
    if args.iterative or METHODS[args.method][0] in NEEDS_COUNT:
        from shortlvlm.pruning import layers_to_remove

        num_remove = layers_to_remove(args.max_ratio, adapter)
    plan = score(model, processor, samples, args.method, adapter=adapter, num_remove=num_remove,
                 **{k: v for k, v in kwargs.items() if k != "num_samples"})
    plan.calibration["source"] = args.calib or "toy"
    write_text_atomically(out, json.dumps(plan.to_dict(), indent=2) + "\n")
    plot = out.with_suffix(".png")
    layer_scores_plot(plan, plot)
    order = plan.params["removal_order"]
    print(f"{plan.params['score_meaning']}")
    for layer in range(plan.num_layers_before):
        rank = order.index(layer) + 1 if layer in order else "-"
        print(f"  layer {layer:3d}  score {plan.layer_scores[layer]: .5f}  removal rank {rank}")
    print(f"removal order: {order}")
    print(f"wrote {out} and {plot}; prune from it with: shortlvlm prune {args.model} --plan {out} --ratio R --out DIR")
    return 0


def cmd_prune(args) -> int:
    """Remove decoder layers (listed, or chosen by a method) and write a verified, standard checkpoint."""
    from shortlvlm.checkpoint import check_output_dir, load_skeleton
    from shortlvlm.pipeline import count_parameters, prune_layers_to_checkpoint, write_checkpoint
    from shortlvlm.plan import Plan
    from shortlvlm.pruning import check_plan_matches, layers_to_remove, planned_removal, prune
    from shortlvlm.surgery import validate_layer_selection

    if (args.layers is None) == (args.ratio is None):
        raise ShortLVLMError("give exactly one of --layers (explicit indices) or --ratio (fraction chosen by --method)")
    # Every check that needs no weights runs first, so a bad request never waits for a large load.
    check_output_dir(Path(args.out), args.overwrite)
    skeleton = load_skeleton(args.model, trust_remote_code=args.trust_remote_code)
    skeleton_adapter = _adapter(args, skeleton)
    plan = samples = None
    if args.layers is not None:
        validate_layer_selection(args.layers, skeleton_adapter)
    else:
        count = layers_to_remove(args.ratio, skeleton_adapter)
        if args.plan is not None:
            plan = Plan.load(args.plan)
            check_plan_matches(plan, skeleton, skeleton_adapter)
            planned_removal(plan, count)
        from shortlvlm.pruning import _resolve_method

        method = plan.method if plan is not None else args.method
        _check_method_options(args, method)
        scorer, compensation = _resolve_method(method, args.compensation)
        from shortlvlm.pruning import needs_calibration

        needs_data = needs_calibration(scorer, compensation, scored=plan is not None)
        samples = _calibration_first(args, needs_data)
    del skeleton, skeleton_adapter
    model, processor = _load_model(args)
    adapter = _adapter(args, model)
    if args.layers is not None:
        result = prune_layers_to_checkpoint(
            model, processor, args.layers, args.out, adapter=adapter, overwrite=args.overwrite,
            verify_checkpoint=not args.no_verify, trust_remote_code=args.trust_remote_code, source=args.model,
        )
        plan, out, report, before, after = result.plan, result.out_dir, result.report, result.params_before, result.params_after
    else:
        from shortlvlm.checkpoint import weights_stamp
        from shortlvlm.resume import StageCache, partial_dir_for

        before = count_parameters(model)
        kwargs = {k: v for k, v in _method_kwargs(args).items() if k != "num_samples"}
        # Finished stages are kept beside --out until it lands, so a killed run resumes (shortlvlm.resume).
        cache = StageCache(partial_dir_for(args.out), identity={"weights": weights_stamp(args.model)})
        if args.fresh:
            cache.clear()
        model, plan = prune(model, processor, samples, args.ratio, args.method, args.compensation, plan=plan,
                            adapter=adapter, scp_rank=args.scp_rank, scp_alpha=args.scp_alpha,
                            scp_writers=args.scp_writers, cache=cache, **kwargs)
        plan.calibration["source"] = args.calib or "toy"
        after = count_parameters(model)
        out, report = write_checkpoint(model, processor, plan, args.out, overwrite=args.overwrite,
                                       verify_checkpoint=not args.no_verify, trust_remote_code=args.trust_remote_code)
        cache.clear()
    print(f"removed layers {plan.removed_layers} of {plan.num_layers_before} "
          f"({adapter.spec.name}, method {plan.method}, compensation {plan.compensation}); {adapter.num_layers} remain")
    for entry in plan.params.get("compensation_report", []):
        if entry.get("edited_layer") is None:
            print(f"  run {entry['removed']}: not compensated ({entry['reason']})")
        else:
            print(f"  run {entry['removed']}: edited layer {entry['edited_layer']} {', '.join(entry['writers'])} "
                  f"(k={entry.get('rank')}, alpha={entry.get('alpha', 0):.3g}, "
                  f"gap energy captured {100 * entry.get('energy_captured', 0):.1f}%)")
    print(f"parameters: {before:,} -> {after:,} ({100 * (1 - after / before):.1f}% fewer)")
    if report is not None:
        generation = "agree" if report.generation_agrees else "not checked"
        print(f"verified: reload max |logit diff| {report.max_abs_logit_diff:.2e}, "
              f"cached/uncached greedy generation {generation}")
    print(f"wrote {out}")
    return 0


def cmd_eval(args) -> int:
    """Answer a benchmark with a model and write metrics and per-sample answers."""
    from shortlvlm.checkpoint import write_text_atomically
    from shortlvlm.pipeline import benchmark_samples, evaluate

    out = Path(args.out)
    _check_output_file(out, args.overwrite, "results", "results.json")
    samples = benchmark_samples(args.bench, args.data, args.limit)  # bad data fails before the load
    model, processor = _load_model(args)
    # Answers are appended to a hidden file beside --out as they come; the same command resumes.
    partial = out.with_name(f".{out.name}.partial.jsonl")
    key = {"model": args.model, "bench": args.bench, "data": args.data, "limit": args.limit, "dtype": args.dtype}
    metrics, predictions = evaluate(model, processor, args.bench, samples, batch_size=args.batch_size,
                                    resume_file=partial, resume_key=key)
    result = {"model": args.model, **metrics, "predictions": predictions}
    write_text_atomically(out, json.dumps(result, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out}")
    return 0


def cmd_compare(args) -> int:
    """Score, prune and evaluate every method at every ratio; write results JSON, table and plot."""
    from shortlvlm.checkpoint import load_skeleton
    from shortlvlm.compare import parse_methods, parse_ratios, run_compare
    from shortlvlm.pipeline import benchmark_samples
    from shortlvlm.pruning import layers_to_remove
    methods = parse_methods(args.methods)
    ratios = parse_ratios(args.ratios)
    if args.num_samples is not None and args.num_samples < 1:
        raise ShortLVLMError(f"--num-samples must be a positive integer, got {args.num_samples}")
    samples = benchmark_samples(args.bench, args.data, args.limit)  # bad data fails before any load
    calibration = _calibration_first(args, any(m.needs_calibration for m in methods))
    skeleton = load_skeleton(args.model, trust_remote_code=args.trust_remote_code)
    for ratio in ratios:
        layers_to_remove(ratio, _adapter(args, skeleton))
    del skeleton
    data = run_compare(lambda: _load_model(args), args.model, args.out, methods=methods, ratios=ratios,
                       bench=args.bench, samples=samples, calibration=calibration, data=args.data,
                       batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, seed=args.seed,
                       overwrite=args.overwrite, make_adapter=lambda model: _adapter(args, model),
                       log=lambda text: print(text, file=sys.stderr))
    from shortlvlm.compare import markdown_table

    print(markdown_table(data))
    print(f"wrote {Path(args.out) / 'results.json'}, results.md and accuracy_vs_ratio.png")
    return 0


def cmd_bench(args) -> int:
    """Measure several models' speed and memory interleaved in one process; write JSON, print a table."""
    import platform

    import torch

    from shortlvlm.checkpoint import load_skeleton, write_text_atomically
    from shortlvlm.speed import markdown_table, run_bench

    out = Path(args.out)
    _check_output_file(out, args.overwrite, "bench results", "bench.json")
    if args.rounds < 1 or args.warmup < 0 or args.answer_tokens < 2:
        raise ShortLVLMError("--rounds must be >= 1, --warmup >= 0 and --answer-tokens >= 2")
    image = None
    if args.image is not None:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(args.image).convert("RGB")
        except (OSError, UnidentifiedImageError) as err:
            raise ShortLVLMError(f"cannot read --image {args.image}: {err}") from err
    for name in args.models:  # a wrong path fails before any model loads
        load_skeleton(name, trust_remote_code=args.trust_remote_code)

    def loader(name):
        return lambda: _load_model(argparse.Namespace(**{**vars(args), "model": name}))

    labels = [name if args.models.count(name) == 1 else f"{name}#{i}" for i, name in enumerate(args.models)]
    rows = run_bench([(label, loader(name)) for label, name in zip(labels, args.models, strict=True)],
                     rounds=args.rounds, warmup=args.warmup, answer_tokens=args.answer_tokens,
                     prompt=args.prompt, image=image, layer_count=lambda model: _adapter(args, model).num_layers)
    result = {"config": {"models": args.models, "rounds": args.rounds, "warmup": args.warmup,
                         "answer_tokens": args.answer_tokens, "prompt": args.prompt, "image": args.image,
                         "dtype": args.dtype, "device_map": args.device_map},
              "environment": {"torch": torch.__version__, "platform": platform.platform(),
                              "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                              "threads": torch.get_num_threads()},
              "rows": rows}
    write_text_atomically(out, json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows))
    print(f"wrote {out}")
    return 0


def cmd_demo(args) -> int:
    """Prune and verify a tiny model of every supported architecture."""
    from shortlvlm.demo import run_demo

    return run_demo(Path(args.out), overwrite=args.overwrite, limit=args.limit, num_samples=args.num_samples)


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
        "score", help="rank decoder layers on calibration data; write a reusable plan",
        description="Run the calibration set through MODEL once (one pass per removed layer with "
        "--iterative), score every decoder layer with --method, and write the plan (scores and "
        "removal order) to --out plus a bar chart beside it (.png). `shortlvlm prune --plan` then "
        "prunes any ratio from it without scoring again.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--out", required=True, help="plan JSON to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--max-ratio", type=float, default=0.5,
                   help="with --iterative or --method sleb (one pass per removed layer and trial): how far to "
                   "rank (fraction of layers, default 0.5)")
    _add_method_options(p, scp=False)
    _add_model_options(p, layerwise=True)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "prune", help="remove decoder layers and write a standard checkpoint",
        description="Remove decoder layers and write a transformers checkpoint (safetensors, config, "
        "processor, pruning_plan.json, model card) to --out, verified by reloading it: logits must "
        "match the in-memory model and greedy generation must agree with and without the KV cache. "
        "Either list the layers (--layers 3,7) or give --ratio and let --method choose them "
        "(Short-LVLM by default: token-importance-weighted cosine scoring plus subspace-compensated "
        "pruning). Nothing appears at --out unless every step succeeds.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--layers", type=_layer_list, default=None,
                   help="comma-separated decoder layer indices to remove, e.g. 3,7")
    p.add_argument("--ratio", type=float, default=None,
                   help="fraction of decoder layers to remove, e.g. 0.3 (round(ratio x L) layers)")
    p.add_argument("--plan", default=None, help="plan from `shortlvlm score`: reuse its ranking, no scoring pass")
    p.add_argument("--out", required=True, help="output directory for the pruned checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.add_argument("--fresh", action="store_true",
                   help="do not reuse stages (scores, SCP statistics) saved in .OUT.partial/ by an interrupted "
                   "run of the same command; by default they are reused when model, data and options match")
    _add_method_options(p, scp=True)
    _add_model_options(p, layerwise=True)
    p.set_defaults(func=cmd_prune)

    from shortlvlm.compare import DEFAULT_METHODS

    p = sub.add_parser(
        "compare", help="run several pruning methods at several ratios and compare them on a benchmark",
        description="Score MODEL's layers once per method on the same calibration data, prune a fresh copy "
        "at every ratio (with the method's compensation), evaluate each on --bench, and write --out/"
        "results.json, results.md (score and retention per method x ratio, scoring time) and "
        "accuracy_vs_ratio.png. Plans are kept in --out/plans. Progress is saved after every step: "
        "run the same command again to resume a killed comparison.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated methods; append +scp or +none to override a method's compensation, "
                   f"e.g. block-influence+scp (default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--ratios", default="0.1,0.2,0.3", help="fractions of layers to remove (default: 0.1,0.2,0.3)")
    p.add_argument("--bench", default=SHAPES, choices=[SHAPES, *BENCHMARKS], help="benchmark (default: shapes)")
    p.add_argument("--data", default=None, help="the benchmark's folder (not needed for shapes)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N questions only")
    p.add_argument("--eval-batch-size", type=int, default=16, help="generation batch size (default: 16)")
    p.add_argument("--out", required=True, help="output directory (resumed if it holds the same comparison)")
    p.add_argument("--overwrite", action="store_true", help="discard a different comparison found in --out")
    group = p.add_argument_group("calibration (shared by every method)")
    _add_calibration_options(group)
    group.add_argument("--seed", type=int, default=0, help="seed of the random method")
    _add_model_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "eval", help="evaluate a model on a benchmark",
        description="Answer a benchmark's questions with greedy decoding (the model's chat template, "
        "batched with left padding) and score them with the benchmark's official metric. "
        "`shapes` is the toy task (generated, no --data needed); the others read the benchmark's "
        "official local layout from --data. Answers are saved as they come (beside --out); if the run is "
        "killed, the same command continues where it stopped.",
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

    from shortlvlm.speed import DEFAULT_PROMPT

    p = sub.add_parser(
        "bench", help="measure speed and memory of models side by side (e.g. unpruned vs pruned)",
        description="Load every MODEL, then time them interleaved in one process (A B A B ...) on one "
        "image + prompt at batch 1: prefill latency, decode tokens/s and benchmark-style samples/s (a "
        "fixed-length greedy answer, EOS ignored, so every model does the same work), plus peak memory. "
        "Prints medians over the rounds after warm-up with speedups against the first MODEL next to the "
        "ideal L0/L, and writes them (with every raw timing) to --out.",
    )
    p.add_argument("models", metavar="MODEL", nargs="+", help="hub ids, local model directories, or `toy`; "
                   "the first is the reference")
    p.add_argument("--out", required=True, help="results JSON")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--rounds", type=int, default=10, help="measured rounds per model (default: 10)")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first (default: 2)")
    p.add_argument("--answer-tokens", type=int, default=16, help="tokens generated per sample (default: 16)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"question asked (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--image", default=None, help="image file to ask about (default: a synthetic test pattern)")
    _add_model_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "demo", help="the main job on the bundled toy LVLM, with a report",
        description="1) Self-check: a tiny random model of every supported architecture is saved, "
        "loaded back through the code a real checkpoint takes, pruned, saved and verified. "
        "2) `shortlvlm compare` on the bundled toy LVLM: every method (Short-LVLM and the baselines) "
        "removes 10/20/30% of its layers using the bundled calibration set and is evaluated on the "
        "shapes benchmark; Short-LVLM at 30% is also written as a verified checkpoint. "
        "Writes demo_report.md/.json, compare/ (results, plans, plot) and toy-short-lvlm-30/ to --out.",
    )
    p.add_argument("--out", default="shortlvlm-demo", help="output directory (default: shortlvlm-demo)")
    p.add_argument("--limit", type=int, default=600, help="shapes questions per evaluation (default: 600)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="calibrate on the first N of the 256 bundled samples (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_demo)
    return parser


def _terminate(signum, frame):
    """SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C, so temporary outputs are removed."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except ShortLVLMError as err:
        print(f"shortlvlm: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("shortlvlm: interrupted; the output location was left as it was (finished stages, if any, "
              "are kept for the next run of the same command)", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())

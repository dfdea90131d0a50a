"""`shortlvlm prune`: remove decoder layers (listed, or chosen by a method) and write a verified checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from shortlvlm.cli.loading import add_model_options, source_from_args
from shortlvlm.cli.method import add_method_options, calibration_from_args, method_from_args, method_of
from shortlvlm.compensation import COMPENSATIONS, Compensation, compensation_needs_data
from shortlvlm.data.calibration_set import Calibration
from shortlvlm.errors import ShortLVLMError
from shortlvlm.jobs.prune import PruneRequest, run_prune
from shortlvlm.plan import Plan


def layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--layers takes comma-separated integers such as 3,7 (got '{text}')"
        ) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="remove decoder layers and write a standard checkpoint",
        description="Remove decoder layers and write a transformers checkpoint (safetensors, config, "
        "processor, pruning_plan.json, model card) to --out, verified by reloading it: logits must "
        "match the in-memory model and greedy generation must agree with and without the KV cache. "
        "Either list the layers (--layers 3,7) or give --ratio and let --method choose them "
        "(tis-loss+lstsq by default: token-importance shortlist and answer-loss passes choose the layers, a "
        "least-squares bridge per cut is merged into the layer before it; --method short-lvlm is the paper's "
        "method). Nothing appears at --out unless every step succeeds.",
    )
    p.add_argument("model", metavar="MODEL", help="hub id, local model directory, or `toy`")
    p.add_argument("--layers", type=layer_list, default=None,
                   help="comma-separated decoder layer indices to remove, e.g. 3,7 (bridged only with "
                   "--compensation, calibrated on --calib; laco needs no --calib)")
    p.add_argument("--ratio", type=float, default=None,
                   help="fraction of decoder layers to remove, e.g. 0.3 (round(ratio x L) layers)")
    p.add_argument("--plan", default=None,
                   help="plan from `shortlvlm score` or `compare` (OUT/plans/METHOD.json): reuse its ranking, no "
                   "scoring pass, with its method and compensation (--compensation overrides); needs --ratio")
    p.add_argument("--plan-other-weights", action="store_true",
                   help="use --plan although it was scored on other weights of the same config (e.g. the "
                   "base model of a fine-tune); by default such a plan is refused")
    p.add_argument("--out", required=True, help="output directory for the pruned checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--no-verify", action="store_true", help="skip the reload check (not recommended)")
    p.add_argument("--fresh", action="store_true",
                   help="do not reuse stages (scores, SCP statistics) saved in .OUT.partial/ by an interrupted "
                   "run of the same command; by default they are reused when model, data and options match")
    add_method_options(p, scp=True)
    add_model_options(p, layerwise=True)
    p.set_defaults(func=run)


def recorded_compensation(plan: Plan, flagged: Compensation) -> Compensation:
    """The plan's compensation with the options it records (a compare cell's, e.g. lstsq[ridge=0.1]), unless a
    compensation flag was given (then the flags' options)."""
    cls = type(flagged)
    if not plan.compensation_options or flagged != cls() or COMPENSATIONS.get(plan.compensation) is not cls:
        return flagged
    return cls.from_record(plan.compensation_options)


def check_listed_request(args: argparse.Namespace) -> None:
    """--layers names the layers: refuse the flags that only choose layers; calibration only with a compensation
    that reads it (not laco)."""
    if args.method is not None:
        raise ShortLVLMError(f"--method {args.method} chooses layers for --ratio, but --layers names them; drop "
                             "--method (a compensation for the listed layers: --compensation scp, lstsq, cosine or "
                             "magnitude, or laco)")
    reads_data = compensation_needs_data(COMPENSATIONS.get(args.compensation))
    if not reads_data and calibration_from_args(args) != Calibration():
        raise ShortLVLMError("the calibration flags are read only to choose layers (--ratio) or to bridge them "
                             "(--compensation scp, lstsq, cosine or magnitude; laco reads none); add --compensation, "
                             "or drop them")


def run(args: argparse.Namespace) -> int:
    """Remove decoder layers (listed, or chosen by a method) and write a verified, standard checkpoint."""
    plan = None
    if args.plan is not None:
        if args.layers is not None:
            raise ShortLVLMError("--plan is a ranking to cut at --ratio; drop --layers (or drop --plan to remove "
                                 "exactly the listed layers)")
        if args.method is not None:
            raise ShortLVLMError(f"--plan already names its method and compensation; drop --method {args.method} "
                                 "(or drop --plan to score with that method)")
        plan = Plan.load(args.plan)
    if args.layers is not None:
        check_listed_request(args)
    method = plan.method if plan is not None else method_of(args)
    scorer, scp = method_from_args(args, method, plan.compensation if plan is not None else None)
    if args.layers is not None and args.compensation is None:
        scp = None  # listed layers are bridged only when asked
    if plan is not None and scp is not None and args.compensation is None:
        scp = recorded_compensation(plan, scp)
    result = run_prune(PruneRequest(
        source=source_from_args(args), out=Path(args.out), layers=args.layers, ratio=args.ratio, method=method,
        scorer=scorer, compensation=scp, calibration=calibration_from_args(args), plan=plan,
        overwrite=args.overwrite, verify=not args.no_verify, fresh=args.fresh,
        allow_other_weights=args.plan_other_weights))
    plan, adapter = result.plan, result.adapter
    print(f"removed layers {plan.removed_layers} of {plan.num_layers_before} "
          f"({adapter.spec.name}, method {plan.method}, compensation {plan.compensation}); {adapter.num_layers} remain")
    for entry in plan.params.get("compensation_report", []):
        if entry.get("edited_layer") is None:
            print(f"  run {entry['removed']}: not compensated ({entry['reason']})")
        elif "gap_left" in entry:  # the least-squares bridge
            print(f"  run {entry['removed']}: edited layer {entry['edited_layer']} {', '.join(entry['writers'])} "
                  f"(least-squares bridge, ridge {entry['ridge']:g}: gap left {100 * entry['gap_left']:.1f}% on "
                  f"{entry['tokens']} calibration tokens, |T - I|/sqrt(d) {entry['distance_from_identity']:.2f})")
        elif "cosine_distance_after" in entry:  # the cosine bridge
            print(f"  run {entry['removed']}: edited layer {entry['edited_layer']} {', '.join(entry['writers'])} "
                  f"(cosine bridge, {entry['steps']} Adam steps from {entry['init']}: mean cosine distance "
                  f"{entry['cosine_distance_before']:.4f} -> {entry['cosine_distance_after']:.4f} on "
                  f"{entry['tokens']} calibration tokens, |T - I|/sqrt(d) {entry['distance_from_identity']:.2f})")
        elif "relative_change" in entry:  # LaCo's merge
            types = entry.get("layer_types_differ")
            print(f"  run {entry['removed']}: merged into layer {entry['edited_layer']} (LaCo, scale "
                  f"{entry['scale']:g}: {entry['parameters']} parameter tensors, |change|/|theta| "
                  f"{entry['relative_change']}" + (f"; layer types differ: {types}" if types else "") + ")")
        elif "reason" in entry:
            print(f"  run {entry['removed']}: edited layer {entry['edited_layer']}: nothing edited ({entry['reason']})")
        elif "factor" in entry:  # the magnitude compensation
            print(f"  run {entry['removed']}: magnitude factor {entry['factor']:.4g} on {entry['tokens']} calibration "
                  f"tokens, merged as 1/factor into {', '.join(entry['writers'])} of layers {entry['edited_layers']}")
        else:
            print(f"  run {entry['removed']}: edited layer {entry['edited_layer']} {', '.join(entry['writers'])} "
                  f"(k={entry.get('rank')}, alpha={entry.get('alpha', 0):.3g}, "
                  f"gap energy captured {100 * entry.get('energy_captured', 0):.1f}%)")
    before, after = result.params_before, result.params_after
    print(f"parameters: {before:,} -> {after:,} ({100 * (1 - after / before):.1f}% fewer)")
    if result.report is not None:
        generation = "agree" if result.report.generation_agrees else "not checked"
        print(f"verified: reload max |logit diff| {result.report.max_abs_logit_diff:.2e}, "
              f"cached/uncached greedy generation {generation}")
    print(f"wrote {result.out_dir}")
    return 0

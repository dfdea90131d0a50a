"""The report of a comparison: the accuracy table (score and retention per method x ratio) and the plot."""

from __future__ import annotations

from pathlib import Path

from shortlvlm.data.benchmarks import headline_path
from shortlvlm.io.atomic import write_text_atomically
from shortlvlm.jobs.compare_spec import parse_methods
from shortlvlm.methods import DEFAULT_METHOD
from shortlvlm.scoring import SCORERS


def ratio_key(ratio: float) -> str:
    """How results.json names a ratio ("0.1")."""
    return f"{ratio:g}"


def markdown_table(data: dict) -> str:
    """Accuracy (and retention of the unpruned score) per method x ratio, plus scoring time."""
    config = data["config"]
    ratios = config["ratios"]
    base = data["unpruned"]["score"]
    scorers = {spec.label: spec.scorer for spec in parse_methods(config["methods"])}
    lines = [f"| method | {' | '.join(f'{r:.0%}' for r in ratios)} | scoring time (s) |",
             "|---" * (len(ratios) + 2) + "|",
             f"| unpruned | {' | '.join(f'{base:.1f}' for _ in ratios)} | - |"]
    for label in config["methods"]:
        cells = []
        for ratio in ratios:
            row = data["cells"].get(label, {}).get(ratio_key(ratio))
            cells.append("…" if row is None else f"{row['score']:.1f} ({100 * row['score'] / base:.0f}%)")
        seconds = data["scoring"].get(scorers[label], {}).get("seconds")
        lines.append(f"| {label} | {' | '.join(cells)} | {'-' if seconds is None else f'{seconds:.1f}'} |")
    return "\n".join(lines)


def ranking_note(data: dict) -> str:
    """A line under the table where a compared scorer, ranked once for the largest ratio, may order the first
    layers differently when ranked for a smaller one: those cells are `prune --plan`'s, not `prune --ratio`'s."""
    ratios = data["config"]["ratios"]
    if len(ratios) < 2 or data["config"].get("rankings") == "per-ratio":
        return ""
    labels = [spec.label for spec in parse_methods(data["config"]["methods"])
              if SCORERS[spec.scorer].order_depends_on_count]
    if not labels:
        return ""
    largest = f"{max(ratios):.0%}"
    return (f"Ranked once, for {largest}: below {largest} the cells of {', '.join(labels)} remove the first layers "
            f"of that ranking (`prune --plan plans/METHOD.json --ratio R`); ranked for R alone "
            f"(`prune --ratio R`) these scorers can remove other layers; `--rank-per-ratio` ranks for each.\n\n")


def ratio_plot(data: dict, path: Path, *, draws: int = 1) -> None:
    """Benchmark score versus pruning ratio, one line per method, the unpruned score dotted. A summary over
    calibration draws (compare_draws: cells with "mean" and "sd") gets ± sd bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(cell: dict) -> float:
        return cell["score"] if "score" in cell else cell["mean"]

    config = data["config"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label in config["methods"]:
        points = [data["cells"][label][ratio_key(r)] for r in config["ratios"]
                  if ratio_key(r) in data["cells"].get(label, {})]
        ratios = [100 * r for r in config["ratios"] if ratio_key(r) in data["cells"].get(label, {})]
        if points:
            style = "-" if label.startswith(("short-lvlm", DEFAULT_METHOD)) else "--"
            ax.errorbar(ratios, [value(p) for p in points], yerr=[p["sd"] for p in points] if draws > 1 else None,
                        fmt=style, marker="o", capsize=3, label=label)
    ax.set_xticks([100 * r for r in config["ratios"]])
    ax.axhline(value(data["unpruned"]), color="black", linestyle=":", label="unpruned")
    ax.set_xlabel("layers removed (%)")
    ax.set_ylabel(f"{config['bench']} {'/'.join(headline_path(config['bench']))}"
                  + (" (mean ± sd)" if draws > 1 else ""))
    spread = f", {draws} calibration draws" if draws > 1 else ""
    ax.set_title(f"{config['model']} on {config['bench']} ({config['num_questions']} questions{spread})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(data: dict, out: Path) -> None:
    """results.md (table) and accuracy_vs_ratio.png beside results.json."""
    config = data["config"]
    metric = "/".join(headline_path(config["bench"]))
    text = (f"# Layer pruning compared: {config['model']} on {config['bench']}\n\n"
            f"{config['num_questions']} questions, metric: {metric} (retention = pruned / unpruned). "
            f"Calibration: {config['calibration']['num_samples']} samples (hash {config['calibration']['hash']}).\n\n"
            f"{markdown_table(data)}\n\n{ranking_note(data)}![score versus ratio](accuracy_vs_ratio.png)\n")
    write_text_atomically(out / "results.md", text)
    tmp = out / ".accuracy_vs_ratio.tmp.png"
    ratio_plot(data, tmp)
    tmp.replace(out / "accuracy_vs_ratio.png")

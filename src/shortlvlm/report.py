"""Tables and plots of benchmark accuracy for reports."""

from __future__ import annotations


def accuracy_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per setting, overall accuracy and one column per family (percent)."""
    families = list(next(iter(rows.values()))["per_family"])
    lines = [f"| setting | overall | {' | '.join(families)} |", "|---" * (len(families) + 2) + "|"]
    for name, row in rows.items():
        cells = " | ".join(f"{row['per_family'][f]:.1f}" for f in families)
        lines.append(f"| {name} | **{row['accuracy']:.1f}** | {cells} |")
    return "\n".join(lines)


def layer_scores_plot(plan, path) -> None:
    """Bar chart of a plan's per-layer scores, removal candidates by rank highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = plan.layer_scores or []
    order = plan.params.get("removal_order", [])
    count = len(plan.removed_layers) or max(1, round(0.3 * plan.num_layers_before))
    first = set(order[:count])
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(scores)), 3.5))
    colors = ["tab:red" if i in first else "tab:blue" for i in range(len(scores))]
    ax.bar(range(len(scores)), [0 if s != s else s for s in scores], color=colors)
    finite = [s for s in scores if s == s]
    if finite:
        low, high = min(finite), max(finite)
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
    ax.set_xlabel("decoder layer")
    ax.set_ylabel(plan.scorer.get("name", plan.method))
    label = "removed" if plan.removed_layers else f"first {count} in removal order"
    ax.set_title(f"{plan.method}: red = {label}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

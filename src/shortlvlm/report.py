"""Tables and plots of benchmark accuracy for reports."""

from __future__ import annotations

from pathlib import Path


def accuracy_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per setting, overall accuracy and one column per family (percent)."""
    families = list(next(iter(rows.values()))["per_family"])
    lines = [f"| setting | overall | {' | '.join(families)} |", "|---" * (len(families) + 2) + "|"]
    for name, row in rows.items():
        cells = " | ".join(f"{row['per_family'][f]:.1f}" for f in families)
        lines.append(f"| {name} | **{row['accuracy']:.1f}** | {cells} |")
    return "\n".join(lines)


def accuracy_plot(rows: dict[str, dict], path: Path, title: str) -> None:
    """Grouped bars: accuracy per family (and overall) for each setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = ["overall", *next(iter(rows.values()))["per_family"]]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, (name, row) in enumerate(rows.items()):
        values = [row["accuracy"], *row["per_family"].values()]
        ax.bar([x + i * width for x in range(len(families))], values, width, label=name)
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(len(families))], families)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""The leaderboard's chart: each row's estimate with its 95% interval, the bound kinds drawn
apart (exact rows as dots, likelihood lower bounds and upper bounds as triangles pointing to
where the true cost lies), so a bound is never read as an exact figure."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genppl.evaluate.leaderboard import Board

#: marker, colour and legend label per bound kind. The value is a cost: a lower bound on the
#: log-likelihood puts the true cost at or below the value ("<"), an upper bound above (">").
STYLES = {
    "exact": ("o", "tab:blue", "exact"),
    "lower": ("<", "tab:orange", "lower bound on log-likelihood (true cost to the left)"),
    "upper": (">", "tab:green", "upper bound on log-likelihood (true cost to the right)"),
    "point": ("D", "tab:gray", "point estimate"),
}


def draw(board: Board, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = board.rows
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 2.0))
    try:
        seen = set()
        for y, (_, row, _) in enumerate(rows):
            marker, colour, label = STYLES[row.bound]
            low, high = row.interval()
            ax.errorbar(row.value, y, xerr=[[row.value - low], [high - row.value]], fmt=marker,
                        color=colour, capsize=3, markersize=8,
                        label=None if row.bound in seen else label)
            seen.add(row.bound)
        # the row ids alone (they name the estimator where an entry has several): an
        # estimator's full description would squeeze the plot; the table has it
        ax.set_yticks(range(len(rows)), [i for i, _, _ in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"{board.scale.unit} (lower is better)")
        ax.set_title(f"leaderboard {board.scale.name}" + (" (--quick)" if board.quick else ""))
        ax.grid(axis="x", alpha=0.3)
        fig.legend(loc="lower center", fontsize=7, ncol=len(seen), frameon=False)
        fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)

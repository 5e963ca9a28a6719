"""Win rates of the leaderboard (HELM's ``compute_aggregate_row_win_rates``; Liang et al. 2022, §3.5).

For each column with a direction (higher or lower is better), a row's wins are the number of rows strictly
worse plus half of the other rows tied with it, ``(ties - 1) / 2``, divided by ``N - 1`` (N rows with a value).
Columns with fewer than 2 values are skipped. A row's win rate is the mean (or median) over the columns it has
a value in; None when it has none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from statistics import mean, median

__all__ = ["win_rates"]


def win_rates(
    table: Sequence[Sequence[float | None]], lower_is_better: Sequence[bool | None], aggregation: str = "mean"
) -> list[float | None]:
    """Per-row aggregate win rate.

    Parameters
    ----------
    table : rows x columns of values (None = missing)
    lower_is_better : per column; None skips the column
    aggregation : "mean" or "median"
    """
    if aggregation not in ("mean", "median"):
        raise ValueError(f"aggregation must be mean or median, got {aggregation!r}")
    per_row: list[list[float]] = [[] for _ in table]
    for j, lower in enumerate(lower_is_better):
        if lower is None:
            continue
        counts = Counter(row[j] for row in table if row[j] is not None)
        total = sum(counts.values())
        if total < 2:
            continue
        wins, below = {}, 0
        for value in sorted(counts, reverse=lower):
            wins[value] = below + (counts[value] - 1) / 2
            below += counts[value]
        for i, row in enumerate(table):
            if row[j] is not None:
                per_row[i].append(wins[row[j]] / (total - 1))
    agg = mean if aggregation == "mean" else median
    return [agg(r) if r else None for r in per_row]

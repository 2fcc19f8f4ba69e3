"""Figures for impact results (matplotlib; headless-safe)."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=(7, 4))
    return ax


def event_study_plot(
    es: pd.DataFrame, *, pretrend: Any = None, title: str = "", ax: Any = None, alpha: float = 0.05,
    label: str | None = None, color: str = "C0", offset: float = 0.0,
) -> Any:
    """Plot event-time effects: points, pointwise CIs (bars) and uniform band (shaded).

    ``es`` has columns event_time, estimate, ci_low, ci_high and optionally band_low, band_high.
    The pre-trend Wald test (``pretrend``) is written in the corner; the reference line at zero
    and the treatment start (between e = -1 and e = 0) are drawn.
    """
    ax = _axes(ax)
    x = es["event_time"].to_numpy(dtype=float) + offset
    y = es["estimate" if "estimate" in es else "att"].to_numpy(dtype=float)
    if {"band_low", "band_high"} <= set(es.columns) and np.isfinite(es["band_low"]).any():
        ax.fill_between(x, es["band_low"], es["band_high"], color=color, alpha=0.15, step="mid",
                        label=f"{int(round(100 * (1 - alpha)))}% uniform band")
    ax.errorbar(x, y, yerr=[y - es["ci_low"].to_numpy(), es["ci_high"].to_numpy() - y], fmt="o",
                color=color, capsize=3, label=label or f"{int(round(100 * (1 - alpha)))}% pointwise CI")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.axvline(-0.5 + offset if offset else -0.5, color="0.6", ls="--", lw=0.8)
    ax.set_xlabel("years since first support (event time)")
    ax.set_ylabel("effect on " + title if title else "effect")
    if title:
        ax.set_title(title)
    if pretrend is not None:
        ax.text(0.02, 0.97, f"Pre-trend test: {pretrend}", transform=ax.transAxes, va="top", fontsize=8)
    ax.legend(loc="lower right", fontsize=8)
    return ax

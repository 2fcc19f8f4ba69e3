"""One result interface for every estimate a user sees.

Every estimator returns an object with the same face, as statsmodels / pyfixest results do:

* ``tidy()`` -> DataFrame with the common columns ``estimate, se, ci_low, ci_high, pvalue``
  (plus what is specific: ``term``, ``n``, ``df`` ...);
* ``choices`` -> dict of every estimation choice (estimator, weights, clustering, alpha ...),
  shown next to the numbers by ``summary()`` and ``_repr_html_()`` (R ``did`` / ``csdid`` style);
* ``summary()`` -> plain text; ``_repr_html_()`` -> the same in Jupyter;
* ``plot(ax=None)`` -> a matplotlib Axes (a forest plot of ``tidy()`` unless the result has a
  better picture, e.g. an event study);
* ``alpha`` -> the significance level of the intervals (``1 - alpha`` coverage) everywhere.

Two carriers implement it:

* :class:`Result` — a base class for object results (DiD, TWFE, weighting, power, evaluation):
  subclasses define ``tidy()``, ``choices`` and ``title``; the rest comes from here.
* :class:`ResultFrame` — a ``pandas.DataFrame`` subclass for table results (``survey.ratio``,
  ``indicators.compute``, ``balance_table``): it *is* the table (the stable API returns a
  DataFrame) and carries ``choices``/``alpha``/``title`` and the same methods. Derived frames
  (slices, merges) are plain DataFrames, so nothing stale travels with them.

Inference helpers: :func:`inference` gives the CI and two-sided p-value of an estimate with a
normal (``df=None``) or Student t reference.
"""
from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from msme_eval.contract import ESTIMATE_COLUMNS

__all__ = ["Result", "ResultFrame", "inference", "check_alpha", "forest_plot", "choices_lines",
           "ESTIMATE_COLUMNS"]


def inference(estimate: Any, se: Any, alpha: float = 0.05, df: Any = None) -> dict[str, Any]:
    """CI ``estimate -/+ q se`` and two-sided p-value, q the ``1 - alpha/2`` quantile.

    ``df=None`` (or infinite) uses the normal reference, else Student t with ``df`` degrees of
    freedom. Works on scalars and arrays; a missing or non-positive SE gives NaN CI and p.
    """
    check_alpha(alpha)
    est = np.asarray(estimate, dtype=float)
    s = np.asarray(se, dtype=float)
    if df is None:
        q = stats.norm.ppf(1 - alpha / 2)
        p = 2 * stats.norm.sf(np.abs(est / np.where(s > 0, s, np.nan)))
    else:
        d = np.asarray(df, dtype=float)
        d = np.where(d > 0, d, np.nan)
        q = np.where(np.isinf(d), stats.norm.ppf(1 - alpha / 2), stats.t.ppf(1 - alpha / 2, d))
        p = 2 * stats.t.sf(np.abs(est / np.where(s > 0, s, np.nan)), d)
    ok = np.isfinite(s) & (s > 0)
    lo = np.where(ok, est - q * s, np.nan)
    hi = np.where(ok, est + q * s, np.nan)
    p = np.where(ok, p, np.nan)
    if np.ndim(lo) == 0:
        return {"estimate": float(est), "se": float(s), "ci_low": float(lo), "ci_high": float(hi),
                "pvalue": float(p)}
    return {"estimate": est, "se": s, "ci_low": lo, "ci_high": hi, "pvalue": p}


def check_alpha(alpha: float) -> float:
    """``alpha`` must lie in (0, 1): the intervals have ``1 - alpha`` coverage."""
    if not (isinstance(alpha, (int, float)) and 0 < float(alpha) < 1):
        raise ValueError(f"alpha must be a number in (0, 1) (e.g. 0.05 for 95% intervals), got {alpha!r}")
    return float(alpha)


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    if value is None:
        return "none"
    return str(value)


def choices_lines(choices: Mapping[str, Any]) -> list[str]:
    """``{"control": "never_treated"}`` -> ``["control: never_treated"]`` (lists joined)."""
    return [f"{k.replace('_', ' ')}: {_text(v)}" for k, v in choices.items()]


def _float_format(x: float) -> str:
    return f"{x:.4g}" if abs(x) >= 1e4 or (x != 0 and abs(x) < 1e-3) else f"{x:.4f}"


def forest_plot(table: pd.DataFrame, *, ax: Any = None, title: str = "", alpha: float = 0.05,
                label: str | None = None) -> Any:
    """Points with horizontal ``1 - alpha`` intervals, one row per line of ``table``.

    Rows are labelled by ``label`` (default: the first text column, else the row number).
    """
    import matplotlib.pyplot as plt

    t = table.dropna(subset=["estimate"]).reset_index(drop=True)
    for end in ("ci_low", "ci_high"):  # no interval: points only
        if end not in t.columns:
            t[end] = t["estimate"]
    if label is None:
        text = [c for c in t.columns if c not in ESTIMATE_COLUMNS and t[c].dtype == object]
        names = t[text].astype(str).agg(" · ".join, axis=1) if text else t.index.astype(str)
    else:
        names = t[label].astype(str)
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 0.35 * len(t) + 1.2))
    y = np.arange(len(t))[::-1]
    ax.errorbar(t["estimate"], y, xerr=[t["estimate"] - t["ci_low"], t["ci_high"] - t["estimate"]],
                fmt="o", color="#1f4e79", ecolor="#1f4e79", capsize=3)
    ax.axvline(0, color="#555555", lw=0.8, ls="--")
    ax.set_yticks(y, list(names))
    ax.set_xlabel(f"estimate with {round(100 * (1 - alpha))}% interval")
    if title:
        ax.set_title(title)
    return ax


class _Face:
    """The presentation shared by :class:`Result` and :class:`ResultFrame`."""

    title: str = "Estimate"

    @property
    def choices(self) -> dict[str, Any]:  # pragma: no cover - overridden
        return {}

    def tidy(self) -> pd.DataFrame:  # pragma: no cover - overridden
        raise NotImplementedError

    def notes(self) -> list[str]:
        """Anything the reader must know that is not a choice (exclusions, warnings)."""
        return []

    def summary(self) -> str:
        """Plain text: title, every choice, the tidy table, notes."""
        lines = [self.title, "=" * len(self.title), *choices_lines(self.choices), ""]
        lines.append(self.tidy().to_string(index=False, float_format=_float_format))
        if self.notes():
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes()]]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(x)}</li>" for x in choices_lines(self.choices))
        notes = "".join(f"<li>{html.escape(x)}</li>" for x in self.notes())
        table = self.tidy().to_html(index=False, float_format=_float_format, border=0)
        return (f"<div class='msme-result'><b>{html.escape(self.title)}</b>"
                f"<ul>{items}</ul>{table}" + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else "")
                + "</div>")

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """Forest plot: one row per estimate with its ``1 - alpha`` interval."""
        return forest_plot(self.tidy(), ax=ax, title=self.title, alpha=self.alpha, **kwargs)


class Result(_Face):
    """Base of object results. Subclasses define ``tidy()``, ``choices``, ``title`` and ``alpha``."""

    alpha: float = 0.05

    def __str__(self) -> str:
        return self.summary()


class ResultFrame(_Face, pd.DataFrame):
    """A DataFrame that is also a result: ``choices``, ``alpha``, ``title``, ``summary()``, ``plot()``.

    ``estimate_column`` names the column holding the estimate when it is not ``estimate``
    (the indicator table keeps SDMX's ``value``); ``tidy()`` returns the frame with the common
    vocabulary. Operations that derive a new frame return a plain DataFrame.
    """

    _metadata = ["_choices", "_alpha", "_title", "_estimate_column"]

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        return pd.DataFrame

    @classmethod
    def wrap(cls, frame: pd.DataFrame, *, choices: Mapping[str, Any], alpha: float = 0.05,
             title: str = "Estimate", estimate_column: str = "estimate") -> ResultFrame:
        out = cls(frame)
        out.attrs.update(frame.attrs)
        object.__setattr__(out, "_choices", dict(choices))
        object.__setattr__(out, "_alpha", float(alpha))
        object.__setattr__(out, "_title", title)
        object.__setattr__(out, "_estimate_column", estimate_column)
        return out

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        return dict(getattr(self, "_choices", None) or {})

    @property
    def alpha(self) -> float:
        a = getattr(self, "_alpha", None)
        return 0.05 if a is None else float(a)

    @property
    def title(self) -> str:  # type: ignore[override]
        return getattr(self, "_title", None) or "Estimate"

    def tidy(self) -> pd.DataFrame:
        """The table as a plain DataFrame, the estimate column named ``estimate``."""
        col = getattr(self, "_estimate_column", None) or "estimate"
        out = pd.DataFrame(self)
        if col != "estimate" and col in out.columns and "estimate" not in out.columns:
            # the estimate's own interval columns (e.g. csi_ci_low) become ci_low / ci_high
            ci = {f"{col}_{end}": end for end in ("ci_low", "ci_high")
                  if f"{col}_{end}" in out.columns and end not in out.columns}
            out = out.rename(columns={col: "estimate", **ci})
        return out

    def __repr__(self) -> str:
        return pd.DataFrame(self).__repr__()

    def _repr_html_(self) -> str:  # type: ignore[override]
        return _Face._repr_html_(self)

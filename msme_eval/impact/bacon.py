"""Goodman-Bacon (2021) decomposition of the static TWFE coefficient: :func:`bacon` -> :class:`BaconResult`.

With a binary, absorbing treatment on a balanced panel, the TWFE coefficient of
y_it = a_i + l_t + b D_it + e_it is a weighted average of every 2x2 DiD between timing groups
(Goodman-Bacon 2021, J. Econometrics 225(2), Theorem 1, eq. 10a-10g):

    b_TWFE = sum_k s_kU b_kU + sum_{e<l} [ s_el^e b_el^e + s_el^l b_el^l ],   sum of all s = 1,

where b_kU compares timing group k with the never-treated (or always-treated) units U, b_el^e an
earlier group e with a later group l before l is treated (a clean comparison), and b_el^l the
later group l with the earlier group e *after* e is treated ("forbidden": already-treated
controls, biased when effects change over time). The weights s are products of group sizes and
the variance of the treatment dummy within each pair (eq. 10e-10g); they need no outcome.

The 2x2 estimates and weights are diff-diff's ``BaconDecomposition(weights="exact")`` (the
paper's formulas; pinned diff-diff 3.13). Written here: the checks (balanced panel, binary and
absorbing treatment, no missing outcome, each refused with the rows named), timing groups taken
from the treatment column itself as R ``bacondecomp::bacon`` does, the result interface, and the
check that the weighted sum reproduces the TWFE coefficient. Tests: the weighted sum equals
pyfixest's TWFE coefficient to 1e-10, and R bacondecomp's published castle-doctrine numbers
(Cheng and Hoekstra 2013 data) are reproduced.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from msme_eval.results import Result, forest_plot

from ._checks import ImpactInputError, as_float, check_unit_ids, require_columns

__all__ = ["BaconResult", "bacon", "COMPARISON_TYPES"]

COMPARISON_TYPES = {
    "treated_vs_never": "Treated vs untreated",
    "earlier_vs_later": "Earlier vs later treated",
    "later_vs_earlier": "Later vs earlier treated (already-treated controls)",
}


@dataclass
class BaconResult(Result):
    """Every 2x2 comparison (``comparisons``: treated, control, type, estimate, weight), the totals by type
    (``by_type``), ``twfe_estimate`` and the ``forbidden_weight`` on already-treated controls."""

    outcome: str
    treatment: str
    comparisons: pd.DataFrame
    twfe_estimate: float
    n_units: int
    n_periods: int
    n_always_treated: int = 0
    raw: Any = field(default=None, repr=False)

    title = "Goodman-Bacon decomposition of the TWFE coefficient"

    @property
    def by_type(self) -> pd.DataFrame:
        """type, weight (total), estimate (weight-averaged 2x2 estimate), n_comparisons."""
        c = self.comparisons
        rows = []
        for key, label in COMPARISON_TYPES.items():
            sub = c[c["type"] == key]
            w = float(sub["weight"].sum())
            est = float((sub["weight"] * sub["estimate"]).sum() / w) if w > 0 else np.nan
            rows.append({"type": key, "label": label, "weight": w, "estimate": est, "n_comparisons": len(sub)})
        return pd.DataFrame(rows)

    @property
    def forbidden_weight(self) -> float:
        """Total weight on 2x2s that use already-treated units as controls."""
        return float(self.comparisons.loc[self.comparisons["type"] == "later_vs_earlier", "weight"].sum())

    @property
    def choices(self) -> dict[str, Any]:  # type: ignore[override]
        return {"decomposed": f"TWFE coefficient of {self.treatment} (unit and time fixed effects, no covariates)",
                "weights": "exact variance weights, Goodman-Bacon (2021) eq. 10e-10g (diff-diff)",
                "timing groups": f"first period with {self.treatment} = 1",
                "panel": f"balanced, {self.n_units} units x {self.n_periods} periods"}

    def tidy(self) -> pd.DataFrame:
        """One row per 2x2: treated, control, type, estimate, weight; se/ci/p are NaN (a decomposition of a
        point estimate, no inference)."""
        out = self.comparisons.copy()
        for col in ("se", "ci_low", "ci_high", "pvalue"):
            out[col] = np.nan
        return out[["treated", "control", "type", "estimate", "se", "ci_low", "ci_high", "pvalue", "weight"]]

    def notes(self) -> list[str]:
        bt = self.by_type.set_index("type")
        out = [f"TWFE = {self.twfe_estimate:.4f} = sum of weight x 2x2 estimate; {100 * self.forbidden_weight:.1f}% "
               f"of the weight is on later-vs-earlier comparisons (already-treated controls, average "
               f"{bt.loc['later_vs_earlier', 'estimate']:.4f})."]
        if self.n_always_treated:
            out.append(f"{self.n_always_treated} unit(s) treated in every period have a constant treatment and "
                       "serve in the untreated group U (Goodman-Bacon 2021, footnote 11).")
        return out

    def plot(self, ax: Any = None, **kwargs: Any) -> Any:
        """The decomposition plot: each 2x2 estimate against its weight, by comparison type, with the TWFE line."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4))
        for (key, label), marker in zip(COMPARISON_TYPES.items(), ("o", "^", "x")):
            sub = self.comparisons[self.comparisons["type"] == key]
            ax.scatter(sub["weight"], sub["estimate"], marker=marker, label=label, **kwargs)
        ax.axhline(self.twfe_estimate, color="#555555", lw=0.8, ls="--", label=f"TWFE {self.twfe_estimate:.3f}")
        ax.set_xlabel("weight")
        ax.set_ylabel("2x2 DiD estimate")
        ax.set_title(self.title)
        ax.legend(fontsize=8)
        return ax

    def forest(self, ax: Any = None) -> Any:
        """The totals by type as a forest-style chart (points only: no intervals)."""
        return forest_plot(self.by_type, ax=ax, title=self.title, label="label")


def _check_panel(frame: pd.DataFrame, outcome: str, treatment: str, unit: str) -> None:
    """Balanced panel, no missing outcome, binary absorbing treatment; each refusal names the rows."""
    bad_y = frame.index[frame["_y"].isna()]
    if len(bad_y):
        raise ImpactInputError(f"bacon(): outcome {outcome!r} is missing in {len(bad_y)} row(s) (first: "
                               f"{list(bad_y[:5])}); the decomposition needs a balanced panel: impute or drop "
                               "those units explicitly.")
    d = frame["_d"]
    if not d.isin([0.0, 1.0]).all():
        rows = list(frame.index[~d.isin([0.0, 1.0])][:5])
        raise ImpactInputError(f"bacon(): treatment {treatment!r} must be 0/1 with no missing values (rows {rows}).")
    n_t = frame["_t"].nunique()
    per_unit = frame.groupby("_u")["_t"].nunique()
    if (per_unit < n_t).any() or frame.duplicated(["_u", "_t"]).any():
        units = list(per_unit.index[per_unit < n_t][:5])
        raise ImpactInputError(f"bacon(): the panel is not balanced ({int((per_unit < n_t).sum())} {unit}(s) miss "
                               f"periods, e.g. {units}); Goodman-Bacon (2021) decomposes TWFE on a balanced panel. "
                               "Restrict to units observed in every period.")
    ordered = frame.sort_values(["_u", "_t"])
    drops = ordered.groupby("_u")["_d"].diff() < 0
    if drops.any():
        units = list(dict.fromkeys(ordered.loc[drops, "_u"]))[:5]
        raise ImpactInputError(f"bacon(): treatment {treatment!r} switches off (1 -> 0) for {unit}(s) {units}; the "
                               "decomposition needs an absorbing (staggered adoption) treatment.")


def bacon(data: pd.DataFrame, outcome: str, treatment: str, *, unit: str = "firm_id",
          time: str = "year") -> BaconResult:
    """Goodman-Bacon decomposition of the TWFE coefficient of ``treatment`` (0/1, absorbing) on ``outcome``
    with ``unit`` and ``time`` fixed effects, on a balanced panel (module docstring).

    Timing groups are the first period with ``treatment == 1`` (units never treated, or treated in every
    period, form the untreated group U). Returns a :class:`BaconResult` (``comparisons``, ``by_type``,
    ``twfe_estimate``, ``forbidden_weight``, ``plot()``).
    """
    from diff_diff import BaconDecomposition

    require_columns(data, [outcome, treatment, unit, time], "bacon()")
    check_unit_ids(data, unit)
    frame = pd.DataFrame({"_y": as_float(data, outcome), "_d": as_float(data, treatment),
                          "_u": data[unit].to_numpy(), "_t": as_float(data, time)}, index=data.index)
    _check_panel(frame, outcome, treatment, unit)
    first = frame[frame["_d"] == 1].groupby("_u")["_t"].min()
    t_min = frame["_t"].min()
    frame["_g"] = frame["_u"].map(first).fillna(0.0).to_numpy()
    always = int((first <= t_min).sum())
    frame.loc[frame["_g"] <= t_min, "_g"] = 0.0  # constant D = 1: in U (footnote 11), as diff-diff remaps
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(always|remap|first_treat).*")
        raw = BaconDecomposition(weights="exact").fit(frame.reset_index(drop=True), "_y", "_u", "_t", "_g")
    comp = raw.to_dataframe().rename(columns={"treated_group": "treated", "control_group": "control",
                                              "comparison_type": "type"})
    comp["control"] = comp["control"].map(lambda c: "untreated" if c == "never_treated" else c)
    comp = comp[["treated", "control", "type", "estimate", "weight", "n_treated", "n_control"]]
    return BaconResult(outcome, treatment, comp.reset_index(drop=True), float(raw.twfe_estimate),
                       int(frame["_u"].nunique()), int(frame["_t"].nunique()), always, raw)

"""Side-by-side tables of several impact results: :func:`model_table` -> :class:`ModelTable`.

    tab = me.impact.model_table([did_nt, did_nyt, twfe_fit, ipw_fit], labels={"post": "ATT"})
    tab                       # HTML in Jupyter
    tab.to_latex()            # booktabs (needs booktabs, tabularx, makecell, threeparttable)
    tab.to_excel("att.xlsx")  # full-precision numbers, text cells stored as text
    tab.to_docx("att.docx")   # a Word table

Rows are the estimates (for a DiD result the overall row of each requested aggregation of R
``did::aggte``; for TWFE the named coefficients; for weighting the ATT), each cell
``estimate`` with stars and ``(se)`` under it, or ``[ci_low, ci_high]`` (``show="ci"``), then one
row per specification choice (estimator, control group, base period, anticipation, covariates,
clustering, weights) and the sample (N firms, N obs), and for TWFE columns the Goodman-Bacon weight
on already-treated controls (:mod:`msme_eval.impact.bacon`); columns are the models. Every number is
taken unrounded from the result's own ``tidy()`` (kept in :attr:`ModelTable.values`); only the
display rounds.

Formatting and rendering are maketables' (the engine of ``pyfixest.etable``, installed with
pyfixest): ``etable`` itself accepts only pyfixest models, so each result enters through
maketables' documented plug-in protocol (``__maketables_coef_table__`` ...), and maketables
builds the cells (stars, SE or CI layout), the booktabs LaTeX, the Word table (python-docx) and
the HTML (great_tables). maketables does not escape LaTeX, so the LaTeX table is built from
escaped text. Stars: ``*`` p < 0.10, ``**`` p < 0.05, ``***`` p < 0.01 by default (two-sided
p-values of each result, normal or t reference as that result uses).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from msme_eval.contract import ESTIMATE_COLUMNS
from msme_eval.io import atomic_write, write_excel_safe

from ._checks import ImpactInputError
from .results import DidResult, Estimate
from .twfe import TwfeResult
from .weighting import WeightingResult

__all__ = ["ModelTable", "model_table", "SPEC_ROWS", "AGGREGATION_LABELS"]

NA = "n/a"
SPEC_ROWS = ("Estimator", "Control group", "Base period", "Anticipation", "Covariates", "Clustering",
             "Weights", "N firms", "N obs")
BACON_ROW = "TWFE weight on already-treated controls"
AGGREGATION_LABELS = {"simple": "ATT", "group": "ATT (by cohort)", "dynamic": "ATT (event time)",
                      "calendar": "ATT (calendar)"}
_CONTROL = {"never_treated": "never treated", "not_yet_treated": "not yet treated"}
_METHOD = {"dr": "doubly robust", "ipw": "IPW", "reg": "outcome regression"}


@dataclass(frozen=True)
class Column:
    """One model of the table: its estimate rows (unrounded), specification and alpha."""

    name: str
    outcome: str
    estimates: pd.DataFrame  # index: row label; columns estimate, se, ci_low, ci_high, pvalue
    spec: dict[str, Any]
    alpha: float
    notes: tuple[str, ...] = ()


def _listing(values: Sequence[str] | None) -> str:
    return ", ".join(map(str, values)) if values else "none"


def _did_column(res: DidResult, name: str, aggregations: Sequence[str]) -> Column:
    """Overall row of each aggregation (R ``aggte``) from ``res.tidy()``; choices from ``settings``."""
    tidy = res.tidy()
    over = tidy[tidy["level"] == "overall"].set_index("aggregation")
    rows, notes = {}, []
    for kind in aggregations:
        if kind not in over.index:
            notes.append(f"{name}: no overall {kind} aggregation (e.g. bootstrap event study); row left empty.")
            continue
        rows[AGGREGATION_LABELS[kind]] = over.loc[kind, list(ESTIMATE_COLUMNS)]
    s, n = res.settings, res.counts
    spec = {
        "Estimator": f"Callaway-Sant'Anna ({_METHOD.get(s['method'], s['method'])})",
        "Control group": _CONTROL.get(s["control"], s["control"]),
        "Base period": s["base_period"], "Anticipation": str(int(s["anticipation"])),
        "Covariates": _listing(s["covariates"]),
        "Clustering": f"clustered by {s['cluster'] or s['unit']} (influence function)",
        "Weights": s["weight"] or "none", "N firms": int(n["n_units"]), "N obs": int(n["n_obs"]),
    }
    est = pd.DataFrame([r.to_numpy(dtype=float) for r in rows.values()], index=list(rows),
                       columns=list(ESTIMATE_COLUMNS), dtype=float)
    return Column(name, res.outcome, est, spec, res.alpha, tuple(notes))


def _bacon_share(res: TwfeResult) -> str:
    """Goodman-Bacon weight on later-vs-earlier 2x2s, or why it is not available (shown, not hidden)."""
    try:
        return f"{100 * res.bacon().forbidden_weight:.1f}%"
    except ImpactInputError as err:
        reason = "unbalanced panel" if "not balanced" in str(err) else "not a single 0/1 treatment without covariates"
        return f"{NA} ({reason})"


def _twfe_column(res: TwfeResult, name: str, terms: Sequence[str] | None, bacon: bool) -> Column:
    tidy = res.tidy().set_index("term")
    keep = list(tidy.index) if terms is None else [t for t in tidy.index if t in set(terms)]
    spec = {
        "Estimator": "TWFE (OLS, unit and time FE)",
        "Control group": "implicit: never, not yet and already treated",
        "Base period": NA, "Anticipation": NA, "Covariates": _listing(res.covariates),
        "Clustering": res.vcov, "Weights": "none", "N firms": res.n_units, "N obs": int(res.nobs),
    }
    if bacon:
        spec[BACON_ROW] = _bacon_share(res)
    return Column(name, res.outcome, tidy.loc[keep, list(ESTIMATE_COLUMNS)].astype(float), spec, res.alpha)


def _weighting_column(res: WeightingResult, name: str) -> Column:
    tidy = res.tidy()
    est = tidy[list(ESTIMATE_COLUMNS)].astype(float).set_axis(["ATT"])
    matched = res.method != "ipw"
    spec = {
        "Estimator": f"nearest-neighbour matching (M={res.n_neighbors})" if matched
        else "IPW (logit score, Hajek)",
        "Control group": "untreated, " + ("matched" if matched else "reweighted"),
        "Base period": NA, "Anticipation": NA, "Covariates": _listing(res.covariates),
        "Clustering": f"none ({res.se_method})", "Weights": "none",
        "N firms": int(res.n_treated + res.n_control), "N obs": int(res.n_treated + res.n_control),
    }
    return Column(name, res.outcome, est, spec, res.alpha)


_ALIASES = {"Estimator": ("estimator", "method"), "Control group": ("control group", "control"),
            "Base period": ("base period",), "Anticipation": ("anticipation",), "Covariates": ("covariates",),
            "Clustering": ("clustering", "cluster", "se", "vcov"), "Weights": ("weights", "weight")}


def _generic_spec(choices: Mapping[str, Any], tidy: pd.DataFrame) -> dict[str, Any]:
    """Specification rows from a result's ``choices`` (first matching key) and its sample counts from
    ``tidy()`` (``nobs``/``n``; firms = treated + control or focal + comparison units)."""
    ch = {k.lower().replace("_", " "): v for k, v in choices.items()}
    spec: dict[str, Any] = {}
    for row, keys in _ALIASES.items():
        val = next((ch[k] for k in keys if k in ch), None)
        spec[row] = _listing(val) if isinstance(val, (list, tuple)) else (NA if val is None else str(val))
    first = tidy.iloc[0] if len(tidy) else pd.Series(dtype=object)
    pairs = [("n_treated", "n_control"), ("n_focal", "n_comparison")]
    firms = next((int(first[a]) + int(first[b]) for a, b in pairs if a in first and b in first), None)
    nobs = next((int(first[c]) for c in ("nobs", "n") if c in first), firms)
    spec["N firms"], spec["N obs"] = (NA if firms is None else firms), (NA if nobs is None else nobs)
    return spec


def _generic_column(res: Any, name: str) -> Column:
    """Any result with ``tidy()`` and ``choices``: rows labelled by term/level, choices by key."""
    tidy = res.tidy()
    missing = [c for c in ESTIMATE_COLUMNS if c not in tidy.columns]
    if missing:
        raise TypeError(f"model_table(): {type(res).__name__}.tidy() lacks {missing}; pass DiD, TWFE, "
                        "weighting or any result whose tidy() has estimate, se, ci_low, ci_high, pvalue.")
    label = next((c for c in ("term", "level", "method") if c in tidy.columns), None)
    index = tidy[label].astype(str) if label else pd.Index([getattr(res, "term", "estimate")] * len(tidy))
    est = tidy[list(ESTIMATE_COLUMNS)].astype(float).set_axis(list(index))
    if est.index.duplicated().any():
        dup = sorted(set(est.index[est.index.duplicated()]))
        raise ValueError(f"model_table(): {name} has repeated row labels {dup}; pass a result with one row per term.")
    spec = _generic_spec(dict(getattr(res, "choices", {})), tidy)
    outcome = str(getattr(res, "outcome", getattr(res, "title", name)))
    return Column(name, outcome, est, spec, float(getattr(res, "alpha", 0.05)))


def _column(res: Any, name: str, aggregations: Sequence[str], terms: Sequence[str] | None, bacon: bool) -> Column:
    if isinstance(res, DidResult):
        return _did_column(res, name, aggregations)
    if isinstance(res, TwfeResult):
        return _twfe_column(res, name, terms, bacon)
    if isinstance(res, WeightingResult):
        return _weighting_column(res, name)
    if isinstance(res, Estimate) or hasattr(res, "tidy"):
        return _generic_column(res, name)
    raise TypeError(f"model_table(): cannot tabulate a {type(res).__name__}; pass msme_eval.impact results "
                    "(did, twfe, weighting ...) or anything with tidy() and choices.")


# --------------------------------------------------------------------------- maketables adapter
class _Model:
    """One :class:`Column` in maketables' plug-in protocol (maketables.extractors.PluginExtractor)."""

    def __init__(self, col: Column, labels: Mapping[str, str], text: Callable[[str], str]) -> None:
        est = col.estimates.rename(index=lambda r: text(labels.get(r, r)))
        self._coef = pd.DataFrame({"b": est["estimate"], "se": est["se"], "p": est["pvalue"],
                                   "lo": est["ci_low"], "hi": est["ci_high"]})
        self._coef.index.name = "Coefficient"
        self._depvar = text(col.outcome)

    @property
    def __maketables_coef_table__(self) -> pd.DataFrame:
        return self._coef

    @property
    def __maketables_depvar__(self) -> str:
        return self._depvar

    def __maketables_stat__(self, key: str) -> Any:
        return None


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"$<$",
        ">": r"$>$"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters (``_`` -> ``\\_``, ``<`` -> ``$<$`` ...) in plain text."""
    return re.sub(r"[\\&%$#_{}~^<>]", lambda m: _TEX[m.group()], str(text))


def _plain(text: str) -> str:
    return str(text)


def _spec_text(value: Any) -> str:
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}"
    return NA if value is None else str(value)


@dataclass
class ModelTable:
    """Several results side by side (module docstring). ``values``: the unrounded numbers, one row per
    (model, row); ``specification``: the choice rows; ``df``: the displayed cells; ``to_latex()``,
    ``to_excel()``, ``to_docx()``, ``_repr_html_()``."""

    columns: list[Column]
    show: str = "se"
    stars: bool = True
    signif: tuple[float, float, float] = (0.01, 0.05, 0.10)
    digits: int = 3
    labels: dict[str, str] = field(default_factory=dict)
    caption: str | None = None
    named: bool = True

    # ------------------------------------------------------------------ data
    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def alpha(self) -> float:
        return self.columns[0].alpha

    @property
    def values(self) -> pd.DataFrame:
        """model, outcome, row, estimate, se, ci_low, ci_high, pvalue (unrounded, from each ``tidy()``)."""
        parts = []
        for c in self.columns:
            e = c.estimates.rename(index=lambda r: self.labels.get(r, r))
            parts.append(e.rename_axis("row").reset_index().assign(model=c.name, outcome=c.outcome))
        cols = ["model", "outcome", "row", *ESTIMATE_COLUMNS]
        return pd.concat(parts, ignore_index=True)[cols]

    @property
    def specification(self) -> pd.DataFrame:
        """One row per specification choice and sample size, one column per model (raw values)."""
        rows = self.spec_rows
        return pd.DataFrame({c.name: [c.spec.get(r, NA) for r in rows] for c in self.columns},
                            index=pd.Index(rows, name="row"))

    @property
    def spec_rows(self) -> list[str]:
        """SPEC_ROWS, plus the Goodman-Bacon row when a TWFE column carries it."""
        return list(SPEC_ROWS) + ([BACON_ROW] if any(BACON_ROW in c.spec for c in self.columns) else [])

    def notes(self) -> list[str]:
        lvl = round(100 * (1 - self.alpha))
        cell = "standard errors in parentheses" if self.show == "se" else f"{lvl}% confidence intervals in brackets"
        lines = [f"Estimates with {cell}."]
        if self.stars:
            a, b, c = self.signif
            lines.append(f"* p < {c:g}, ** p < {b:g}, *** p < {a:g} (two-sided).")
        lines += [n for col in self.columns for n in col.notes]
        return lines

    # ------------------------------------------------------------------ rendering
    def _coef_fmt(self) -> str:
        d, star = self.digits, "*" if self.stars else ""
        if self.show == "se":
            return f"b:.{d}f{star} \n (se:.{d}f)"
        return f"b:.{d}f{star} \n [lo:.{d}f, hi:.{d}f]"

    def etable(self, text: Callable[[str], str] = _plain) -> Any:
        """The maketables ``ETable`` of this table, every text passed through ``text``."""
        try:
            from maketables import ETable
        except ImportError as err:  # pragma: no cover - installed with pyfixest 0.60
            raise ImportError("model tables need maketables: pip install 'msme-eval[tables]'") from err

        models = [_Model(c, self.labels, text) for c in self.columns]
        spec = {text(r): [text(_spec_text(c.spec.get(r))) for c in self.columns] for r in self.spec_rows}
        heads = [text(n) for n in self.names] if self.named else None
        return ETable(models, coef_fmt=self._coef_fmt(), signif_code=list(self.signif), model_stats=[],
                      custom_model_stats=spec, show_fe=False, model_heads=heads,
                      head_order="dh", notes=text(" ".join(self.notes())),
                      caption=None if self.caption is None else text(self.caption))

    @property
    def df(self) -> pd.DataFrame:
        """The displayed cells (rows: estimates then specification; columns: outcome / model name)."""
        return self.etable().df

    def to_latex(self, path: str | Path | None = None) -> str:
        """booktabs/tabularx LaTeX (packages: booktabs, tabularx, makecell, threeparttable); written to
        ``path`` when given."""
        tex = self.etable(tex_escape).make(type="tex")
        if path is not None:
            atomic_write(path, lambda tmp: Path(tmp).write_text(tex, encoding="utf-8"))
        return tex

    def to_docx(self, path: str | Path) -> Path:
        """A Word document holding the table (python-docx, via maketables)."""
        doc = self.etable().make(type="docx")
        return atomic_write(path, lambda tmp: doc.save(str(tmp)))

    def to_excel(self, path: str | Path) -> Path:
        """One sheet: for each estimate row its estimate, se, ci_low, ci_high and pvalue lines (full
        precision numbers), then the specification rows; text cells are stored as text (no formulas)."""
        return write_excel_safe(self.long_table(), path, sheet_name="models")

    def long_table(self) -> pd.DataFrame:
        """row, statistic, one column per model: numbers unrounded, specification rows as text/ints."""
        vals = self.values
        rows = []
        for label in dict.fromkeys(vals["row"]):
            sub = vals[vals["row"] == label].set_index("model")
            for stat in ESTIMATE_COLUMNS:
                rows.append({"row": label, "statistic": stat,
                             **{n: (sub.loc[n, stat] if n in sub.index else None) for n in self.names}})
        for r in self.spec_rows:
            rows.append({"row": r, "statistic": "", **{c.name: c.spec.get(r, NA) for c in self.columns}})
        return pd.DataFrame(rows, columns=["row", "statistic", *self.names])

    def _repr_html_(self) -> str:
        return self.etable().make(type="gt").as_raw_html()

    def __str__(self) -> str:
        return self.df.to_string()

    def __repr__(self) -> str:
        return f"ModelTable({len(self.columns)} models: {', '.join(self.names)})"


def _names(results: Sequence[Any], names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [f"({i + 1})" for i in range(len(results))]
    names = [str(n) for n in names]
    if len(names) != len(results):
        raise ValueError(f"model_table(): {len(names)} names for {len(results)} results; give one name per result.")
    if len(set(names)) != len(names):
        raise ValueError(f"model_table(): names must be distinct, got {names}.")
    return names


def _check_options(show: str, aggregations: Sequence[str], signif: Sequence[float], digits: int) -> None:
    if show not in ("se", "ci"):
        raise ValueError(f"model_table(): show must be 'se' (standard errors) or 'ci' (intervals), got {show!r}.")
    bad = [a for a in aggregations if a not in AGGREGATION_LABELS]
    if bad or not aggregations:
        raise ValueError(f"model_table(): aggregations must be among {list(AGGREGATION_LABELS)}, "
                         f"got {list(aggregations)}.")
    if len(signif) != 3 or not all(0 < s < 1 for s in signif) or not signif[0] < signif[1] < signif[2]:
        raise ValueError(f"model_table(): signif must be three increasing p-value cut-offs in (0, 1), got {signif}.")
    if not (isinstance(digits, int) and 0 <= digits <= 10):
        raise ValueError(f"model_table(): digits must be an integer 0-10, got {digits!r}.")


def model_table(
    results: Sequence[Any] | Mapping[str, Any],
    *,
    names: Sequence[str] | None = None,
    aggregations: Sequence[str] = ("simple",),
    terms: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    show: str = "se",
    stars: bool = True,
    signif: Sequence[float] = (0.01, 0.05, 0.10),
    digits: int = 3,
    caption: str | None = None,
    bacon: bool = True,
) -> ModelTable:
    """Compare results side by side (``etable``-like): one column per result, one row per estimate, then
    the specification rows (see the module docstring).

    ``results``: a list, or a mapping name -> result (then ``names`` come from its keys). DiD results
    contribute the overall row of each of ``aggregations`` ("simple", "group", "dynamic", "calendar";
    R ``did::aggte``); TWFE results their coefficients (``terms`` to keep some); weighting results
    their ATT; anything else with ``tidy()`` its rows. ``labels`` renames rows, e.g. ``{"post": "ATT"}``
    to put a TWFE coefficient on the DiD row. ``show="ci"`` prints ``[ci_low, ci_high]`` (each result's
    own ``1 - alpha`` interval; all results must share ``alpha``) instead of ``(se)``. ``bacon``: add the
    row "TWFE weight on already-treated controls" (Goodman-Bacon 2021, :func:`msme_eval.impact.bacon`) for
    TWFE columns, or why it is not available.
    """
    if isinstance(results, Mapping):
        names, results = list(results.keys()) if names is None else names, list(results.values())
    results = list(results)
    if not results:
        raise ValueError("model_table(): no results given; pass a list of did/twfe/weighting results.")
    _check_options(show, aggregations, signif, digits)
    cols = [_column(r, n, aggregations, terms, bacon) for r, n in zip(results, _names(results, names))]
    alphas = sorted({c.alpha for c in cols})
    if show == "ci" and len(alphas) > 1:
        raise ValueError(f"model_table(show='ci'): the results use different alpha {alphas}; refit with one alpha "
                         "or show='se'.")
    return ModelTable(cols, show=show, stars=stars, signif=tuple(float(s) for s in signif), digits=digits,
                      labels=dict(labels or {}), caption=caption, named=names is not None)

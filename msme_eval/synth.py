"""Deterministic synthetic ASEAN MSME firm-year panel with planted, known programme effects.

    data = synth.generate(n_firms=20_000, years=range(2015, 2025), seed=0)
    data.panel, data.macro, data.targets, data.truth, data.truth_gt, data.calibration
    synth.write_sample("data/raw/sample", data)

Everything is drawn from one ``numpy.random.Generator(PCG64(seed))`` with a fixed order of
draws, fully vectorised over firms (loops run over the ~10 years or the 40 strata only), so
the same arguments give identical output; 20,000 firms take ~1 s, a million ~15-30 s and
~3 GB peak memory (the panel itself is ~1.5 GB).

Population and survey design
----------------------------
* Ten AMS (ISO3). Each country has a population of enterprises ``N_c`` per size class
  (strata = country x size class). Where the project sources publish a count the weights
  sum to it in every year: IDN 64,194,056 MSMEs, KHM 512,870 MSMEs, THA 3.19 m SMEs (large
  firms added from the published MSME share of enterprises), LAO 133,997 enterprises (the
  published census split by size), PHL 1,080,810 enterprises. For BRN, MYS, MMR, SGP and
  VNM the totals are a SYNTHETIC scale (marked ``synthetic`` in data/calibration.csv).
  The split of MSMEs into micro/small/medium is published only for LAO; elsewhere it is
  chosen so that the MSME employment share can be met with large firms of plausible size
  (small:medium at the Lao census ratio unless more medium firms are needed, as for BRN);
  see ``params["population_notes"]``. No population growth is modelled.
* Sample allocation: countries get sample sizes proportional to ``N_c ** 0.25``; within a
  country 45/25/17/13 % of firms are micro/small/medium/large, capped at 90 % of the
  stratum population (so large firms are sampled with near-certainty in small countries and
  micro firms with tiny probability); every stratum gets >= 20 firms (hence n_firms >=
  1000). PSUs (districts, each in one region; 1 per ~25 sampled firms, >= 2) are nested in
  strata, so every stratum keeps >= 2 PSUs with firms in every year.
* Weights are cross-sectional and recalibrated each year:
  ``w_it = 1 + (N_h - n_ht) * f_psu / sum_{alive j in h,t} f_psu(j)``, with ``f_psu`` a
  lognormal PSU non-response factor, so ``sum_i w_it = N_h`` exactly in every stratum-year
  and ``w >= 1``.

Calibration (see ``data/calibration.csv``; achieved values in ``SyntheticData.calibration``)
------------------------------------------------------------------------------------------
Weighted MSME shares of enterprises (exact by the stratum counts), of employment, of value
added relative to GDP, of business loans and of exports are matched in the calibration year
(the figure's data year clipped to the panel window; 2019 for undated regional figures) by
solving one scale factor per country for the LARGE firms' employees, turnover, loans and
export intensity (linear; exports by bisection because intensity is capped at 0.95; if
even capped large exporters fall short, MSME export intensity is scaled down instead).
Small samples: a country's largest large firm is made an exporter/borrower if none is.
Macro: ``employment_total``, ``business_loans_total`` and ``exports_total`` are the
weighted totals over all enterprises (so macro-based and panel-based shares agree);
``gdp = (weighted value added of all enterprises) / 0.85`` (enterprises assumed to produce
85 % of GDP), which makes MSME VA / GDP equal the published share in the calibration year.
GDP levels are therefore synthetic, not national-accounts figures.
Money is in local currency units. ``usd_per_lcu`` uses ILLUSTRATIVE approximate rates
(``LCU_PER_USD`` below, c. 2019 magnitudes, held constant) - they are not sourced, serve
only the synthetic sample (ASEAN aggregates, Cambodia's USD size thresholds) and must not be
used for real data.

Size classes: ``size_class`` is the firm's latent class (its stratum); employees, turnover and
assets are drawn inside the class box implied by the country's legal definition for the
firm's sector group, read from data/size_definitions.yaml through
``sizeclass.class_bounds`` (no limit is written in this module: edit the YAML), with
margins, so any AND/OR/majority rule gives the latent class (exception: large firms'
turnover may fall below the large threshold where the rule makes them large anyway, see
``_turnover_binds_large``; where a definition is incomplete the employee box also stays
inside the ASEAN harmonised band that then settles the class); drift and programme effects
move a few firm-years across thresholds (``sizeclass.classify`` agrees on ~99.5 % of rows).
Criteria without a
legal bound use illustrative USD ranges per class (x ``_INCOME_MULT`` for richer AMS).

Dynamics and programmes
-----------------------
* Untreated potential outcomes:
  ``log Y0_it = a_i + lambda_t + gamma_c (t - t_mid) + gamma_s (t - t_mid) + e_it`` for
  turnover, with firm fixed effect ``a_i`` (drawn within the class box, correlated within
  PSU), common year shocks ``lambda_t`` (incl. a 2020-21 dip), country and sector linear
  trends and AR(1) noise ``e_it``; assets follow half the common/trend terms. Untreated
  employment is stationary: ``E0_it = round(E_i exp(eta_it))`` with mean-zero AR(1) ``eta``
  (no trend), so parallel trends hold for employees in levels as well as in logs.
* Entry: firms born inside the window enter the panel in their birth year. Exit: annual
  hazard ``h_it = h(size, age, registered, sector, year) * (1 - delta_i r(e_{t-1}))`` - a
  function of fixed observables, calendar year and treatment ONLY, never of outcome shocks,
  drawn with common random numbers ``U_it`` (alive under treatment and without it use the
  same ``U_it``). Firms leave the panel after exit (no gaps).
* Programmes (``programme_type`` finance / market_access / capacity_building): staggered
  cohorts ``first_treated`` in 2018..2023 (within the window), never-treated majority.
  Selection on observables: propensity ``pi_k f_k(x)`` with ``f_k`` favouring registered,
  small and urban firms (finance, market access) and women-owned, micro and rural firms
  (capacity building); large firms are never supported. ``f_k`` is normalised within each
  country x sector cell, so every programme type has the same expected country x sector mix
  as the never-treated. Selection happens once, from fixed observables (an approved
  application with a scheduled start year ``g``): every selected firm born before ``g``
  carries ``first_treated = g``; it receives support (and effects) only while operating,
  so a selected firm that exits before ``g`` keeps ``first_treated = g`` with zero support
  (approved, never paid). Treatment status therefore never depends on later survival, and
  the never-treated are not enriched with firms that died before their turn. No
  anticipation: hazards and outcomes before ``g`` are untreated.
* PARALLEL TRENDS hold UNCONDITIONALLY for log turnover and employees: the only
  time-varying terms are common shocks, country/sector trends (whose mix does not depend on
  treatment) and mean-zero noise independent of treatment (employment has no trend at all).
  On survivors, treatment shifts exit slightly, which moves the survivor mix by a negligible
  second-order amount (exit never depends on outcome shocks).
  For SURVIVAL, parallel trends hold only CONDITIONAL on the hazard covariates
  (size_class, registered, sector in G/I, age i.e. birth_year): programmes select on size and
  registration, which also drive exit, so an unadjusted survival comparison is biased.
* Planted effects for event time ``e = t - g >= 0`` (zero before):
  ``tau_it = beta_k * m_k(female, rural) * nu_i * r(e)``, ``r(e) = 1 - exp(-(e + 1) / 2)``
  (0.39, 0.63, 0.78, ... grows with exposure), ``nu_i`` mean-one lognormal (sd 0.3).
  log turnover: ``log Y1 = log Y0 + tau``. Employees: ``E1 = round(E0* exp(tau))`` vs
  ``E0 = round(E0*)`` (integers, the unit effect is ``E1 - E0``). Survival: hazard multiplied
  by ``1 - min(0.9, delta_k m_k nu_i) r(e_{t-1})``. Parameters in ``EFFECTS``,
  ``FEMALE_MULT``, ``RURAL_MULT``.

Truth (``SyntheticData.truth``; columns outcome, programme_type, aggregation, level, att,
n_units)
-----------------------------------------------------------------------------------------
``ATT(g,t)`` (``truth_gt``) is the UNWEIGHTED sample mean of the planted unit-level effects
over treated units of cohort ``g`` (and programme type, or all types) in cell ``t``:
log_turnover and employees - units observed in year ``t`` (alive under their actual
treatment), effect ``log Y1 - log Y0`` / ``E1 - E0``; survival - units of the cohort alive
in the base year ``g - 1`` (for ``t >= g - 1``; for ``t < g - 1`` units present in ``t``),
effect ``1[alive_t under treatment] - 1[alive_t untreated]`` (0 at ``e = 0``: support
lowers exit from ``g`` onwards, so it first shows in ``t = g + 1``). Pre-treatment cells
are 0. Aggregations follow R ``did::aggte`` with
group-size weights ``p_g`` = number of treated units of cohort ``g``:
simple = sum_{t>=g} p_g ATT(g,t) / sum_{t>=g} p_g  (level "all");
group = mean_{t>=g} ATT(g,t) per cohort (level = cohort), overall = sum p_g theta(g)/sum p_g;
dynamic = sum_g p_g ATT(g,g+e) / sum_g p_g per event time e (incl. negative e; level = e),
overall = mean over e >= 0; calendar = sum_{g<=t} p_g ATT(g,t)/sum p_g per year, overall =
mean over years. Subgroup (simple aggregation within the subgroup, p_g counted in it):
levels "owner_female=True", "owner_female=False", "urban=False" (rural),
"size_class=micro", "young=True" (age g - birth_year <= 5 at treatment).
``level`` is a string ("2019", "-2", "all", "overall", "owner_female=True").
Survival for estimators: build ``alive_t`` (1 while observed, 0 after the last year) for
firms observed in ``g - 1`` and compare cohort ``g`` with never-treated firms within cells
of the hazard covariates (size_class, registered, sector G/I, birth_year).

Weights: ``max/min`` weight within a country-year exceeds 1,000 in Indonesia (micro weights
~5e4, large firms ~1-10), by design of a stratified sample with near-certainty large strata;
``io.read_panel`` reports this as the ``weights_dispersed`` warning.

Targets: illustrative programme targets per country for K01..K10 (DESIGN.md section 4),
baseline 2018 computed from the synthetic panel, target 2025 by the documented rule in
``TARGET_RULES``; ``source`` says "synthetic illustrative target".
"""
from __future__ import annotations

import io as _io
import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import sizeclass
from .contract import COUNTRIES, PROGRAMME_TYPES, SIZE_CLASSES

__all__ = [
    "SyntheticData", "generate", "write_sample", "write_partitioned", "chunk_plan",
    "calibration_targets", "EFFECTS",
    "LCU_PER_USD", "PROGRAMMES", "TARGET_RULES",
]

# ------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------
#: ILLUSTRATIVE, approximate local-currency units per US dollar (c. 2019 magnitudes), held
#: constant over time. NOT sourced; for the synthetic sample only.
LCU_PER_USD: dict[str, float] = {
    "BRN": 1.35, "KHM": 4050.0, "IDN": 14200.0, "LAO": 8700.0, "MYS": 4.15,
    "MMR": 1500.0, "PHL": 51.0, "SGP": 1.36, "THA": 31.0, "VNM": 23200.0,
}
ENTERPRISE_VA_SHARE_OF_GDP = 0.85  # synthetic: enterprises' value added / GDP
COHORTS: tuple[int, ...] = tuple(range(2018, 2024))
PROGRAMMES: dict[str, str] = {
    "finance": "MSME Credit Access Facility",
    "market_access": "Go-Global Market Access Programme",
    "capacity_building": "Enterprise Skills and Capacity Programme",
}
#: long-run effects (r(e) -> 1): log turnover (log points), employees (log of latent
#: employment), survival (proportional reduction of the annual exit hazard)
EFFECTS: dict[str, dict[str, float]] = {
    "finance": {"log_turnover": 0.12, "employees": 0.10, "survival": 0.40},
    "market_access": {"log_turnover": 0.15, "employees": 0.06, "survival": 0.15},
    "capacity_building": {"log_turnover": 0.08, "employees": 0.05, "survival": 0.30},
}
FEMALE_MULT: dict[str, float] = {"finance": 1.3, "market_access": 1.0, "capacity_building": 1.6}
RURAL_MULT: dict[str, float] = {"finance": 0.7, "market_access": 0.5, "capacity_building": 0.9}
#: share of firms that are programme candidates (before the alive/born filter)
PROGRAMME_SHARE: dict[str, float] = {"finance": 0.07, "market_access": 0.06,
                                     "capacity_building": 0.07}
#: illustrative target rule per indicator: ("gap", f) -> baseline + f * (100 - baseline);
#: ("growth", f) -> baseline * (1 + f)
TARGET_RULES: dict[str, tuple[str, float]] = {
    "K01": ("gap", 0.10), "K02": ("gap", 0.10), "K03": ("gap", 0.10), "K04": ("growth", 0.15),
    "K05": ("gap", 0.30), "K06": ("gap", 0.10), "K07": ("gap", 0.10), "K08": ("gap", 0.20),
    "K09": ("gap", 0.30), "K10": ("growth", 0.10),
}
BASELINE_YEAR, TARGET_YEAR = 2018, 2025

_NC = len(COUNTRIES)
_SECTIONS = tuple("ABCDEFGHIJKLMNOPQRS")  # O-U rarely in business surveys; O unused below
_SAMPLE_CLASS_SHARE = np.array([0.45, 0.25, 0.17, 0.13])
_LAO_SMALL_MEDIUM = (6600.0, 954.0)  # census ratio used as the small:medium template

# sector mix by size class (synthetic), section -> weight
_SECTOR_MIX: dict[str, dict[str, float]] = {
    "micro": dict(A=.06, C=.14, F=.04, G=.42, H=.04, I=.14, J=.01, K=.005, L=.01, M=.02, N=.02,
                  P=.01, Q=.01, R=.01, S=.075),
    "small": dict(A=.05, C=.22, F=.08, G=.33, H=.06, I=.09, J=.03, K=.01, L=.02, M=.04, N=.03,
                  P=.01, Q=.01, R=.01, S=.01),
    "medium": dict(A=.05, C=.30, F=.09, G=.25, H=.07, I=.06, J=.04, K=.02, L=.02, M=.04, N=.03,
                   Q=.01, S=.02),
    "large": dict(A=.04, B=.02, C=.33, D=.02, E=.01, F=.08, G=.20, H=.08, I=.04, J=.05, K=.06,
                  L=.02, M=.02, N=.02, Q=.01),
}
_VA_RATIO = dict(A=.45, B=.5, C=.28, D=.4, E=.4, F=.3, G=.2, H=.35, I=.4, J=.5, K=.6, L=.6,
                 M=.55, N=.5, O=.5, P=.6, Q=.55, R=.45, S=.5)
_REGIONS: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "BRN": (("Brunei-Muara", "Belait", "Tutong", "Temburong"), (.6, .2, .15, .05)),
    "KHM": (("Phnom Penh", "Siem Reap", "Battambang", "Kampong Cham"), (.45, .2, .2, .15)),
    "IDN": (("Jawa", "Sumatera", "Kalimantan", "Sulawesi", "Bali-Nusa Tenggara"),
            (.55, .2, .08, .09, .08)),
    "LAO": (("Vientiane Capital", "Savannakhet", "Champasak", "Luang Prabang"), (.45, .2, .2, .15)),
    "MYS": (("Selangor", "Kuala Lumpur", "Johor", "Penang", "Sabah", "Sarawak"),
            (.28, .2, .16, .12, .12, .12)),
    "MMR": (("Yangon", "Mandalay", "Ayeyarwady", "Shan", "Sagaing"), (.35, .25, .15, .13, .12)),
    "PHL": (("NCR", "CALABARZON", "Central Luzon", "Central Visayas", "Davao Region"),
            (.3, .25, .18, .15, .12)),
    "SGP": (("Central", "East", "North", "North-East", "West"), (.4, .15, .12, .15, .18)),
    "THA": (("Bangkok", "Central", "North", "Northeast", "South"), (.35, .2, .15, .18, .12)),
    "VNM": (("Red River Delta", "Southeast", "Mekong River Delta", "North Central Coast",
             "Central Highlands"), (.3, .32, .16, .14, .08)),
}

# Default (non-legal) plausibility bounds in USD, used where the law gives no bound.
_T_USD = ((1.5e3, 6e4), (6e4, 1.5e6), (1.5e6, 1.5e7), (1.5e7, 1.5e8))
_A_USD = ((5e2, 3e4), (3e4, 7.5e5), (7.5e5, 7.5e6), (7.5e6, 7.5e7))
_E_LARGE_HI = 2000  # nominal top of the large employee box where the law gives none
#: synthetic share of micro firms that are formally registered, and exporter-propensity
#: multipliers by country (illustrative, not sourced)
_REGISTERED_MICRO = {"BRN": .70, "KHM": .55, "IDN": .35, "LAO": .45, "MYS": .90, "MMR": .35,
                     "PHL": .50, "SGP": .95, "THA": .60, "VNM": .60}
_EXPORT_MULT = {"BRN": 1.2, "KHM": .8, "IDN": .8, "LAO": .6, "MYS": 1.5, "MMR": .6, "PHL": 1.0,
                "SGP": 1.8, "THA": 1.3, "VNM": 1.4}
#: synthetic income-level multipliers of the default money bounds (richer economies' firms
#: have higher turnover and assets per worker)
_INCOME_MULT = {"SGP": 4.0, "BRN": 2.5, "MYS": 1.6, "THA": 1.2}

# ------------------------------------------------------------------------------------------
# Result container
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SyntheticData:
    """Synthetic sample: ``panel`` (firm-year, contract columns + region), ``macro``
    (country-year denominators), ``targets`` (illustrative K01-K10 targets), ``truth`` (planted
    effects, tidy), ``truth_gt`` (ATT(g,t)), ``calibration`` (achieved vs published shares) and
    ``params`` (every generation parameter)."""

    panel: pd.DataFrame
    macro: pd.DataFrame
    targets: pd.DataFrame
    truth: pd.DataFrame
    truth_gt: pd.DataFrame
    calibration: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Readable summary: sizes, treatment, calibration achieved vs target, headline truth."""
        p = self.panel
        firms = p.drop_duplicates("firm_id")
        lines = [
            f"synthetic ASEAN MSME panel (seed={self.params.get('seed')}): {len(firms):,} firms, "
            f"{len(p):,} firm-years, years {int(p.year.min())}-{int(p.year.max())}",
            "firms by size class: " + ", ".join(
                f"{k} {v:,}" for k, v in firms.size_class.value_counts(sort=False).items()),
            "treated firms by programme: " + ", ".join(
                f"{k} {v:,}" for k, v in firms.programme_type.value_counts().items())
            + f"; never treated {int(firms.first_treated.isna().sum()):,}",
            "calibration (percent; achieved in the calibration year vs target):",
            self.calibration.assign(
                achieved=self.calibration.achieved.round(2),
            )[["country", "indicator", "year", "target", "achieved", "fallback"]].to_string(
                index=False),
            "planted simple ATT:",
            self.truth[self.truth.aggregation == "simple"][
                ["outcome", "programme_type", "att", "n_units"]].to_string(index=False),
        ]
        return "\n".join(lines)

    def _repr_html_(self) -> str:  # pragma: no cover - Jupyter display
        return "<pre>" + self.describe() + "</pre>"


# ------------------------------------------------------------------------------------------
# Calibration targets
# ------------------------------------------------------------------------------------------
_SHARES = ("msme_share_enterprises", "msme_share_employment", "msme_share_gdp",
           "msme_share_business_loans", "msme_share_exports")


def calibration_targets() -> pd.DataFrame:
    """The calibration table shipped in ``msme_eval/data/calibration.csv`` (published figures
    with source URL and confidence; ``fallback`` = asean_regional / ams_mean (derived) /
    synthetic; empty = country's own published figure)."""
    text = resources.files("msme_eval").joinpath("data/calibration.csv").read_text("utf-8")
    cal = pd.read_csv(_io.StringIO(text), dtype={"year": "Int64"}, keep_default_na=False,
                      na_values={"year": [""], "value": [""]})
    cal["fallback"] = cal["fallback"].astype("str")
    missing = [(c, i) for c in COUNTRIES for i in _SHARES
               if not ((cal.country == c) & (cal.indicator == i)).any()]
    if missing:
        raise ValueError(f"msme_eval/data/calibration.csv: no row for {missing}; add a published "
                         "value or a flagged fallback row (country, indicator).")
    return cal


def _cal_year(year: Any, years: np.ndarray) -> int:
    y = 2019 if pd.isna(year) else int(year)
    return int(np.clip(y, years[0], years[-1]))


# ------------------------------------------------------------------------------------------
# Size boxes
# ------------------------------------------------------------------------------------------
def _legal(country: str) -> tuple[sizeclass.ClassBounds, ...]:
    """The country's legal class bounds per sector group, from data/size_definitions.yaml."""
    return sizeclass.class_bounds(country)


def _group_keys(country: str) -> tuple[str, ...]:
    return tuple(b.definition_id for b in _legal(country))


def _group_of(country: str, section: str) -> int:
    """Index into _group_keys(country) of the sector group covering an ISIC section."""
    return next(i for i, b in enumerate(_legal(country)) if section in b.sections)


def _group_index(country: str, sectors: np.ndarray) -> np.ndarray:
    """Index into _group_keys(country) for each ISIC letter code (int array into _SECTIONS)."""
    lut = np.array([_group_of(country, sec) for sec in _SECTIONS])
    return lut[sectors]


def _employee_box(spec: sizeclass.ClassBounds, k: int) -> tuple[float, float]:
    """Employees (lo, hi) of class k: the legal bounds, the ASEAN harmonised band where the
    law gives none; inside the band too when the definition is incomplete (the band may then
    settle the class in ``sizeclass.classify``)."""
    band_lo, band_hi = sizeclass.harmonised_band()[k]
    e = spec.bounds.get("employees", ((None, None),) * 4)[k]
    elo = e[0] if e[0] is not None else band_lo
    ehi = e[1] if e[1] is not None else max(band_hi or _E_LARGE_HI, 10 * elo)
    if not spec.complete:
        lo, hi = max(elo, band_lo), min(ehi, band_hi if band_hi is not None else np.inf)
        if lo <= hi:
            elo, ehi = lo, hi
    return float(elo), float(ehi)


def _box(country: str, group: int) -> np.ndarray:
    """(4 classes, 6): employees lo/hi, turnover lo/hi, assets lo/hi in LCU (hi of large is a
    nominal scale; large draws are lo * (1.2 + k * P)) for sector group ``group`` (an index
    into _group_keys(country))."""
    spec = _legal(country)[group]
    rate = LCU_PER_USD[country]
    money_rate = rate if spec.currency == "USD" else 1.0
    rate = rate * _INCOME_MULT.get(country, 1.0)    # for the default (non-legal) bounds only
    out = np.zeros((4, 6))
    for k in range(4):
        out[k, 0:2] = _employee_box(spec, k)
        for j, (name, dflt) in enumerate((("turnover", _T_USD), ("assets", _A_USD))):
            lo_d, hi_d = dflt[k][0] * rate, dflt[k][1] * rate
            b = spec.bounds.get(name, ((None, None),) * 4)[k]
            lo = b[0] * money_rate if b[0] is not None else None
            hi = b[1] * money_rate if b[1] is not None else None
            if lo is None and hi is None:
                lo, hi = lo_d, hi_d
            elif lo is None:
                # a ceiling far above the class's plausible range (e.g. Singapore's single SME
                # ceiling) is tightened: any value inside it is still legally in the class
                hi = min(hi, 5 * hi_d)
                lo = min(lo_d, hi / 8)
            elif hi is None:
                hi = max(hi_d, lo * 8)
            out[k, 2 + 2 * j: 4 + 2 * j] = lo, hi
    # large firms start where the medium box ends (a low legal floor, e.g. Myanmar's MMK 50 m,
    # must not make large firms smaller than medium ones)
    out[3, 2] = max(out[3, 2], out[2, 3])
    out[3, 4] = max(out[3, 4], out[2, 5])
    return out


def _turnover_binds_large(spec: sizeclass.ClassBounds) -> bool:
    """A large firm needs turnover above the legal large floor: the floor is known and the
    rule does not make the firm large anyway (max/majority/other criteria)."""
    return spec.bounds.get("turnover", ((None, None),) * 4)[3][0] is not None and \
        spec.decides_large.get("turnover", False)


def _emp_pmf(lo: int, hi: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(int(lo), int(hi) + 1, dtype=float)
    p = x ** (-a)
    return x, p / p.sum()


_EMP_POWER = (1.0, 1.3, 1.3)


# ------------------------------------------------------------------------------------------
# Population and allocation
# ------------------------------------------------------------------------------------------
def _population(cal: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Stratum population counts N (10 countries x 4 classes) and a note per country."""
    N = np.zeros((_NC, 4))
    notes = []
    for ci, c in enumerate(COUNTRIES):
        rows = cal[cal.country == c].set_index("indicator")
        s_ent = float(rows.loc["msme_share_enterprises", "value"]) / 100
        s_emp = float(rows.loc["msme_share_employment", "value"]) / 100
        if "count_micro" in rows.index:
            N[ci] = [float(rows.loc[f"count_{k}", "value"]) for k in SIZE_CLASSES]
            notes.append((c, "published census counts by size class"))
            continue
        if "enterprise_count" in rows.index and "msme_count" in rows.index:
            n_tot = float(rows.loc["enterprise_count", "value"])
            n_msme = float(rows.loc["msme_count", "value"])
        elif "msme_count" in rows.index:
            n_msme = float(rows.loc["msme_count", "value"])
            n_tot = n_msme / s_ent
        else:
            n_tot = float(rows.loc["enterprise_count", "value"])
            n_msme = n_tot * s_ent
        n_large = n_tot - n_msme
        # within-MSME split (synthetic): solve the micro share p1 so that large firms of ~3x
        # the large employee threshold give the published employment share; if that needs
        # p1 < 0.5, aim at 1.3x the threshold and allow p1 >= 0.3, then shift small -> medium
        # (share q of non-micro MSMEs; Lao census ratio q = 954/7554 by default)
        means = _class_emp_means(c)
        rs, rm = _LAO_SMALL_MEDIUM
        q = rm / (rs + rm)
        p1 = 0.97
        for ml_mult, p_lo in ((3.0, 0.5), (1.3, 0.3)):
            avg = n_large * ml_mult * means[3] * s_emp / (1 - s_emp) / n_msme
            m_sm = (1 - q) * means[1] + q * means[2]
            p1 = float(np.clip((m_sm - avg) / (m_sm - means[0]), p_lo, 0.97))
            if p1 > p_lo:
                break
        else:
            nm = (avg - p1 * means[0]) / (1 - p1)
            q = float(np.clip((nm - means[1]) / (means[2] - means[1]), q, 0.6))
        rs, rm = 1 - q, q
        N[ci] = [n_msme * p1, n_msme * (1 - p1) * rs / (rs + rm),
                 n_msme * (1 - p1) * rm / (rs + rm), n_large]
        notes.append((c, f"synthetic split: micro {p1:.3f} of MSMEs, medium {q:.3f} of "
                         "small+medium (solved from the employment share)"))
    return np.round(N), pd.DataFrame(notes, columns=["country", "note"])


def _class_emp_means(country: str) -> np.ndarray:
    """Expected employees per class (sector-mix weighted over groups; large = lower bound)."""
    out = np.zeros(4)
    for k, cls in enumerate(SIZE_CLASSES):
        mix = _SECTOR_MIX[cls]
        tot = 0.0
        for sec, w in mix.items():
            b = _box(country, _group_of(country, sec))
            if k < 3:
                x, p = _emp_pmf(b[k, 0], b[k, 1], _EMP_POWER[k])
                tot += w * float((x * p).sum())
            else:
                tot += w * b[3, 0]
        out[k] = tot / sum(mix.values())
    return out


def _allocate(n_firms: int, N: np.ndarray) -> np.ndarray:
    """Sample sizes per stratum (firms ever in the panel): country share ~ N_c**0.25, class
    shares 45/25/17/13 %, capped at 90 % of the stratum population, excess redistributed."""
    share = (N.sum(1) ** 0.25)[:, None] * _SAMPLE_CLASS_SHARE[None, :]
    share = share / share.sum()
    cap = np.floor(0.9 * N)
    if cap.sum() < n_firms:
        raise ValueError(f"n_firms={n_firms:,} exceeds 90% of the synthetic population "
                         f"({int(cap.sum()):,}); use fewer firms.")
    floor = np.minimum(cap, min(20, n_firms // 40))   # >= 20 firms per stratum (2+ PSUs/year)
    n = np.zeros_like(N)
    free = np.ones(N.shape, dtype=bool)
    remaining = float(n_firms)
    for _ in range(100):
        n = np.where(free, 0.0, n)
        remaining = n_firms - n.sum()
        alloc = remaining * share * free / (share * free).sum()
        alloc = np.maximum(alloc, np.where(free, floor, 0))
        over = free & (alloc > cap)
        n = np.where(free, alloc, n)
        if not over.any():
            break
        n = np.where(over, cap, n)
        free &= ~over
    n = np.floor(n)
    # distribute rounding remainder to the largest uncapped strata
    short = int(n_firms - n.sum())
    order = np.argsort(-(cap - n).ravel() * share.ravel())
    flat = n.ravel()
    i = 0
    while short > 0:
        j = order[i % len(order)]
        if flat[j] < cap.ravel()[j]:
            flat[j] += 1
            short -= 1
        i += 1
    return flat.reshape(N.shape).astype(np.int64)


# ------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------
def _cat_draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: probs (n, k) rows summing to 1 -> index (n,)."""
    u = rng.random(len(probs))
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    return (u[:, None] > cum).sum(1)


def _ramp(e: np.ndarray) -> np.ndarray:
    """Exposure profile r(e) = 1 - exp(-(e+1)/2) for e >= 0, else 0."""
    return np.where(e >= 0, 1.0 - np.exp(-(np.maximum(e, -1) + 1) / 2.0), 0.0)


_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype


def _take_str(labels: Iterable[str], codes: np.ndarray) -> pd.Series:
    """pandas "str" Series of ``labels[codes]`` built in Arrow (no Python object per row);
    labels may repeat, code -1 gives NaN."""
    import pyarrow as pa
    labels = list(labels)
    idx = pa.array(np.asarray(codes, dtype=np.int32), mask=np.asarray(codes) < 0)
    arr = pa.DictionaryArray.from_arrays(idx, pa.array(labels, type=pa.string()))
    return pd.Series(arr.cast(pa.string()), dtype=_STR)


def _firm_ids(country: np.ndarray, rows: np.ndarray) -> pd.Series:
    """firm_id = ISO3 + zero-padded running number, e.g. "IDN0001234", for each row."""
    import pyarrow as pa
    import pyarrow.compute as pc
    n = len(country)
    width = len(str(n))
    num = pc.utf8_lpad(pc.cast(pa.array(np.arange(1, n + 1)), pa.string()), width, "0")
    cc = pa.DictionaryArray.from_arrays(pa.array(country.astype(np.int32)),
                                        pa.array(list(COUNTRIES))).cast(pa.string())
    ids = pc.binary_join_element_wise(cc, num, "")
    return pd.Series(ids.take(pa.array(rows)), dtype=_STR)


class _State(SimpleNamespace):
    """Working arrays of one :func:`generate` call, filled in by its steps in a fixed order
    (the order of random draws is part of the output). Firm x year arrays are dropped with
    :meth:`pop` as soon as no later step needs them, to bound peak memory."""

    def pop(self, *names: str) -> Any:
        """Remove and return the named arrays (one value for one name, else a tuple)."""
        out = tuple(getattr(self, name) for name in names)
        for name in names:
            delattr(self, name)
        return out[0] if len(out) == 1 else out


def generate(n_firms: int = 20_000, years: Iterable[int] = range(2015, 2025), seed: int = 0, *,
             missing: float = 0.0, entry_exit: bool = True) -> SyntheticData:
    """Generate the synthetic ASEAN MSME panel (see the module docstring for every formula).

    Parameters: ``n_firms`` firms ever in the panel (incumbents + entrants), ``years``
    consecutive panel years (must include at least one cohort year 2018-2023 with a year
    before it), ``seed`` for ``numpy.random.default_rng``; ``missing`` = share of item
    non-response set to NaN/NA in turnover, value_added, assets, exports, loans_outstanding,
    sells_online and imports_or_gvc (0 by default; never in the calibration/truth inputs).
    ``entry_exit=False`` gives a BALANCED panel (no entrants, no exits; survival effects are
    then 0) for testing estimators that need one; the default panel is unbalanced, so
    repeated-cross-section estimators (e.g. Callaway-Sant'Anna with unbalanced panels) suffer
    from entry/exit composition changes - use within-firm comparisons of firms observed in
    both the base year and ``t``.

    The steps below run in this order and draw from one generator, so the same arguments
    give the same output, byte for byte.
    """
    s = _setup(n_firms, years, seed, missing, entry_exit)
    for step in (_draw_design, _draw_firm_attributes, _draw_base_levels, _draw_firm_traits,
                 _select_programmes, _simulate_survival, _compute_weights,
                 _draw_untreated_outcomes, _calibrate_employment_and_va, _observed_outcomes,
                 _support_and_loans, _calibrate_loans_and_exports, _sells_online,
                 _achieved_calibration):
        step(s)
    truth, truth_gt = _planted_truth(s)
    macro = _macro(s)
    targets = _targets(s.years_arr, s.country, s.size, s.birth, s.alive, s.weight, s.employees,
                       s.value_added, s.loans, s.exports, s.online, s.imports_or_gvc,
                       s.registered, s.gdp)
    panel = _assemble_panel(s)
    return SyntheticData(panel=panel, macro=macro, targets=targets, truth=truth,
                         truth_gt=truth_gt, calibration=s.calibration, params=_params(s))


def _setup(n_firms: int, years: Iterable[int], seed: int, missing: float,
           entry_exit: bool) -> _State:
    """Check the arguments; population counts N (country x class) and sample allocation."""
    years_arr = np.asarray(list(years), dtype=np.int64)
    if len(years_arr) < 2 or np.any(np.diff(years_arr) != 1):
        raise ValueError(f"years must be >= 2 consecutive years, got {list(years_arr)}")
    if int(n_firms) < 1000:
        raise ValueError(f"n_firms={n_firms} is too small: 40 strata (10 countries x 4 size "
                         "classes) need >= 20 firms each to keep 2+ PSUs every year; use >= 1000")
    if not 0.0 <= missing < 0.5:
        raise ValueError(f"missing={missing} must be in [0, 0.5)")
    cohorts = np.array([g for g in COHORTS if years_arr[0] < g <= years_arr[-1]])
    if len(cohorts) == 0:
        raise ValueError(f"years {int(years_arr[0])}-{years_arr[-1]} contain no cohort year of "
                         f"{COHORTS} with a pre-treatment year")
    s = _State(n_firms=int(n_firms), years_arr=years_arr, T=len(years_arr),
               y0=int(years_arr[0]), seed=seed, missing=missing, entry_exit=entry_exit,
               cohorts=cohorts, rng=np.random.default_rng(seed), cal=calibration_targets())
    s.N, s.pop_notes = _population(s.cal)
    s.n_h = _allocate(s.n_firms, s.N)
    return s


def _draw_design(s: _State) -> None:
    """Strata (country x class), PSUs nested in strata (m_h = clip(n_h // 25, 2, 200), firms
    spread evenly at random), and the PSU attributes region, urban, non-response, level."""
    rng, n_h = s.rng, s.n_h
    s.strat = strat = np.repeat(np.arange(_NC * 4), n_h.ravel())        # stratum code c*4 + k
    s.n = n = len(strat)
    s.country = strat // 4
    s.size = strat % 4
    m_h = np.clip(n_h.ravel() // 25, 2, 200)
    start = np.concatenate([[0], np.cumsum(n_h.ravel())[:-1]])
    perm_key = rng.random(n)
    order = np.lexsort((perm_key, strat))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    rank -= start[strat]
    psu_local = rank % m_h[strat]
    s.psu_offset = np.concatenate([[0], np.cumsum(m_h)[:-1]])
    s.psu_global = s.psu_offset[strat] + psu_local                # unique PSU code
    s.n_psu = n_psu = int(m_h.sum())
    s.psu_stratum = np.repeat(np.arange(_NC * 4), m_h)
    s.psu_country = psu_country = s.psu_stratum // 4
    s.psu_size = s.psu_stratum % 4
    # region and urban status are PSU attributes
    s.psu_region = psu_region = np.zeros(n_psu, dtype=np.int64)
    for ci, c in enumerate(COUNTRIES):
        sel = psu_country == ci
        pr = np.asarray(_REGIONS[c][1]) / sum(_REGIONS[c][1])
        psu_region[sel] = _cat_draw(rng, np.broadcast_to(pr, (int(sel.sum()), len(pr))))
    urban_p = np.array([.45, .65, .8, .9])[s.psu_size] + 0.15 * (psu_region == 0)
    urban_p = np.where(COUNTRIES.index("SGP") == psu_country, 1.0, np.minimum(urban_p, .97))
    psu_urban = rng.random(n_psu) < urban_p
    s.psu_nr = np.exp(rng.normal(0.0, 0.25, n_psu))            # PSU non-response factor
    s.psu_z = rng.normal(0.0, 1.0, n_psu)                        # PSU level effect
    s.region = psu_region[s.psu_global]
    s.urban = psu_urban[s.psu_global]


def _draw_firm_attributes(s: _State) -> None:
    """Sector (mix by class), female owner, registration, birth year (entrants inside the
    window, incumbents with geometric ages)."""
    rng, n, size, country = s.rng, s.n, s.size, s.country
    sec_p = np.zeros((4, len(_SECTIONS)))
    for k, cls in enumerate(SIZE_CLASSES):
        for sec, w in _SECTOR_MIX[cls].items():
            sec_p[k, _SECTIONS.index(sec)] = w
    sec_p /= sec_p.sum(1, keepdims=True)
    s.sector = _cat_draw(rng, sec_p[size])
    female_p = np.array([.45, .30, .20, .12])[size] + np.where(
        np.isin(country, [COUNTRIES.index(c) for c in ("PHL", "VNM", "THA", "LAO")]), .08, 0)
    s.female = rng.random(n) < female_p
    reg_micro = np.array([_REGISTERED_MICRO[c] for c in COUNTRIES])[country]
    s.registered = rng.random(n) < np.select([size == 0, size == 1, size == 2],
                                             [reg_micro, .88, .97], 1.0)
    entrant_p = np.array([.35, .25, .18, .10])[size]
    entrant = (rng.random(n) < entrant_p) & s.entry_exit
    age0 = np.minimum(rng.geometric(np.array([.10, .08, .06, .04])[size]) - 1, 80)
    y0, T = s.y0, s.T
    birth = np.where(entrant, rng.integers(y0 + 1, y0 + T, n) if T > 1 else y0, y0 - age0)
    s.birth = birth.astype(np.int64)


def _draw_base_levels(s: _State) -> None:
    """Firm base levels inside the class box of its country and sector group: employees from
    a power-law pmf, turnover and assets at quantiles 0.15-0.85 of the log box; large firms
    ``lo * (1.2 + k * P)`` with ``k`` solved by calibration (P factors kept here)."""
    rng, n, size = s.rng, s.n, s.size
    z_firm = 0.45 * s.psu_z[s.psu_global] + np.sqrt(1 - 0.45 ** 2) * rng.normal(0, 1, n)
    crit_noise = rng.normal(0, 1, (n, 3))
    base_q = np.empty((n, 3))
    for j in range(3):
        base_q[:, j] = _norm_cdf(0.7 * z_firm + np.sqrt(1 - 0.49) * crit_noise[:, j])
    big_p = np.exp(rng.normal(0.0, 1.0, (n, 4)))                # large-firm scale draws
    emp_base, t_lo, t_hi, a_lo, a_hi, t_floor = _fill_boxes(s, base_q[:, 0])
    skew = np.where(size == 0, 1.6, 1.0)
    margin_lo, margin_hi = 0.15, 0.85
    qt = margin_lo + (margin_hi - margin_lo) * base_q[:, 1] ** skew
    qa = margin_lo + (margin_hi - margin_lo) * base_q[:, 2] ** skew
    s.emp_base, s.t_lo, s.t_floor = emp_base, t_lo, t_floor
    s.log_t_base = np.log(t_lo) + qt * (np.log(t_hi) - np.log(t_lo))
    log_a_base = np.log(a_lo) + qa * (np.log(a_hi) - np.log(a_lo))
    s.large = large = size == 3
    s.p_emp = big_p[:, 0]
    s.p_turn = np.exp(0.7 * np.log(big_p[:, 0]) + np.sqrt(1 - .49) * np.log(big_p[:, 1]))
    s.log_a_base = np.where(large, np.log(a_lo) + np.log(1.2 + big_p[:, 2]), log_a_base)
    s.big_p = big_p


def _fill_boxes(s: _State, q_emp: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per firm: base employees (quantile ``q_emp`` of the class pmf; large: the box floor),
    turnover and assets box (lo, hi), and the large-turnover floor factor (1.2, or 0.25 where
    turnover does not bind for large firms)."""
    n, size, country, sector = s.n, s.size, s.country, s.sector
    emp_base, t_lo, t_hi, a_lo, a_hi = (np.zeros(n) for _ in range(5))
    t_floor = np.full(n, 1.2)   # large turnover = t_lo * (t_floor + k * P)
    for ci, c in enumerate(COUNTRIES):
        in_c = country == ci
        gidx = _group_index(c, sector[in_c])
        idx_c = np.flatnonzero(in_c)
        for gi, spec in enumerate(_legal(c)):
            b = _box(c, gi)
            sel = idx_c[gidx == gi]
            if not _turnover_binds_large(spec):
                # large whatever its turnover (see _turnover_binds_large): turnover may go
                # below the large box's lower end
                t_floor[sel] = 0.25
            for k in range(4):
                s2 = sel[size[sel] == k]
                if len(s2) == 0:
                    continue
                if k < 3:
                    x, p = _emp_pmf(b[k, 0], b[k, 1], _EMP_POWER[k])
                    cdf = np.cumsum(p)
                    emp_base[s2] = x[np.minimum(np.searchsorted(cdf, q_emp[s2]), len(x) - 1)]
                else:
                    emp_base[s2] = b[3, 0]                       # scaled by calibration
                t_lo[s2], t_hi[s2], a_lo[s2], a_hi[s2] = b[k, 2], b[k, 3], b[k, 4], b[k, 5]
    return emp_base, t_lo, t_hi, a_lo, a_hi, t_floor


def _draw_firm_traits(s: _State) -> None:
    """Value-added ratio, exporter/importer status and export intensity, loans, the online
    adoption draw; every country gets a large exporter and a large borrower (calibration)."""
    rng, n, size, sector, country = s.rng, s.n, s.size, s.sector, s.country
    va_mu = np.array([_VA_RATIO[sec] for sec in _SECTIONS])[sector]
    s.va_ratio = rng.beta(20 * va_mu, 20 * (1 - va_mu))
    s.exporter = exporter = rng.random(n) < (
        np.array([.03, .10, .25, .50])[size] * np.where(sector == _SECTIONS.index("C"), 1.8, 1.0)
        * np.array([_EXPORT_MULT[c] for c in COUNTRIES])[country])
    s.export_int = rng.beta(2.0, 5.0, n)
    s.importer = rng.random(n) < np.array([.05, .15, .30, .50])[size]
    s.has_loan = has_loan = rng.random(n) < np.select(
        [size == 0, size == 1, size == 2], [np.where(s.registered, .20, .07), .35, .50], .65)
    s.loan_ratio = np.exp(rng.normal(np.log(np.array([.15, .25, .30, .30])[size]), 0.5))
    s.online_u = rng.random(n)
    # in a small sample without one, the largest large firm is made one (deterministic)
    for ci in range(_NC):
        cand = np.flatnonzero((country == ci) & (size == 3))
        if len(cand):
            top = cand[np.argmax(s.big_p[cand, 0])]
            if not exporter[cand].any():
                exporter[top] = True
            if not has_loan[cand].any():
                has_loan[top] = True


def _select_programmes(s: _State) -> None:
    """Selection on observables: propensity ``pi_k f_k(x)`` normalised within country x
    sector cells; a candidate cohort and a mean-one effect heterogeneity ``nu_i`` per firm."""
    rng, n, size, urban, registered = s.rng, s.n, s.size, s.urban, s.registered
    micro = size == 0
    small_or_med = (size == 1) | (size == 2)
    f = np.zeros((n, 3))
    f[:, 0] = np.exp(0.9 * registered + 0.7 * small_or_med + 0.4 * urban)      # finance
    f[:, 1] = np.exp(0.7 * registered + 0.7 * small_or_med + 0.6 * urban)      # market access
    f[:, 2] = np.exp(0.9 * s.female + 0.4 * micro + 0.3 * ~urban + 0.2 * registered)  # capacity
    f[s.large] = 0.0
    cell = s.country * len(_SECTIONS) + s.sector
    n_cell = np.bincount(cell, minlength=_NC * len(_SECTIONS))
    pk = np.zeros((n, 3))
    for j, t in enumerate(PROGRAMME_TYPES):
        mean_f = np.bincount(cell, weights=f[:, j], minlength=len(n_cell)) / np.maximum(n_cell, 1)
        pk[:, j] = PROGRAMME_SHARE[t] * f[:, j] / np.where(mean_f[cell] > 0, mean_f[cell], 1.0)
    tot = pk.sum(1)
    pk *= np.minimum(1.0, 0.95 / np.maximum(tot, 1e-12))[:, None]
    probs = np.column_stack([pk, 1 - pk.sum(1)])
    s.ptype = _cat_draw(rng, probs)                               # 3 = none
    s.cand_g = s.cohorts[rng.integers(0, len(s.cohorts), n)]
    s.het_nu = np.exp(rng.normal(-0.045, 0.3, n))


def _simulate_survival(s: _State) -> None:
    """Exit hazards with common random numbers ``U_it`` (alive untreated vs treated), the
    treated set (selected firms born before their cohort), planted effect sizes ``beta``."""
    years_arr, y0, T, birth, size = s.years_arr, s.y0, s.T, s.birth, s.size
    U = s.rng.random((s.n, T))
    yr = years_arr[None, :]
    base_h = np.array([.07, .045, .03, .02])[size] * np.where(s.registered, 0.8, 1.0) * np.where(
        np.isin(s.sector, [_SECTIONS.index("G"), _SECTIONS.index("I")]), 1.15, 1.0)
    age_prev = yr - 1 - birth[:, None]                           # age at t-1
    age_f = np.where(age_prev <= 2, 1.6, np.where(age_prev <= 5, 1.25, 1.0))
    year_f = np.where(yr == 2020, 1.5, np.where(yr == 2021, 1.2, 1.0))
    h0 = base_h[:, None] * age_f * year_f
    born = birth[:, None] <= yr
    first_step = yr > np.maximum(birth, y0)[:, None]             # hazard applies in these years
    die0 = first_step & (U < h0) & s.entry_exit
    alive0 = born & (np.cumsum(die0, axis=1) == 0)
    treated = (s.ptype < 3) & (birth < s.cand_g)    # selected at entry/baseline: no survival filter
    s.ptype = np.where(treated, s.ptype, 3)
    s.g_arr = g_arr = np.where(treated, s.cand_g, 0)
    s.tidx = tidx = np.flatnonzero(treated)
    s.pt_t = pt_t = s.ptype[tidx]
    female_mult = np.array([FEMALE_MULT[t] for t in PROGRAMME_TYPES])[pt_t]
    rural_mult = np.array([RURAL_MULT[t] for t in PROGRAMME_TYPES])[pt_t]
    m_t = np.where(s.female[tidx], female_mult, 1.0) * np.where(s.urban[tidx], 1.0, rural_mult) \
        * s.het_nu[tidx]
    s.beta = beta = {o: np.array([EFFECTS[t][o] for t in PROGRAMME_TYPES])[pt_t] * m_t
                     for o in ("log_turnover", "employees", "survival")}
    s.ev = ev = years_arr[None, :] - g_arr[tidx][:, None]        # event time, treated rows
    s.r_now = _ramp(ev)
    r_prev = _ramp(ev - 1)
    delta = np.minimum(0.9, beta["survival"])
    h1_t = h0[tidx] * (1 - delta[:, None] * r_prev)
    die1_t = first_step[tidx] & (U[tidx] < h1_t) & s.entry_exit
    s.alive1_t = alive1_t = born[tidx] & (np.cumsum(die1_t, axis=1) == 0)
    s.alive = alive0.copy()
    s.alive[tidx] = alive1_t
    s.alive0_t = alive0[tidx]
    # survival cells: alive in the base year g-1 for t >= g-1, else present in t
    base_alive = alive0[tidx, np.clip(g_arr[tidx] - y0 - 1, 0, T - 1)]
    s.present_s = np.where(years_arr[None, :] >= g_arr[tidx][:, None] - 1, base_alive[:, None],
                           alive0[tidx])


def _compute_weights(s: _State) -> None:
    """``w_it = 1 + (N_h - n_ht) f_psu / sum_{alive j in h,t} f_psu(j)`` (0 where not alive)."""
    n, T, alive = s.n, s.T, s.alive
    strat_year = (s.strat[:, None] * T + np.arange(T)[None, :]).ravel()
    f_psu = np.broadcast_to(s.psu_nr[s.psu_global][:, None], (n, T)).ravel()
    a_flat = alive.ravel()
    sum_f = np.bincount(strat_year[a_flat], weights=f_psu[a_flat], minlength=_NC * 4 * T)
    cnt = np.bincount(strat_year[a_flat], minlength=_NC * 4 * T).astype(float)
    weight = np.zeros(n * T)
    sy = strat_year[a_flat]
    weight[a_flat] = 1.0 + (s.N.ravel()[sy // T] - cnt[sy]) * f_psu[a_flat] / sum_f[sy]
    s.weight = weight.reshape(n, T)
    if np.any(s.weight[alive] < 1.0 - 1e-9):
        raise RuntimeError("internal: stratum sample exceeds population (weights < 1)")


def _draw_untreated_outcomes(s: _State) -> None:
    """Year shocks and trends, AR(1) noise, assets, value-added factor and the planted
    effects tau on log turnover and log employment (treated firm-years)."""
    rng, n, T, years_arr = s.rng, s.n, s.T, s.years_arr
    t_mid = (years_arr[0] + years_arr[-1]) / 2
    lam = 0.02 * (years_arr - t_mid) + rng.normal(0, 0.01, T)
    s.lam = lam + np.where(years_arr == 2020, -0.08, 0) + np.where(years_arr == 2021, -0.03, 0)
    gam_c = rng.uniform(-0.01, 0.015, _NC)
    gam_s = rng.normal(0, 0.006, len(_SECTIONS))
    common = s.lam[None, :] + (gam_c[s.country] + gam_s[s.sector])[:, None] * (
        years_arr - t_mid)[None, :]
    eps = _ar1(rng, n, T, rho=0.5, sd=0.08)
    eta = _ar1(rng, n, T, rho=0.6, sd=0.03)
    zeta = rng.normal(0, 0.03, (n, T))
    s.log_t0_rest = common + eps                                  # + log_t_base
    del eps
    # untreated employment is stationary (no trend): parallel trends hold in LEVELS too
    s.emp_mult = np.exp(eta)                                      # E0* = emp_base * emp_mult
    del eta
    s.assets = np.exp(s.log_a_base[:, None] + 0.5 * common + zeta)
    del zeta, common
    va_noise = np.exp(rng.normal(0, 0.05, (n, T)))
    va_factor = np.minimum(0.95, s.va_ratio[:, None] * va_noise)
    neg = rng.random((n, T)) < 0.003
    s.va_factor = np.where(neg, -rng.uniform(0, 0.1, (n, T)), va_factor)
    del va_noise, neg
    s.tau_t = np.zeros((n, T))
    s.tau_e = np.zeros((n, T))
    s.tau_t[s.tidx] = s.beta["log_turnover"][:, None] * s.r_now
    s.tau_e[s.tidx] = s.beta["employees"][:, None] * s.r_now


def _calibrate_employment_and_va(s: _State) -> None:
    """Per country, the large firms' employment and turnover scale factors that give the
    published MSME employment share and MSME value added / GDP in the calibration year."""
    s.k_emp, s.k_turn = np.zeros(_NC), np.zeros(_NC)
    s.msme = ~s.large
    w, y0 = s.weight, s.y0  # zero where not alive
    for ci, c in enumerate(COUNTRIES):
        rows = s.cal[s.cal.country == c].set_index("indicator")
        in_c = s.country == ci
        L = np.flatnonzero(in_c & s.large)
        M = np.flatnonzero(in_c & s.msme)

        def target(ind: str, rows: pd.DataFrame = rows) -> tuple[float, int]:
            return (float(rows.loc[ind, "value"]) / 100,
                    _cal_year(rows.loc[ind, "year"], s.years_arr) - y0)

        # employment: E_large = lo * (1.1 + k * P) * emp_mult (before rounding)
        sh, ti = target("msme_share_employment")
        e_m = (w[M, ti] * _emp_obs(s.emp_base[M], s.emp_mult[M, ti], s.tau_e[M, ti])).sum()
        need = e_m * (1 - sh) / sh
        a_ = (w[L, ti] * s.emp_base[L] * 1.1 * s.emp_mult[L, ti]).sum()
        b_ = (w[L, ti] * s.emp_base[L] * s.p_emp[L] * s.emp_mult[L, ti]).sum()
        s.k_emp[ci] = max(0.0, (need - a_) / b_) if b_ > 0 else 0.0
        # value added: VA_large = (theta - s)/s * VA_msme at the GDP calibration year
        sh, ti = target("msme_share_gdp")
        va_m = (w[M, ti] * s.va_factor[M, ti] * np.exp(s.log_t_base[M] + s.log_t0_rest[M, ti]
                                                        + s.tau_t[M, ti])).sum()
        need = (ENTERPRISE_VA_SHARE_OF_GDP - sh) / sh * va_m
        unit = w[L, ti] * s.va_factor[L, ti] * s.t_lo[L] * np.exp(s.log_t0_rest[L, ti])
        a_ = (unit * s.t_floor[L]).sum()
        b_ = (unit * s.p_turn[L]).sum()
        s.k_turn[ci] = max(0.0, (need - a_) / b_) if b_ > 0 else 0.0
    large, country = s.large, s.country
    s.emp_base = np.where(large, s.emp_base * (1.1 + s.k_emp[country] * s.p_emp), s.emp_base)
    s.log_t_base = np.where(large, np.log(s.t_lo) + np.log(s.t_floor + s.k_turn[country]
                                                          * s.p_turn), s.log_t_base)


def _observed_outcomes(s: _State) -> None:
    """Observed employees E1 (= E0 untreated) and turnover; the unit effects of the treated."""
    e0_star = s.emp_base[:, None] * s.pop("emp_mult")
    tau_e = s.pop("tau_e")
    s.employees = np.maximum(1, np.rint(e0_star * np.exp(tau_e))).astype(np.int64)
    s.emp0_t = np.maximum(1, np.rint(e0_star[s.tidx])).astype(np.int64)
    del e0_star, tau_e
    log_t0_rest, tau_t = s.pop("log_t0_rest", "tau_t")
    s.turnover = np.exp(s.log_t_base[:, None] + log_t0_rest + tau_t)  # tau = 0 for untreated
    s.eff_t = tau_t[s.tidx]


def _support_and_loans(s: _State) -> None:
    """Support amounts (LCU, relative to the pre-treatment turnover level) and loans (finance
    support amortised over three years)."""
    n, T, tidx, pt_t, rng = s.n, s.T, s.tidx, s.pt_t, s.rng
    s.support = support = np.zeros((n, T))
    if len(tidx):
        base_level = np.exp(s.log_t_base[tidx] + s.lam[np.clip(s.g_arr[tidx] - s.y0 - 1, 0,
                                                                T - 1)])
        frac = np.select([pt_t == 0, pt_t == 1], [rng.uniform(.10, .40, len(tidx)),
                                                  rng.uniform(.03, .08, len(tidx))],
                         rng.uniform(.01, .03, len(tidx)))
        amount = np.round(base_level * frac, 0)
        ev_t = s.ev
        in_support = (ev_t == 0) | ((ev_t == 1) & (pt_t == 2)[:, None])
        support[tidx] = np.where(in_support, amount[:, None], 0.0)
    else:
        amount = np.zeros(0)
        ev_t = np.zeros((0, T))
    s.ev_t = ev_t
    s.loans = np.where(s.has_loan[:, None], s.loan_ratio[:, None] * s.turnover, 0.0)
    if len(tidx):
        fin = pt_t == 0
        amort = np.where(ev_t >= 0, np.maximum(0.0, 1 - ev_t / 3.0), 0.0)
        s.loans[tidx] += np.where(fin[:, None], amount[:, None] * amort, 0.0)


def _calibrate_loans_and_exports(s: _State) -> None:
    """Large firms' loan scale and export-intensity scale (bisection, capped at 0.95) that give
    the published MSME shares; MSME intensity is scaled down if capped large firms fall short."""
    w, y0 = s.weight, s.y0
    s.k_loan, s.k_exp, s.k_exp_msme = np.ones(_NC), np.ones(_NC), np.ones(_NC)
    exporter, export_int, turnover, loans = s.exporter, s.export_int, s.turnover, s.loans
    for ci, c in enumerate(COUNTRIES):
        rows = s.cal[s.cal.country == c].set_index("indicator")
        in_c = s.country == ci
        L = np.flatnonzero(in_c & s.large)
        M = np.flatnonzero(in_c & s.msme)
        sh = float(rows.loc["msme_share_business_loans", "value"]) / 100
        ti = _cal_year(rows.loc["msme_share_business_loans", "year"], s.years_arr) - y0
        lm = (w[M, ti] * loans[M, ti]).sum()
        ll = (w[L, ti] * loans[L, ti]).sum()
        s.k_loan[ci] = lm * (1 - sh) / sh / ll if ll > 0 else 1.0
        sh = float(rows.loc["msme_share_exports", "value"]) / 100
        ti = _cal_year(rows.loc["msme_share_exports", "year"], s.years_arr) - y0
        xm = (w[M, ti] * exporter[M] * export_int[M] * turnover[M, ti]).sum()
        need = xm * (1 - sh) / sh
        wl = w[L, ti] * exporter[L] * turnover[L, ti]
        lo_k, hi_k = 0.0, 1.0
        while (wl * np.minimum(0.95, hi_k * export_int[L])).sum() < need and hi_k < 1e6:
            hi_k *= 2
        for _ in range(60):
            mid = 0.5 * (lo_k + hi_k)
            if (wl * np.minimum(0.95, mid * export_int[L])).sum() < need:
                lo_k = mid
            else:
                hi_k = mid
        s.k_exp[ci] = 0.5 * (lo_k + hi_k)
        # large exporters at the 0.95 cap cannot export enough: scale MSME intensity down
        xl = (wl * np.minimum(0.95, s.k_exp[ci] * export_int[L])).sum()
        if xm > 0 and xl < need * (1 - 1e-6):
            s.k_exp_msme[ci] = xl * sh / (1 - sh) / xm
    country, large = s.country, s.large
    s.loans = np.where(large[:, None], loans * s.k_loan[country][:, None], loans)
    x_int = np.where(large, np.minimum(0.95, s.k_exp[country] * export_int),
                     export_int * s.k_exp_msme[country])
    s.exports = np.where(exporter[:, None], x_int[:, None] * turnover, 0.0)
    s.value_added = s.pop("va_factor") * turnover


def _sells_online(s: _State) -> None:
    """Persistent online adoption rising over time; market access support raises it."""
    n, T, country, years_arr = s.n, s.T, s.country, s.years_arr
    firm_logit = (0.6 * s.urban + 0.5 * (s.size >= 1) + 0.4 * (country == COUNTRIES.index("SGP"))
                  + 0.3 * (country == COUNTRIES.index("MYS")))
    logit = (-2.4 + 0.35 * (years_arr - 2015))[None, :] + firm_logit[:, None]
    if len(s.tidx):
        boost = np.zeros((n, T))
        boost[s.tidx] = np.where((s.pt_t == 1)[:, None] & (s.ev_t >= 0), 0.8, 0.0)
        logit = logit + boost
    s.online = s.online_u[:, None] < 1 / (1 + np.exp(-logit))
    s.imports_or_gvc = s.exporter | s.importer


def _achieved_calibration(s: _State) -> None:
    """GDP (enterprise value added / 0.85) and the achieved vs published shares table."""
    w_all, country, msme, y0, T = s.weight, s.country, s.msme, s.y0, s.T
    shares_by = {"msme_share_enterprises": np.ones((s.n, T)),
                 "msme_share_employment": s.employees.astype(float),
                 "msme_share_business_loans": s.loans, "msme_share_exports": s.exports}
    s.gdp = gdp = np.zeros((_NC, T))
    for ci in range(_NC):
        sel = country == ci
        gdp[ci] = (w_all[sel] * s.value_added[sel]).sum(0) / ENTERPRISE_VA_SHARE_OF_GDP
    calib_rows = []
    for ci, c in enumerate(COUNTRIES):
        rows = s.cal[s.cal.country == c].set_index("indicator")
        sel = country == ci
        for ind in _SHARES:
            yc = _cal_year(rows.loc[ind, "year"], s.years_arr)
            ti = yc - y0
            w = w_all[sel, ti]
            ms = msme[sel]
            if ind == "msme_share_gdp":
                ach = (w[ms] * s.value_added[sel][ms, ti]).sum() / gdp[ci, ti]
            else:
                v = shares_by[ind][sel, ti]
                ach = (w[ms] * v[ms]).sum() / (w * v).sum()
            calib_rows.append(dict(
                country=c, indicator=ind, year=yc, target=float(rows.loc[ind, "value"]),
                achieved=100 * ach, data_year=rows.loc[ind, "year"],
                fallback=str(rows.loc[ind, "fallback"]), confidence=rows.loc[ind, "confidence"],
                source=rows.loc[ind, "source"]))
    s.calibration = pd.DataFrame(calib_rows)
    s.calibration["data_year"] = s.calibration["data_year"].astype("Int64")


def _planted_truth(s: _State) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The planted effects of the treated firms, aggregated by :func:`_truth`."""
    tidx = s.tidx
    young = (s.g_arr[tidx] - s.birth[tidx]) <= 5
    eff_e = (s.employees[tidx] - s.emp0_t).astype(float)
    eff_s = s.alive1_t.astype(float) - s.alive0_t.astype(float)
    obs_t = s.alive1_t
    female, urban = s.female[tidx], s.urban[tidx]
    return _truth(
        g=s.g_arr[tidx], ptype=s.pt_t, years=s.years_arr,
        effects={"log_turnover": (s.eff_t, obs_t), "employees": (eff_e, obs_t),
                 "survival": (eff_s, s.present_s)},
        subgroups={"owner_female=True": female, "owner_female=False": ~female,
                   "urban=False": ~urban, "size_class=micro": s.size[tidx] == 0,
                   "young=True": young})


def _macro(s: _State) -> pd.DataFrame:
    """Country-year denominators: weighted totals over all enterprises, GDP, fixed rates."""
    macro_rows = []
    for ci, c in enumerate(COUNTRIES):
        sel = s.country == ci
        w = s.weight[sel]
        macro_rows.append(pd.DataFrame({
            "country": c, "year": s.years_arr, "gdp": s.gdp[ci],
            "exports_total": (w * s.exports[sel]).sum(0),
            "business_loans_total": (w * s.loans[sel]).sum(0),
            "employment_total": (w * s.employees[sel]).sum(0),
            "usd_per_lcu": 1.0 / LCU_PER_USD[c],
        }))
    macro = pd.concat(macro_rows, ignore_index=True)
    macro["country"] = macro["country"].astype("str")
    return macro


def _design_labels(s: _State) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """Labels of regions, PSUs ("IDN-micro-JAW-001") and strata, and each firm's region code."""
    region_labels = [r for c in COUNTRIES for r in _REGIONS[c][0]]
    region_code = np.array([0] + list(np.cumsum([len(_REGIONS[c][0]) for c in COUNTRIES])[:-1]))
    reg_short = {c: [r.replace(" ", "")[:3].upper() for r in _REGIONS[c][0]] for c in COUNTRIES}
    psu_labels = [
        f"{COUNTRIES[s.psu_country[pj]]}-{SIZE_CLASSES[s.psu_size[pj]]}-"
        f"{reg_short[COUNTRIES[s.psu_country[pj]]][s.psu_region[pj]]}-"
        f"{pj - s.psu_offset[s.psu_stratum[pj]] + 1:03d}" for pj in range(s.n_psu)]
    strata_labels = [f"{c}-{k}" for c in COUNTRIES for k in SIZE_CLASSES]
    return region_labels, psu_labels, strata_labels, region_code[s.country] + s.region


def _boolcol(a: np.ndarray) -> pd.arrays.BooleanArray:
    return pd.arrays.BooleanArray(a.astype(bool), np.zeros(len(a), dtype=bool))


def _assemble_panel(s: _State) -> pd.DataFrame:
    """The firm-year panel (firm-major order), built column by column from the firm x year
    arrays, each dropped once taken; then item non-response if ``missing > 0``."""
    T = s.T
    rows_f, rows_t = np.nonzero(s.pop("alive"))                   # firm-major order
    flat = rows_f * T + rows_t
    del rows_t
    region_labels, psu_labels, strata_labels, region_global = _design_labels(s)
    ptype_rows = s.ptype[rows_f]
    ptype_code = np.where(ptype_rows < 3, ptype_rows, -1)

    def take(name: str) -> np.ndarray:
        """Values of the firm x year array ``name`` at the panel rows; frees the array."""
        return s.pop(name).ravel()[flat]

    first_treated = pd.array(s.g_arr[rows_f], dtype="Int64")
    first_treated[ptype_rows == 3] = pd.NA
    cols: dict[str, Any] = {
        "firm_id": _firm_ids(s.country, rows_f).array,
        "country": _take_str(COUNTRIES, s.country[rows_f]).array,
        "year": s.years_arr[flat % T],
        "sector": _take_str(_SECTIONS, s.sector[rows_f]).array,
    }
    for name in ("employees", "turnover", "value_added", "assets", "exports"):
        cols[name] = take(name)
    cols["loans_outstanding"] = take("loans")
    cols.update({
        "size_class": pd.Categorical.from_codes(s.size[rows_f], categories=list(SIZE_CLASSES),
                                                ordered=True),
        "owner_female": _boolcol(s.female[rows_f]),
        "urban": _boolcol(s.urban[rows_f]),
        "registered": _boolcol(s.registered[rows_f]),
        "sells_online": _boolcol(take("online")),
        "imports_or_gvc": _boolcol(s.imports_or_gvc[rows_f]),
        "birth_year": pd.array(s.birth[rows_f], dtype="Int64"),
        "weight": take("weight"),
        "strata": _take_str(strata_labels, s.strat[rows_f]).array,
        "psu": _take_str(psu_labels, s.psu_global[rows_f]).array,
        "region": _take_str(region_labels, region_global[rows_f]).array,
        "programme": _take_str(list(PROGRAMMES.values()), ptype_code).array,
        "programme_type": _take_str(PROGRAMME_TYPES, ptype_code).array,
        "first_treated": first_treated,
        "support_amount": take("support"),
    })
    panel = pd.DataFrame(cols, copy=False)
    del cols
    if s.missing > 0:
        mrng = np.random.default_rng([s.seed, 7])
        for col in ("turnover", "value_added", "assets", "exports", "loans_outstanding",
                    "sells_online", "imports_or_gvc"):
            m = mrng.random(len(panel)) < s.missing
            panel[col] = panel[col].mask(m)
    return panel


def _params(s: _State) -> dict[str, Any]:
    """Every generation parameter and the solved calibration factors."""
    return dict(
        n_firms=s.n_firms, years=[int(y) for y in s.years_arr], seed=s.seed, missing=s.missing,
        entry_exit=s.entry_exit,
        cohorts=[int(g) for g in s.cohorts], effects=EFFECTS, female_mult=FEMALE_MULT,
        rural_mult=RURAL_MULT, programme_share=PROGRAMME_SHARE, programmes=PROGRAMMES,
        lcu_per_usd=LCU_PER_USD, enterprise_va_share_of_gdp=ENTERPRISE_VA_SHARE_OF_GDP,
        population=pd.DataFrame(s.N, index=list(COUNTRIES), columns=list(SIZE_CLASSES)),
        sample_allocation=pd.DataFrame(s.n_h, index=list(COUNTRIES), columns=list(SIZE_CLASSES)),
        population_notes=s.pop_notes,
        scale_factors=pd.DataFrame({"employees": s.k_emp, "turnover": s.k_turn,
                                    "loans": s.k_loan, "exports": s.k_exp,
                                    "exports_msme": s.k_exp_msme}, index=list(COUNTRIES)),
        parallel_trends="unconditional (see module docstring)",
        exit_model="hazard(size, age, registered, sector G/I, year 2020-21) x treatment; "
                   "independent of outcome shocks; common random numbers",
    )


def _emp_obs(base: np.ndarray, mult: np.ndarray, tau: np.ndarray) -> np.ndarray:
    return np.maximum(1, np.rint(base * mult * np.exp(tau)))


def _norm_cdf(z: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr
    return ndtr(z)


def _ar1(rng: np.random.Generator, n: int, T: int, *, rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) noise (n, T) with marginal sd ``sd``."""
    out = np.empty((n, T))
    innov = rng.normal(0.0, sd * np.sqrt(1 - rho ** 2), (n, T))
    out[:, 0] = rng.normal(0.0, sd, n)
    for t in range(1, T):
        out[:, t] = rho * out[:, t - 1] + innov[:, t]
    return out


# ------------------------------------------------------------------------------------------
# Truth
# ------------------------------------------------------------------------------------------
def _att_gt(g: np.ndarray, years: np.ndarray, eff: np.ndarray, inc: np.ndarray,
            cohorts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ATT(g,t) (n_cohorts, T) and unit counts: mean of eff over included units."""
    gi = np.searchsorted(cohorts, g)
    T = len(years)
    key = (gi[:, None] * T + np.arange(T)[None, :])[inc]
    s = np.bincount(key, weights=eff[inc], minlength=len(cohorts) * T)
    c = np.bincount(key, minlength=len(cohorts) * T)
    with np.errstate(invalid="ignore", divide="ignore"):
        att = s / c
    return att.reshape(len(cohorts), T), c.reshape(len(cohorts), T)


def _aggregate(att: np.ndarray, cnt: np.ndarray, pg: np.ndarray, cohorts: np.ndarray,
               years: np.ndarray) -> list[tuple[str, str, float]]:
    """R did::aggte aggregations of ATT(g,t) with group-size weights pg."""
    out: list[tuple[str, str, float]] = []
    G, T = att.shape
    ev = years[None, :] - cohorts[:, None]
    valid = cnt > 0
    post = (ev >= 0) & valid
    W = pg[:, None] * post
    if W.sum() > 0:
        out.append(("simple", "all", float((W * np.nan_to_num(att)).sum() / W.sum())))
    theta_g = []
    for k in range(G):
        if post[k].any():
            v = float(att[k, post[k]].mean())
            theta_g.append((k, v))
            out.append(("group", str(int(cohorts[k])), v))
    if theta_g:
        ks = np.array([k for k, _ in theta_g])
        vs = np.array([v for _, v in theta_g])
        out.append(("group", "overall", float((pg[ks] * vs).sum() / pg[ks].sum())))
    dyn = []
    for e in range(int(ev[valid].min()) if valid.any() else 0, int(ev.max()) + 1):
        m = (ev == e) & valid
        if m.any():
            w = (pg[:, None] * m)
            v = float((w * np.nan_to_num(att)).sum() / w.sum())
            out.append(("dynamic", str(e), v))
            if e >= 0:
                dyn.append(v)
    if dyn:
        out.append(("dynamic", "overall", float(np.mean(dyn))))
    cal = []
    for j, t in enumerate(years):
        m = post[:, j]
        if m.any():
            v = float((pg[m] * att[m, j]).sum() / pg[m].sum())
            out.append(("calendar", str(int(t)), v))
            cal.append(v)
    if cal:
        out.append(("calendar", "overall", float(np.mean(cal))))
    return out


def _truth(g: np.ndarray, ptype: np.ndarray, years: np.ndarray,
           effects: dict[str, tuple[np.ndarray, np.ndarray]],
           subgroups: dict[str, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, gt_rows = [], []
    groups = [("all", np.ones(len(g), dtype=bool))] + [
        (t, ptype == j) for j, t in enumerate(PROGRAMME_TYPES)]
    for outcome, (eff, inc) in effects.items():
        for pname, psel in groups:
            if not psel.any():
                continue
            coh = np.unique(g[psel])
            att, cnt = _att_gt(g[psel], years, eff[psel], inc[psel], coh)
            pg = np.bincount(np.searchsorted(coh, g[psel]), minlength=len(coh)).astype(float)
            for agg, level, v in _aggregate(att, cnt, pg, coh, years):
                n_units = int(psel.sum())
                rows.append((outcome, pname, agg, level, v, n_units))
            for k, gg in enumerate(coh):
                for j, t in enumerate(years):
                    if cnt[k, j] > 0:
                        gt_rows.append((outcome, pname, int(gg), int(t), int(t - gg),
                                        float(att[k, j]), int(cnt[k, j])))
            for sname, ssel in subgroups.items():
                sel = psel & ssel
                if not sel.any():
                    continue
                coh_s = np.unique(g[sel])
                att_s, cnt_s = _att_gt(g[sel], years, eff[sel], inc[sel], coh_s)
                pg_s = np.bincount(np.searchsorted(coh_s, g[sel]),
                                   minlength=len(coh_s)).astype(float)
                simple = [v for a, lv, v in _aggregate(att_s, cnt_s, pg_s, coh_s, years)
                          if a == "simple"]
                if simple:
                    rows.append((outcome, pname, "subgroup", sname, simple[0], int(sel.sum())))
    truth = pd.DataFrame(rows, columns=["outcome", "programme_type", "aggregation", "level",
                                        "att", "n_units"])
    truth_gt = pd.DataFrame(gt_rows, columns=["outcome", "programme_type", "cohort", "year",
                                              "event_time", "att", "n_units"])
    for col in ("outcome", "programme_type", "aggregation", "level"):
        truth[col] = truth[col].astype("str")
    for col in ("outcome", "programme_type"):
        truth_gt[col] = truth_gt[col].astype("str")
    return truth, truth_gt


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------
def _targets(years, country, size, birth, alive, w, employees, value_added, loans, exports,
             online, intl, registered, gdp) -> pd.DataFrame:
    by = BASELINE_YEAR if BASELINE_YEAR in years else int(years[0])
    ti = int(np.flatnonzero(years == by)[0])
    ty = max(TARGET_YEAR, by + 1)
    rows = []
    msme = size < 3
    for ci, c in enumerate(COUNTRIES):
        sel = (country == ci) & alive[:, ti]
        ww = w[sel, ti]
        ms = msme[sel]
        lg = ~ms

        def share(v: np.ndarray, num_mask: np.ndarray, den_mask: np.ndarray,
                  ww: np.ndarray = ww) -> float:
            """100 x weighted total of v over num_mask / weighted total of v over den_mask."""
            return 100 * (ww[num_mask] * v[num_mask]).sum() / (ww[den_mask] * v[den_mask]).sum()

        def prop(flag: np.ndarray, ww: np.ndarray = ww, ms: np.ndarray = ms) -> float:
            """100 x weighted share of MSMEs with flag."""
            return 100 * (ww[ms] * flag[ms]).sum() / ww[ms].sum()

        one = np.ones(int(sel.sum()))
        emp = employees[sel, ti].astype(float)
        va = value_added[sel, ti]
        prod_m = (ww[ms] * va[ms]).sum() / (ww[ms] * emp[ms]).sum()
        prod_l = (ww[lg] * va[lg]).sum() / (ww[lg] * emp[lg]).sum()
        all_ = np.ones_like(ms)
        vals = {
            "K01": share(one, ms, all_),
            "K02": share(emp, ms, all_),
            "K03": 100 * (ww[ms] * va[ms]).sum() / gdp[ci, ti],
            "K04": prod_m / prod_l,
            "K05": prop(online[sel, ti]),
            "K06": share(loans[sel, ti], ms, all_),
            "K07": share(exports[sel, ti], ms, all_),
            "K08": prop((exports[sel, ti] > 0) | intl[sel]),
            "K09": prop(registered[sel]),
            "K10": prop(birth[sel] >= by - 1),
        }
        for k, v in vals.items():
            kind, f = TARGET_RULES[k]
            tv = v + f * (100 - v) if kind == "gap" else v * (1 + f)
            rows.append(dict(
                indicator=k, country=c, baseline_year=by, baseline_value=float(v),
                target_year=ty, target_value=float(tv),
                unit="ratio" if k == "K04" else "percent",
                source="synthetic illustrative target (msme_eval.synth)",
                note=(f"baseline = weighted synthetic value in {by}; target = baseline + "
                      f"{f:g} x (100 - baseline)" if kind == "gap" else
                      f"baseline = weighted synthetic value in {by}; target = baseline x "
                      f"{1 + f:g}") + "; illustrative, not an official target"))
    out = pd.DataFrame(rows)
    for col in ("indicator", "country", "unit", "source", "note"):
        out[col] = out[col].astype("str")
    return out


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------
def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_sample(out_dir: str | os.PathLike, data: SyntheticData | None = None,
                 **generate_kwargs: Any) -> dict[str, Path]:
    """Write panel.parquet, macro.csv, targets.csv, truth.csv, truth_gt.csv and
    calibration.csv into ``out_dir`` (each written to a temporary name in the same folder,
    then ``os.replace``d). Generates ``data`` with ``generate(**generate_kwargs)`` if None.
    Returns {name: path}."""
    if data is None:
        data = generate(**generate_kwargs)
    elif generate_kwargs:
        raise TypeError("pass either data or generate() arguments, not both")
    out = Path(out_dir)
    paths = {
        "panel": out / "panel.parquet", "macro": out / "macro.csv", "targets": out / "targets.csv",
        "truth": out / "truth.csv", "truth_gt": out / "truth_gt.csv",
        "calibration": out / "calibration.csv",
    }
    _atomic(paths["panel"], lambda p: data.panel.to_parquet(p, index=False))
    for name in ("macro", "targets", "truth", "truth_gt", "calibration"):
        frame = getattr(data, name)
        _atomic(paths[name], lambda p, f=frame: f.to_csv(p, index=False))
    return paths


# ------------------------------------------------------------------------------------------
# Large samples: chunked, partitioned Parquet (bounded memory)
# ------------------------------------------------------------------------------------------
def chunk_plan(n_firms: int, chunk_firms: int = 100_000, seed: int = 0) -> pd.DataFrame:
    """Chunks of :func:`write_partitioned`: ``chunk``, ``n_firms``, ``seed``, ``share``.

    ``k = min(ceil(n_firms / chunk_firms), floor(n_firms / 1000))`` chunks of near-equal size
    (sizes differ by <= 1, each >= 1000). Chunk 0 uses ``seed`` itself (a single chunk
    reproduces ``generate(n_firms, seed=seed)``); chunk ``i > 0`` uses the first 64-bit word of
    ``numpy.random.SeedSequence([seed, i])``. ``share`` = chunk size / n_firms.
    """
    n_firms, chunk_firms = int(n_firms), int(chunk_firms)
    if chunk_firms < 1000:
        raise ValueError(f"chunk_firms={chunk_firms} must be >= 1000 (generate() needs >= 1000 "
                         "firms for 2+ PSUs in each of the 40 strata)")
    if n_firms < 1000:
        raise ValueError(f"n_firms={n_firms} is too small; use >= 1000")
    k = min(-(-n_firms // chunk_firms), n_firms // 1000)
    sizes = np.full(k, n_firms // k) + (np.arange(k) < n_firms % k)
    seeds = [int(seed)] + [int(np.random.SeedSequence([int(seed), i]).generate_state(
        1, np.uint64)[0]) for i in range(1, k)]
    return pd.DataFrame({"chunk": np.arange(k), "n_firms": sizes.astype(np.int64),
                         "seed": pd.array(seeds, dtype="object"), "share": sizes / n_firms})


def _relabel_chunk(panel: pd.DataFrame, chunk: int, share: float, k: int) -> pd.DataFrame:
    """Chunk-unique firm and PSU labels; weights scaled by the chunk's share of the sample."""
    if k == 1:
        return panel
    tag = f"{chunk:04d}"
    out = panel.copy()
    fid = out["firm_id"].astype("str")
    out["firm_id"] = (fid.str.slice(0, 3) + tag + "-" + fid.str.slice(3)).astype(
        panel["firm_id"].dtype)
    out["psu"] = (out["psu"].astype("str") + "-k" + tag).astype(panel["psu"].dtype)
    out["weight"] = out["weight"] * share
    return out


def write_partitioned(out_dir: str | os.PathLike, n_firms: int, *, chunk_firms: int = 100_000,
                      seed: int = 0, years: Iterable[int] = range(2015, 2025),
                      missing: float = 0.0, entry_exit: bool = True,
                      progress: Any = None) -> dict[str, Path]:
    """Write a large synthetic panel as a hive-partitioned Parquet dataset, chunk by chunk.

    ``out_dir/panel/country=XXX/year=YYYY/part-0.parquet`` (one file per country-year, one row
    group per chunk; ``country`` and ``year`` live in the folder names, as pyarrow, DuckDB and
    Spark expect), plus ``macro.csv``, ``targets.csv``, ``calibration.csv`` (from chunk 0) and
    ``manifest.json`` (arguments, chunk plan, rows per partition). Memory is bounded by one
    chunk: ``generate(chunk_firms)`` (~0.5 GB at 100,000 firms) plus the Parquet buffers.

    The panel is the union of ``k`` independent samples (see :func:`chunk_plan`), each a full
    ``generate(n_firms=size_i, seed=seed_i, ...)`` draw of the same population and design:
    firm ids become ``ISO3 + chunk + "-" + number`` (``"IDN0003-0001234"``), PSU labels get the
    suffix ``"-k0003"`` (each sample keeps its own PSUs within the common strata) and weights
    are multiplied by ``share_i = size_i / n_firms`` so they still sum to the population
    ``N_h`` in every stratum-year. Deterministic for given arguments; **the result depends on
    ``chunk_firms``** (a different split draws different samples), so benchmarks must record
    it (``manifest.json`` does). With ``chunk_firms >= n_firms`` the panel equals
    ``generate(n_firms, seed=seed)``. With many chunks, near-census strata (large firms of
    small countries, sampled at up to 90 %) can hold more sampled firms than population
    units, so weights there may fall below 1 -- fine for benchmarks, not a design to copy.
    The truth tables are not written (planted effects are per chunk; use
    :func:`write_sample` for evaluation checks). ``progress``: optional callable
    ``progress(done_firms, n_firms)`` after each chunk. The dataset is written into a
    temporary folder next to ``out_dir/panel`` and renamed into place at the end.
    """
    import shutil

    plan = chunk_plan(n_firms, chunk_firms, seed)
    years = list(years)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / "panel"
    tmp = Path(tempfile.mkdtemp(prefix=".panel.", suffix=".tmp", dir=out))
    sink = _PartitionSink(tmp)
    first: SyntheticData | None = None
    done = 0
    try:
        for row in plan.itertuples(index=False):
            data = generate(n_firms=int(row.n_firms), years=years, seed=int(row.seed),
                            missing=missing, entry_exit=entry_exit)
            panel = _relabel_chunk(data.panel, int(row.chunk), float(row.share), len(plan))
            if first is None:
                first = data
            data = None  # free the chunk's other tables
            sink.write(panel)
            del panel
            done += int(row.n_firms)
            if progress is not None:
                progress(done, int(n_firms))
        sink.close()
        _replace_folder(tmp, final)
    except BaseException:
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    assert first is not None
    paths = {"panel": final, "macro": out / "macro.csv", "targets": out / "targets.csv",
             "calibration": out / "calibration.csv", "manifest": out / "manifest.json"}
    for name in ("macro", "targets", "calibration"):
        frame = getattr(first, name)
        _atomic(paths[name], lambda p, f=frame: f.to_csv(p, index=False))
    manifest = {
        "generator": "msme_eval.synth.write_partitioned",
        "n_firms": int(n_firms), "chunk_firms": int(chunk_firms), "seed": int(seed),
        "years": [int(y) for y in years], "missing": missing, "entry_exit": entry_exit,
        "chunks": [{"chunk": int(r.chunk), "n_firms": int(r.n_firms), "seed": int(r.seed),
                    "share": float(r.share)} for r in plan.itertuples(index=False)],
        "partitioning": ["country", "year"], "rows": dict(sorted(sink.rows.items())),
        "n_rows": int(sum(sink.rows.values())),
        "note": "macro/targets/calibration come from chunk 0; depends on chunk_firms",
    }
    _atomic(paths["manifest"], lambda p: Path(p).write_text(json.dumps(manifest, indent=1)))
    return paths


class _PartitionSink:
    """One open Parquet writer per country-year folder ``country=XXX/year=YYYY`` under
    ``root``; each :meth:`write` appends one row group per partition; ``rows`` counts rows."""

    def __init__(self, root: Path):
        self.root = root
        self.writers: dict[tuple[str, int], Any] = {}
        self.rows: dict[str, int] = {}
        self.schema = None

    def write(self, panel: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        country = panel["country"].astype("str").to_numpy()
        year = panel["year"].to_numpy(dtype=np.int64)
        body = panel.drop(columns=["country", "year"])
        # the pandas metadata kept in the schema restores Int64/boolean/category on read
        table = pa.Table.from_pandas(body, schema=self.schema, preserve_index=False)
        self.schema = table.schema if self.schema is None else self.schema
        del body
        codes, uniq = pd.factorize(pd.MultiIndex.from_arrays([country, year]), sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
        for g, (c, y) in enumerate(uniq):
            part = table.take(pa.array(order[bounds[g]:bounds[g + 1]]))
            key = (c, int(y))
            if key not in self.writers:
                folder = self.root / f"country={c}" / f"year={int(y)}"
                folder.mkdir(parents=True, exist_ok=True)
                self.writers[key] = pq.ParquetWriter(folder / "part-0.parquet", self.schema)
            self.writers[key].write_table(part)
            self.rows[f"{c}/{int(y)}"] = self.rows.get(f"{c}/{int(y)}", 0) + part.num_rows

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers.clear()


def _replace_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` to ``final``, replacing an older one."""
    import shutil

    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=".panel.old.", dir=final.parent))
        os.replace(final, old / "panel")
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)


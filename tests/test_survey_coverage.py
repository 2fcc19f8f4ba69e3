"""Coverage of the indicators' 95% intervals in repeated two-stage samples (issue #14).

A census-like population of MSMEs (and the large firms K02/K04 compare them with) in two
countries: strata = country x size class, PSUs = districts (150 per country, every district
has firms of every size class), firms with a district effect (intra-cluster correlation) on
size, productivity, online sales, international activity and registration, and owner sex
shifting them too. Each replicate is a stratified two-stage sample -- ``n_psu`` districts per
stratum by simple random sampling without replacement, then ``PER_PSU`` firms of the stratum
in each chosen district (all of them when fewer) -- with weights ``M_h / n_psu * N_hd / m_hd``.

Two scenarios for the large firms (``SCENARIOS``). The main one, ``"take-all"``, is the
standard business-survey design: enterprise surveys and structural business statistics
enumerate the large enterprises completely (a certainty stratum; Eurostat SBS and most national
establishment surveys census enterprises with 250+ employees), so every large firm is in every
sample with weight 1, all in one PSU of their stratum, estimated with
``singleton="certainty"`` (R ``survey``: a stratum sampled with fraction 1 contributes 0;
the MSME samples are the same random draws as in the other scenario). The stress scenario,
``"sampled"``, samples the large-firm stratum like the others (``n_psu`` districts x ~3 large
firms per country: 6-24 firms with heavy-tailed value added), which is where K04's shortfall
was first measured.

The indicators go through the real code path, :func:`msme_eval.indicators.compute`, on all
replicates at once: replicate ``r`` is the period ``r`` of one stacked panel, and a sampled
district's PSU label is its draw order within the stratum, so every period holds one
complete, independent sample whose variance and Satterthwaite df involve only its own rows
(periods are domains of the full design; the other periods' rows contribute 0 to its PSU
totals, and every stratum has exactly ``n_psu`` PSU labels). The truth is the same
``compute`` on the whole population (weight 1).

Reported per indicator x PSUs per stratum x domain (overall, women-owned, men-owned):
relative bias of the estimator, SE ratio (mean SE / empirical SD of the estimates) and
coverage of the 95% intervals compute() publishes (effective Satterthwaite df; the logit
interval for the percentages of firms K05 K08 K09 and the MSME share of employment K02, the
log-scale interval for K04, the t interval otherwise) and, for the logit-interval
indicators, of the symmetric t interval on the same estimate, SE and df
(``survey.t_interval``; what the logit interval gains). Run with ``-s`` to print the table.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from msme_eval import indicators, survey

INDICATORS = ("K02", "K04", "K05", "K08", "K09")
COUNTRIES = ("KHM", "THA")
CLASSES = ("micro", "small", "medium", "large")
N_DISTRICTS = 150
PER_PSU = 10
REPS = 1000
#: the large-firm stratum: enumerated (main) or sampled like the MSME strata (stress), and the
#: singleton rule each needs (the take-all stratum is one certainty PSU)
SCENARIOS = ("take-all", "sampled")
SINGLETON = {"take-all": "certainty", "sampled": "fail"}
PROPORTIONS = ("K05", "K08", "K09")  # within-group shares of MSMEs: logit intervals apply
LOGIT = (*PROPORTIONS, "K02")  # the published interval is on the logit scale (table.interval)
DOMAINS = {"total": ("total", "total"), "women": ("owner_female", "female"),
           "men": ("owner_female", "male")}


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def population(seed: int = 14) -> pd.DataFrame:
    """The census: firms sorted by (country, size class, district), one row each.

    Firms per district and class: Poisson(40) micro, Poisson(12) small, 1 + Poisson(4)
    medium, 1 + Poisson(2) large (about 9,000 firms per country). District effect
    ``u_d ~ N(0, 1)``; a firm's employees lognormal within its class's range, value added per
    employee ``exp(a_class + 0.35 u_d - 0.2 female + N(0, 0.6^2))``, and 0/1 traits logistic in
    the class, ``u_d`` and owner sex (online sales, international activity, registration).
    """
    rng = np.random.default_rng(seed)
    frames = []
    lam = {"micro": 40, "small": 12, "medium": 4, "large": 2}
    floor = {"micro": 0, "small": 0, "medium": 1, "large": 1}
    emp_range = {"micro": (1, 9), "small": (10, 49), "medium": (50, 249), "large": (250, 3000)}
    shift = {"micro": 0.0, "small": 0.6, "medium": 1.0, "large": 1.4}
    female_p = {"micro": 0.40, "small": 0.25, "medium": 0.15, "large": 0.10}
    for ci, country in enumerate(COUNTRIES):
        u = rng.normal(0.0, 1.0, N_DISTRICTS)
        for cls in CLASSES:
            n_d = floor[cls] + rng.poisson(lam[cls], N_DISTRICTS)
            district = np.repeat(np.arange(N_DISTRICTS), n_d)
            ud = u[district]
            n = len(district)
            female = rng.random(n) < female_p[cls]
            lo, hi = emp_range[cls]
            emp = np.clip(np.round(np.exp(rng.normal(np.log(lo + 1) + 0.4 + 0.3 * ud, 0.7))),
                          lo, hi)
            vape = np.exp(1.5 + shift[cls] + 0.2 * ci + 0.35 * ud - 0.2 * female
                          + rng.normal(0.0, 0.6, n))
            exporter = rng.random(n) < _logistic(-2.5 + 1.2 * shift[cls] + 0.7 * ud)
            frames.append(pd.DataFrame({
                "country": country, "size_class": cls, "district": district,
                "owner_female": female, "employees": emp, "value_added": emp * vape,
                "exports": np.where(exporter, emp * vape * rng.uniform(0.05, 0.6, n), 0.0),
                "imports_or_gvc": rng.random(n) < _logistic(-2.0 + shift[cls] + 0.6 * ud),
                "sells_online": rng.random(n) < _logistic(-1.0 + 0.8 * ud + shift[cls]
                                                          - 0.3 * female),
                "registered": rng.random(n) < _logistic(0.3 + 0.9 * ud + 2 * shift[cls]
                                                        - 0.4 * female),
            }))
    pop = pd.concat(frames, ignore_index=True)
    pop["firm_id"] = np.arange(len(pop))
    pop["sector"] = "C"
    return pop


def _cells(pop: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and size of every (country, class, district) cell in ``pop``'s row order, and each
    cell's stratum (country, class) code; cells are ordered stratum-major, district-minor."""
    key = (pop["country"].map({c: i for i, c in enumerate(COUNTRIES)}).to_numpy() * len(CLASSES)
           + pop["size_class"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy())
    cell = key * N_DISTRICTS + pop["district"].to_numpy()
    assert (np.diff(cell) >= 0).all(), "population must be sorted by stratum and district"
    size = np.bincount(cell, minlength=len(COUNTRIES) * len(CLASSES) * N_DISTRICTS)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    stratum = np.repeat(np.arange(len(COUNTRIES) * len(CLASSES)), N_DISTRICTS)
    return start, size, stratum


def two_stage_samples(pop: pd.DataFrame, n_psu: int, reps: int, seed: int,
                      large: str = "take-all") -> pd.DataFrame:
    """``reps`` stratified two-stage samples stacked as periods 0..reps-1 (module docstring).

    ``large="take-all"`` (the main scenario): the large firms are enumerated, every one of
    the country in every replicate with weight 1, all in one PSU of their stratum (a certainty
    stratum: ``singleton="certainty"``, variance contribution 0); ``"sampled"`` (the stress
    scenario): the large-firm stratum is sampled like the others. The MSME strata's samples
    are the same in both (the same random numbers are drawn)."""
    if large not in SCENARIOS:
        raise ValueError(f"large must be one of {SCENARIOS}, got {large!r}")
    rng = np.random.default_rng(seed)
    start, size, _ = _cells(pop)
    n_strata = len(COUNTRIES) * len(CLASSES)
    # stage 1: n_psu of the N_DISTRICTS districts per (replicate, stratum), SRSWOR
    chosen = rng.random((reps, n_strata, N_DISTRICTS)).argsort(axis=2)[:, :, :n_psu]
    cell = (np.arange(n_strata)[None, :, None] * N_DISTRICTS + chosen).reshape(-1)
    rep = np.repeat(np.arange(reps), n_strata * n_psu)
    label = np.tile(np.arange(n_psu), reps * n_strata)
    # stage 2: min(PER_PSU, N_hd) firms per chosen cell, SRSWOR (random keys, absent at inf)
    big = int(size.max())
    keys = rng.random((len(cell), big))
    keys[np.arange(big)[None, :] >= size[cell][:, None]] = np.inf
    pick = keys.argsort(axis=1)[:, :PER_PSU]
    m = np.minimum(size[cell], PER_PSU)
    ok = np.arange(PER_PSU)[None, :] < m[:, None]
    rows = (start[cell][:, None] + pick)[ok]
    s = pop.iloc[rows].reset_index(drop=True)
    per_firm = np.broadcast_to(np.arange(len(cell))[:, None], ok.shape)[ok]
    s["weight"] = (N_DISTRICTS / n_psu * size[cell] / m)[per_firm]
    s["year"] = rep[per_firm]
    s["strata"] = s["size_class"]
    s["psu"] = label[per_firm]
    return _take_all_large(s, pop, reps) if large == "take-all" else s


def _take_all_large(s: pd.DataFrame, pop: pd.DataFrame, reps: int) -> pd.DataFrame:
    """Replace the sampled large firms by all of them in every replicate: weight 1, PSU 0."""
    census_large = pop[pop["size_class"] == "large"]
    rep = np.repeat(np.arange(reps), len(census_large))
    every = census_large.iloc[np.tile(np.arange(len(census_large)), reps)].reset_index(drop=True)
    every = every.assign(weight=1.0, year=rep, strata="large", psu=0)
    return pd.concat([s[s["size_class"] != "large"], every[s.columns]], ignore_index=True)


def _estimates(panel: pd.DataFrame, design: tuple[str, ...],
               singleton: str = "fail") -> pd.DataFrame:
    out = indicators.compute(panel, breakdowns=["owner_female"], indicators=list(INDICATORS),
                             aggregate=False, disclosure=False, design=design,
                             singleton=singleton)
    return pd.DataFrame(out)


def coverage_table(pop: pd.DataFrame, n_psu: int, reps: int = REPS,
                   seed: int | None = None, large: str = "take-all") -> pd.DataFrame:
    """Per indicator x domain for ``n_psu`` PSUs per stratum, pooled over the countries
    (samples drawn with ``seed``, default ``1000 + n_psu``):
    relative bias ``mean(est / truth - 1)``, ``se_ratio`` mean SE / empirical SD and
    ``var_ratio`` mean SE^2 / empirical variance (per country, then averaged; for small df the
    SE ratio is below 1 even for an unbiased variance, E sqrt(chi2_v / v) < 1), ``coverage`` of
    the published intervals (``below``/``above``: the share of intervals wholly below / above
    the truth), ``coverage_wald`` (``LOGIT``) of the symmetric t interval,
    ``oracle`` coverage of ``est +- 1.96 x empirical SD`` (is the estimator's own distribution
    near normal?), ``median_df`` and NaN intervals."""
    truth = _estimates(pop.assign(year=0), design=()).set_index(
        ["indicator", "ref_area", "breakdown", "group"])["value"]
    seed = 1000 + n_psu if seed is None else seed
    est = _estimates(two_stage_samples(pop, n_psu, reps, seed=seed, large=large),
                     design=("weight", "strata", "psu"), singleton=SINGLETON[large])
    rows = []
    for ind in INDICATORS:
        for dom, (brk, grp) in DOMAINS.items():
            sel = est[(est["indicator"] == ind) & (est["breakdown"] == brk) & (est["group"] == grp)]
            assert len(sel) == reps * len(COUNTRIES), (ind, dom, len(sel))
            rows.append({"indicator": ind, "n_psu": n_psu, "domain": dom,
                         **_cell_stats(sel, truth.xs((ind, brk, grp), level=[0, 2, 3]),
                                       logit=ind in LOGIT)})
    return pd.DataFrame(rows)


def _cell_stats(sel: pd.DataFrame, truth: pd.Series, logit: bool) -> dict[str, float]:
    t = truth.loc[sel["ref_area"]].to_numpy()
    cover_wald = np.nan
    if logit:  # the same estimates, SEs and df, symmetric t interval
        lo, hi = survey.t_interval(sel["value"].to_numpy(), sel["se"].to_numpy(),
                                   sel["df"].to_numpy(), 0.05)
        cover_wald = float(np.mean((lo <= t) & (t <= hi)))
    v, se = sel["value"].to_numpy(), sel["se"].to_numpy()
    by_area = sel.assign(v=v, se2=se**2, se=se).groupby("ref_area")
    sd = by_area["v"].std(ddof=1)
    sd_row = sd.loc[sel["ref_area"]].to_numpy()
    return {"rel_bias_pct": 100 * float(np.mean(v / t - 1)),
            "se_ratio": float((by_area["se"].mean() / sd).mean()),
            "var_ratio": float((by_area["se2"].mean() / sd**2).mean()),
            "coverage": float(np.mean((sel["ci_low"].to_numpy() <= t)
                                      & (t <= sel["ci_high"].to_numpy()))),
            "coverage_wald": cover_wald,
            "below": float(np.mean(sel["ci_high"].to_numpy() < t)),  # truth above the interval
            "above": float(np.mean(sel["ci_low"].to_numpy() > t)),
            "oracle": float(np.mean(np.abs(v - t) <= 1.959964 * sd_row)),
            "median_df": float(np.median(sel["df"])),
            "nan_ci": int(np.isnan(sel["ci_low"].to_numpy()).sum())}


_POPULATION: list[pd.DataFrame] = []


def census_pop() -> pd.DataFrame:
    """The census, built once per session."""
    if not _POPULATION:
        _POPULATION.append(population())
    return _POPULATION[0]


@pytest.fixture(scope="module")
def census() -> pd.DataFrame:
    return census_pop()


def test_samples_are_stratified_two_stage_and_weights_estimate_counts(census):
    # the sampler itself: every stratum holds n_psu PSU labels per replicate, at most PER_PSU
    # firms each, and the weights are unbiased for the stratum counts (mean over replicates)
    s = two_stage_samples(census, n_psu=3, reps=400, seed=5, large="sampled")
    per = s.groupby(["year", "country", "strata"])["psu"].nunique()
    assert (per == 3).all() and len(per) == 400 * len(COUNTRIES) * len(CLASSES)
    assert s.groupby(["year", "country", "strata", "psu"]).size().max() <= PER_PSU
    per_rep = s.groupby(["year", "country", "strata"])["weight"].sum().groupby(
        ["country", "strata"])
    true = census.groupby(["country", "size_class"]).size()
    true.index = true.index.set_names(["country", "strata"])
    mc_se = per_rep.std() / np.sqrt(400)
    assert (np.abs(per_rep.mean() - true.loc[mc_se.index]) <= 4 * mc_se).all()
    # a take-all cell (N_hd <= PER_PSU) has weight M_h / n_psu exactly
    small_cells = s[s["strata"] == "large"].groupby(["year", "country", "psu"])
    assert np.allclose(small_cells["weight"].first() * 3 / N_DISTRICTS,
                       np.maximum(small_cells.size() / PER_PSU, 1.0)
                       * (small_cells.size() <= PER_PSU))


#: cells measured outside the 93-97% band with the published intervals, per scenario
#: (coverage, seeds fixed; 2000 intervals per cell, MC SE 0.49 points). Rule: a listed cell
#: must not get worse (2 MC SEs) and must stay outside the band -- a fix must update the list.
#: Pooled over 16 seeds (32,000 intervals per cell, MC SE 0.09-0.23 points;
#: test_band_edges_over_16_seeds) the means are given in brackets.
#:
#: Main scenario ("take-all": the large firms enumerated, weight 1, one certainty PSU).
#: K04 (all domains at 3 and 8 PSUs; women- and men-owned at 2): the large firms' part of
#: log K04 is now exact (variance 0, test_k04_missing_variance_sits_mostly_in_the_large_firm_ratio),
#: so K04's interval is the MSME productivity ratio's A/B alone, whose linearised variance is
#: 0.33-0.83 of its Monte Carlo variance (the medium stratum, 1 + Poisson(4) firms in each of
#: n_psu districts, all taken, carries 87-92% of it: a ratio of heavy-tailed totals from 2-8
#: clusters) with fewer df than log K04 had in the stress scenario (one dominant stratum):
#: overall 93.15 / 89.8 / 87.95% at 2 / 3 / 8 PSUs [93.2 / 89.8 / 88.6%], women-owned 89.3 /
#: 79.6 / 78.75% [89.2 / 79.5 / 79.3%], men-owned 92.55 / 88.35 / 87.8% [92.8 / 89.2 / 87.6%].
#: Taking the large firms out of sampling removes 58-98% of K04's missing variance overall but
#: not the shortfall; what is left is the MSME ratio's own small-sample nonlinearity. Its
#: intervals miss from below (6-21% of them, 0.6-1.2% from above): a sample with a low
#: estimate has a small SE (their correlation 0.70-0.87). Measured ad hoc on these samples
#: (fixed seeds), none reaching the band: a JKn variance with the log interval (women 91.0 /
#: 81.7 / 80.3% at 2 / 3 / 8 PSUs; JKn/linearised variance 1.2-1.4), the same with the
#: jackknife bias-corrected ratio (bias -7.5% -> -2.0%, coverage unchanged), Hall's (1992)
#: skewness-removing transformation of the t statistic with the PSU residuals' third moment
#: (women 82.7 / 85.0% at 3 / 8; overall at 3 PSUs 89.8 -> 88.7%), and weights calibrated to
#: the register's employment per stratum (GREG residuals; lower: women 75.9 / 77.1% at 3 / 8).
#: K02 (MSME share of employment) was short for women-owned firms at 3 and 8 PSUs with the
#: symmetric t interval (91.95%, 92.1% [92.05%, 92.3%]; the women's MSME employment, resting on
#: the same few medium-firm clusters, is all of its variance, and the misses were 7.4% below
#: against 0.5% above). Published on the logit scale since issue #14's last round (a share of
#: a panel total in [0, 100], as the percentages of firms): 95.5%, 93.3% [95.3%, 93.9%]; every
#: K02 cell of this scenario is in the band (16 seeds at 2 PSUs: 96.5-97.0%).
#: K09 overall at 3 PSUs (92.6% in this sample; 16 seeds 94.26%, range 92.6-95.2%): Monte Carlo
#: error -- this seed is the lowest of 16, 2.6 binomial SEs below their mean (K05 K08 K09 are
#: MSME-only: both scenarios draw the same MSME samples, so their coverage is the same in both).
#: The mechanism behind the small shortfall is real (the estimated Satterthwaite df rises when
#: the dominant stratum's v_h is underestimated;
#: test_proportion_shortfall_at_three_psus_is_the_estimated_df) but costs ~0.7 points, not 2.4.
#: ``df="design"`` would bring this sample to 95.0% but pushes 14 of the 18 proportion cells at
#: 2-3 PSUs above 97% (test_design_df_fixes_three_psus_but_over_covers): not adopted. The logit
#: interval (published for K05 K08 K09 since 2fe93d0) brought the women-owned proportions into
#: the band (symmetric t: 91.0-94.2% at 2, 3 and 8 PSUs; logit 94.6-96.4%).
#:
#: Stress scenario ("sampled": the large firms a sampled stratum, n_psu districts x ~3 firms per
#: country). K04 at 3 and 8 PSUs (all domains): the covariance of its four totals is unbiased,
#: but the plug-in gradient of (A/B)/(C/D) shrinks with the estimate (the large-firm stratum's
#: value added per employee is heavy-tailed), so the linearised variance of log K04 is
#: 0.40-0.72 of its Monte Carlo variance (bias 4-23%): a small-sample nonlinearity that no df
#: rule fixes (test_k04_shortfall_is_the_plug_in_gradient). Both parts of log K04 are short,
#: the large firms' log(C/D) most (0.42-0.73; the MSMEs' log(A/B) 0.51-0.83 overall), and it
#: holds 58-98% of the missing variance overall (26-70% for the women-owned cells)
#: (test_k04_missing_variance_sits_mostly_in_the_large_firm_ratio). The published interval is
#: on the log scale since issue #14's previous round (survey.log_interval): it brought the
#: women-owned cell at 2 PSUs into the band (90.35% -> 93.65%) and raised the women-owned cells
#: at 3 and 8 PSUs (84.9% -> 89.8%, 85.15% -> 88.15%; 16 seeds: 85.9 -> 89.5%, 86.6 -> 88.9%),
#: while overall / men at 8 PSUs lost ~0.7 points (90.5 -> 89.5%; 16 seeds 90.6 -> 89.9%)
#: (test_k04_log_interval_gains_where_the_symmetric_misses_below). Measured, not adopted: a
#: JKn (delete-one-PSU jackknife) variance is large enough (1.1-1.7x) but leaves the
#: women-owned cells at 3 and 8 PSUs below the band (test_k04_jackknife_does_not_reach_the_band;
#: with the log interval 93.8-97.4% at 2-3 PSUs, 92.7-93.0% at 8 in an ad-hoc 4000-replicate
#: run, but its replicates need each PSU's four totals from the engines' second pass).
#: K09 overall at 3 PSUs: as in the main scenario (the same MSME samples).
#: K02 women-owned at 2 PSUs is above the band since its logit interval (98.4% here; 16 seeds
#: 97.7%, symmetric t 95.7%): the large firms' sampled employment makes K02 biased upward
#: (+8.6%) with a median df of 1.9 -- the over-coverage at 2 PSUs of KNOWN_EXCESS's K08;
#: at 3 and 8 PSUs the logit interval gains (symmetric 93.1 / 93.3%, logit 96.0 / 94.7%).
#: The indicators page (notebooks/20_indicators.ipynb) quotes K04's measured range over both
#: scenarios (16-seed means 79% to 95%): update its sentence with these lists.
KNOWN_SHORTFALL: dict[tuple[str, str, int, str], float] = {
    ("take-all", "K04", 2, "women"): 0.8930, ("take-all", "K04", 2, "men"): 0.9255,
    ("take-all", "K04", 3, "total"): 0.8980, ("take-all", "K04", 3, "women"): 0.7960,
    ("take-all", "K04", 3, "men"): 0.8835,
    ("take-all", "K04", 8, "total"): 0.8795, ("take-all", "K04", 8, "women"): 0.7875,
    ("take-all", "K04", 8, "men"): 0.8780,
    ("take-all", "K09", 3, "total"): 0.9260,
    ("sampled", "K04", 3, "total"): 0.9175, ("sampled", "K04", 3, "women"): 0.8980,
    ("sampled", "K04", 3, "men"): 0.9145,
    ("sampled", "K04", 8, "total"): 0.8950, ("sampled", "K04", 8, "women"): 0.8815,
    ("sampled", "K04", 8, "men"): 0.8945,
    ("sampled", "K09", 3, "total"): 0.9260,
}
#: Above the band, both scenarios (MSME-only, the same samples): K08 overall at 2 PSUs (97.45%;
#: 16 seeds 97.27%, MC SE 0.09: a real excess of ~0.3 points, as K08 for men-owned MSMEs,
#: 96.95% here but 97.37% over 16 seeds). Median df 1.4: the t quantile with ~1 df is wide and
#: the variance slightly overestimated (var_ratio 1.08). No df rule of survey.DF_RULES fixes
#: it without pushing other cells out: "design" over-covers more, "nominal" (4 df per country)
#: covers 84-92% at 2 PSUs. Must not exceed it by more than 2 MC SEs, and must stay above 97%
#: (a fix updates the list).
KNOWN_EXCESS: dict[tuple[str, str, int, str], float] = {
    **{(large, "K08", 2, "total"): 0.9745 for large in SCENARIOS},
    ("sampled", "K02", 2, "women"): 0.9840}


def _check_band(key: tuple[str, str, int, str], coverage: float) -> None:
    """The cell is in 93-97%, or listed as a known shortfall / excess and not worse."""
    if key in KNOWN_SHORTFALL:
        assert KNOWN_SHORTFALL[key] - 0.01 <= coverage < 0.93, (key, coverage)
    elif key in KNOWN_EXCESS:
        assert 0.97 < coverage <= KNOWN_EXCESS[key] + 0.01, (key, coverage)
    else:
        assert 0.93 <= coverage <= 0.97, (key, coverage)


@pytest.mark.slow
@pytest.mark.parametrize("large", SCENARIOS)
@pytest.mark.parametrize("n_psu", [2, 3, 8])
def test_indicator_interval_coverage_on_a_census(census, n_psu, large):
    table = coverage_table(census, n_psu, large=large)
    print(f"\n{large}\n" + table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    assert (table["nan_ci"] == 0).all()
    # the estimators' own sampling distributions are near normal: +-1.96 true SD covers
    assert table["oracle"].between(0.93, 0.97).all(), table.to_string()
    # proportions: the linearised variance is unbiased (mean SE^2 / variance)
    props = table[table["indicator"].isin(PROPORTIONS)]
    assert props["var_ratio"].between(0.85, 1.15).all(), props.to_string()
    # the published (logit) interval keeps every proportion near 95% (measured 92.6-97.45%)
    # and every women-owned cell in the band (94.6-96.4%), where the symmetric t interval on
    # the same estimates, SEs and df misses more often
    assert props["coverage"].between(0.925, 0.975).all(), props.to_string()
    women = props[props["domain"] == "women"]
    assert women["coverage"].between(0.93, 0.97).all(), women.to_string()
    assert (women["coverage"] >= women["coverage_wald"]).all(), women.to_string()
    # K02 women-owned (a share of employment, logit since issue #14's last round): at 3 and 8
    # PSUs the symmetric t interval misses below the band (measured 92.0-93.3%) and the logit
    # interval gains (93.3-96.0%); at 2 PSUs both are wide (df ~1.5-1.9)
    k02 = table[(table["indicator"] == "K02") & (table["domain"] == "women")]
    if n_psu > 2:
        assert (k02["coverage"] > k02["coverage_wald"] + 0.01).all(), k02.to_string()
    for row in table.itertuples():
        _check_band((large, row.indicator, row.n_psu, row.domain), row.coverage)
    # Main scenario: K04's short intervals miss from one side, the truth above them (samples
    # without the rare high-productivity medium firms give a low estimate with a small SE; the
    # indicators page says so). Measured: 6.2-20.6% of intervals below the truth, 0.6-1.2%
    # above. (Stress scenario: both sides, the sampled large firms' C/D pushing the estimate
    # up as often: 2.9-8.5% below, 3.3-7.4% above.)
    k04 = table[(table["indicator"] == "K04") & (table["coverage"] < 0.93)]
    if large == "take-all":
        assert (k04["below"] > 5 * k04["above"]).all(), k04.to_string()


#: 16 independent sample sets (the three fixed seeds of the tests above and 13 more)
SEEDS_16 = (1002, 1003, 1008, *range(11, 24))


def pooled_coverage(pop: pd.DataFrame, n_psu: int, seeds: tuple[int, ...] = SEEDS_16
                    ) -> pd.DataFrame:
    """Coverage of the published intervals per indicator x domain over ``len(seeds)`` x REPS
    samples: mean over the seeds, min, max, the seed-to-seed SD and the binomial MC SE of the
    mean (``sqrt(c (1 - c) / (2 REPS len(seeds)))``; 2 countries per replicate)."""
    runs = pd.concat([coverage_table(pop, n_psu, seed=seed).assign(seed=seed) for seed in seeds])
    out = runs.groupby(["indicator", "n_psu", "domain"])["coverage"].agg(
        ["mean", "min", "max", "std"]).reset_index()
    out["mc_se"] = np.sqrt(out["mean"] * (1 - out["mean"]) / (2 * REPS * len(seeds)))
    return out


@pytest.mark.slow
def test_band_edges_over_16_seeds(census):
    # Main scenario (large firms enumerated; the proportions are MSME-only, so the same in
    # the stress scenario). The two proportion cells outside the band in the fixed samples,
    # with 16 x more samples (32,000 intervals per cell; MC SE of the mean 0.09-0.13 points;
    # measured):
    # * K09 overall at 3 PSUs: 94.26% (range 92.6-95.2%) -- in the band; the fixed sample's
    #   92.6% is the lowest of the 16 seeds (Monte Carlo error, 2.6 binomial SEs of one seed
    #   below the mean; its seed-to-seed SD 0.62 points against 0.52 binomial).
    # * K08 overall at 2 PSUs: 97.27% and men-owned 97.37% -- a real excess of ~0.3 points
    #   (> 2 MC SEs above 97%); K05 overall at 2 PSUs 97.06% is at the edge (MC error).
    # Every other proportion cell at 2 and 3 PSUs is in the band (94.8-96.9%). No df rule of
    # survey.DF_RULES fixes the 2-PSU excess without pushing cells out: "nominal" (4 df per
    # country) covers 84.0-91.8% at 2 PSUs, "design" over-covers more.
    # K02 and K04 (the large firms' part now exact): K04 at 3 PSUs 89.8 / 79.5 / 89.2%
    # (overall / women / men), at 2 PSUs 93.2% overall (in the band), 89.2% women, 92.8% men
    # (1.5 MC SEs below 93%: at the edge; listed from its fixed sample) -- real shortfalls
    # (KNOWN_SHORTFALL). (8 PSUs, ad hoc: K04 88.6 / 79.3 / 87.6%.) K02 on the logit scale:
    # 96.5 / 96.5 / 97.0% at 2 PSUs, 95.1 / 95.3 / 95.0% at 3 (overall / women / men; 8 PSUs,
    # ad hoc: 94.5 / 93.9 / 94.5%; the symmetric t interval had women 92.05% at 3, 92.3% at 8).
    table = pd.concat([pooled_coverage(census, n) for n in (2, 3)], ignore_index=True)
    print("\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    cell = table.set_index(["indicator", "n_psu", "domain"])
    k09 = cell.loc[("K09", 3, "total")]
    assert 0.93 <= k09["mean"] <= 0.97 and k09["min"] == KNOWN_SHORTFALL[("take-all", "K09", 3, "total")]
    assert (k09["mean"] - k09["min"]) > 2 * k09["mc_se"] * np.sqrt(len(SEEDS_16))
    assert k09["std"] <= 1.5 * k09["mc_se"] * np.sqrt(len(SEEDS_16))  # seeds vary as binomial
    for dom in ("total", "men"):
        k08 = cell.loc[("K08", 2, dom)]
        assert k08["mean"] > 0.97 + 2 * k08["mc_se"], (dom, k08.to_dict())
    props = table[table["indicator"].isin(PROPORTIONS)]
    assert props["mean"].between(0.93, 0.975).all(), props.to_string()
    assert (props["mean"] > 0.97).sum() <= 3, props.to_string()
    k02 = table[table["indicator"] == "K02"]
    assert k02["mean"].between(0.93, 0.975).all(), k02.to_string()
    short = [("K04", 3, d) for d in DOMAINS] + [("K04", 2, "women")]
    for key in short:
        assert cell.loc[key, "mean"] < 0.93 - 2 * cell.loc[key, "mc_se"], (key, cell.loc[key])
    assert 0.93 <= cell.loc[("K04", 2, "total"), "mean"] <= 0.97


def _design_df(s: pd.DataFrame) -> pd.Series:
    """``survey`` ``df="design"`` of every (period, country, domain) MSME cell: the df from the
    weights and PSUs (one per cell, the same for K05 K08 K09, which have no missing values)."""
    s = s.assign(stratum=s["country"] + "/" + s["size_class"], msme=s["size_class"] != "large",
                 one=1.0, domain=np.where(s["owner_female"], "female", "male"))
    frames = []
    for by in (["year", "country", "msme"], ["year", "country", "msme", "domain"]):
        r = pd.DataFrame(survey.mean(s, "one", weight="weight", strata="stratum", psu="psu",
                                     by=by, df="design", deff=False))
        frames.append(r[r["msme"]].assign(domain=r.get("domain", "total")))
    out = pd.concat(frames)
    return out.set_index(["year", "country", "domain"])["df"]


def design_df_coverage(pop: pd.DataFrame, n_psu: int) -> pd.DataFrame:
    """Coverage of the published (logit) intervals of the proportions, and of the same
    intervals with ``df="design"`` in place of the Satterthwaite df."""
    s = two_stage_samples(pop, n_psu, REPS, seed=1000 + n_psu, large="sampled")
    est = _estimates(s, ("weight", "strata", "psu"))
    truth = _estimates(pop.assign(year=0), design=()).set_index(
        ["indicator", "ref_area", "breakdown", "group"])["value"]
    ddf = _design_df(s)
    rows = []
    for ind in PROPORTIONS:
        for dom, (brk, grp) in DOMAINS.items():
            sel = est[(est["indicator"] == ind) & (est["breakdown"] == brk)
                      & (est["group"] == grp)]
            t = truth.xs((ind, brk, grp), level=[0, 2, 3]).loc[sel["ref_area"]].to_numpy()
            key = pd.MultiIndex.from_arrays([sel["time_period"], sel["ref_area"],
                                             np.full(len(sel), grp)])
            df = ddf.reindex(key).to_numpy()
            lo, hi = survey.logit_interval(sel["value"].to_numpy() / 100,
                                           sel["se"].to_numpy() / 100, df, 0.05)
            rows.append({"indicator": ind, "n_psu": n_psu, "domain": dom,
                         "satterthwaite": float(np.mean((sel["ci_low"].to_numpy() <= t)
                                                        & (t <= sel["ci_high"].to_numpy()))),
                         "design": float(np.mean((100 * lo <= t) & (t <= 100 * hi))),
                         "median_df_design": float(np.median(df))})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_design_df_fixes_three_psus_but_over_covers():
    # df="design" (survey.design_df: from the weights and PSUs, not the outcome) does not
    # move with the estimated stratum variances, so K09 at 3 PSUs reaches the band (92.6% ->
    # 95.0%). But it is no better on average than Satterthwaite's and at 2 and 3 PSUs most
    # proportions go above 97% (measured: 14 of 18 cells, up to 99.3%; Satterthwaite: 1):
    # it is not the indicators' default.
    table = pd.concat([design_df_coverage(census_pop(), n) for n in (2, 3, 8)],
                      ignore_index=True)
    print("\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    cell = table.set_index(["indicator", "n_psu", "domain"])
    assert cell.loc[("K09", 3, "total"), "satterthwaite"] < 0.93
    assert 0.93 <= cell.loc[("K09", 3, "total"), "design"] <= 0.97
    few = table[table["n_psu"] < 8]
    assert (few["design"] > 0.97).sum() >= 10, few.to_string()
    assert (few["satterthwaite"] > 0.97).sum() <= 1, few.to_string()
    assert table.loc[table["n_psu"] == 8, "design"].between(0.93, 0.97).all()


def _stratum_contributions(s: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Mean of ``column`` per period through :func:`survey.totals` and each stratum's
    contribution ``v_h = g' C_h g`` to its linearised variance (periods x strata)."""
    tot = survey.totals(s, {"y": column, "x": None}, weight="weight", strata="strata",
                        psu="psu", by="year")
    tt = tot.estimate.to_numpy()
    grad = np.column_stack([1 / tt[:, 1], -tt[:, 0] / tt[:, 1] ** 2])
    gd = grad[tot.strata_domain]
    v_h = np.einsum("cj,cjm,cm->c", gd, tot.strata_cov, gd)
    cells = pd.DataFrame({"period": tot.strata_domain, "v_h": v_h})
    cells["h"] = cells.groupby("period").cumcount()
    return tt[:, 0] / tt[:, 1], cells.pivot(index="period", columns="h", values="v_h")


@pytest.mark.slow
def test_proportion_shortfall_at_three_psus_is_the_estimated_df(census):
    # K09 (registered MSMEs) in one country with 3 PSUs per stratum misses the band (91.4%
    # in this sample of 1000; both countries over 16 such samples: 94.3%, so most of this
    # sample's shortfall is Monte Carlo error, test_band_edges_over_16_seeds). Its linearised
    # variance is unbiased, and t intervals with the *true*
    # Satterthwaite df (from the mean of each stratum's v_h over the replicates) cover 95%;
    # the shortfall comes from estimating df_eff from the same PSU totals as the variance: a
    # dominant stratum (micro, ~90% of the variance) whose v_h is underestimated makes the
    # contributions look balanced and df_eff larger, so t is small exactly when the SE is.
    n_psu = 3
    s = two_stage_samples(census, n_psu, REPS, seed=1000 + n_psu, large="sampled")
    s = s[(s["country"] == "KHM") & (s["size_class"] != "large")].copy()
    s["registered"] = s["registered"].astype(float)
    est, v_h = _stratum_contributions(s, "registered")
    # the same numbers as the indicator code path
    ind = _estimates(s, ("weight", "strata", "psu"))
    k09 = ind[(ind["indicator"] == "K09") & (ind["breakdown"] == "total")]
    np.testing.assert_allclose(k09["value"].to_numpy(), 100 * est, rtol=1e-9)
    var = v_h.sum(axis=1).to_numpy()
    np.testing.assert_allclose(k09["se"].to_numpy(), 100 * np.sqrt(var), rtol=1e-7)
    df_hat = var**2 / ((v_h**2).sum(axis=1).to_numpy() / (n_psu - 1))
    np.testing.assert_allclose(k09["df"].to_numpy(), df_hat, rtol=1e-6)
    truth = census.loc[(census["country"] == "KHM") & (census["size_class"] != "large"),
                       "registered"].mean()
    z = np.abs(est - truth) / np.sqrt(var)
    v_true = v_h.mean(axis=0)
    df_true = v_true.sum() ** 2 / ((v_true**2).sum() / (n_psu - 1))
    assert 0.9 <= var.mean() / est.var(ddof=1) <= 1.1
    assert 0.93 <= np.mean(z <= stats.t.ppf(0.975, df_true)) <= 0.97
    assert np.mean(z <= stats.t.ppf(0.975, df_hat)) < 0.93
    assert np.median(df_hat) == pytest.approx(df_true, rel=0.1)  # right on average ...
    assert np.corrcoef(df_hat, var)[0, 1] < -0.3                # ... but wrong when it matters


def _k04(tt: np.ndarray) -> np.ndarray:
    return (tt[:, 0] / tt[:, 1]) / (tt[:, 2] / tt[:, 3])


def _k04_grad(tt: np.ndarray) -> np.ndarray:
    return _k04(tt)[:, None] * np.column_stack(
        [1 / tt[:, 0], -1 / tt[:, 1], -1 / tt[:, 2], 1 / tt[:, 3]])


def _k04_parts(frame: pd.DataFrame) -> dict[str, pd.Series]:
    msme = (frame["size_class"] != "large").astype(float)
    return {"A": frame["value_added"] * msme, "B": frame["employees"] * msme,
            "C": frame["value_added"] * (1 - msme), "D": frame["employees"] * (1 - msme)}


@pytest.mark.slow
def test_k04_shortfall_is_the_plug_in_gradient(census):
    # Stress scenario. K04 = (A/B)/(C/D) misses the band even at 8 PSUs (90.5%). The covariance of the four
    # totals is unbiased: at the true gradient g0, mean(g0' C g0) matches the variance of the
    # linear statistic g0' T over the replicates. The shortfall is the nonlinearity: the
    # plug-in gradient g(T_hat) shrinks with the estimate (a large C_hat lowers both), so the
    # mean linearised variance is well below the estimator's variance (the large-firm
    # stratum's value added per employee is heavy-tailed, ~3 firms per PSU).
    s = two_stage_samples(census, 8, REPS, seed=1008, large="sampled")
    s = s[s["country"] == "KHM"]
    tt = survey.totals(s, _k04_parts(s), weight="weight", strata="strata", psu="psu",
                       by="year")
    res = survey.delta(tt, _k04, _k04_grad)
    ind = _estimates(s, ("weight", "strata", "psu"))
    k04 = ind[(ind["indicator"] == "K04") & (ind["breakdown"] == "total")]
    np.testing.assert_allclose(k04["se"].to_numpy(), res["se"].to_numpy(), rtol=1e-7)
    pop = census[census["country"] == "KHM"]
    g0 = _k04_grad(np.array([[v.sum() for v in _k04_parts(pop).values()]]))[0]
    linear = tt.estimate.to_numpy() @ g0
    assert 0.85 <= np.einsum("j,djm,m->d", g0, tt.cov, g0).mean() / linear.var(ddof=1) <= 1.15
    assert (res["se"] ** 2).mean() / res["estimate"].var(ddof=1) < 0.8
    assert np.corrcoef(res["estimate"], res["se"])[0, 1] > 0.4


# --------------------------------------------------------------------------------------------
# where K04's missing variance sits: the MSME strata's log(A/B) or the large stratum's log(C/D)
# --------------------------------------------------------------------------------------------
def _log_part(cols: tuple[int, int]) -> tuple[Callable, Callable]:
    """``log(T_a / T_b)`` of two of K04's four totals and its gradient."""
    a, b = cols

    def f(tt: np.ndarray) -> np.ndarray:
        return np.log(tt[:, a] / tt[:, b])

    def g(tt: np.ndarray) -> np.ndarray:
        out = np.zeros_like(tt)
        out[:, a], out[:, b] = 1 / tt[:, a], -1 / tt[:, b]
        return out
    return f, g


K04_LOG_PARTS = {"msme": (0, 1), "large": (2, 3)}  # log K04 = log(A/B) - log(C/D)


def k04_parts_table(pop: pd.DataFrame, n_psu: int, large: str) -> pd.DataFrame:
    """Per country and domain (overall, women-owned), the linearised variance of log K04 split
    into the MSME strata's part (``log(A/B)``: only they hold A and B) and the large stratum's
    (``log(C/D)``), each beside its Monte Carlo variance over the REPS samples (seed
    ``1000 + n_psu``); ``lin_*``/``mc_*`` means of SE^2 and empirical variances, ``cover_*``
    the log interval of each part with its own Satterthwaite df (the truth: the census)."""
    s = two_stage_samples(pop, n_psu, REPS, seed=1000 + n_psu, large=large)
    rows = []
    for country in COUNTRIES:
        sc, pc = s[s["country"] == country], pop[pop["country"] == country]
        for dom in ("total", "women"):
            tt = survey.totals(sc, _domain_parts(sc, dom), weight="weight", strata="strata",
                               psu="psu", by="year", singleton=SINGLETON[large])
            t0 = np.array([[v.sum() for v in _domain_parts(pc, dom).values()]])
            row = {"n_psu": n_psu, "country": country, "domain": dom}
            for part, cols in {**K04_LOG_PARTS, "log_k04": (0, 1, 2, 3)}.items():
                f, g = (_log_part(cols) if len(cols) == 2 else
                        (lambda t: np.log(_k04(t)), lambda t: _k04_grad(t) / _k04(t)[:, None]))
                r = survey.delta(tt, f, g, ci="wald")
                est, se = r["estimate"].to_numpy(), r["se"].to_numpy()
                row |= {f"lin_{part}": float(np.mean(se**2)), f"mc_{part}": float(est.var(ddof=1)),
                        f"cover_{part}": _cover(est, f(t0)[0], se, r["df"].to_numpy())}
            rows.append(row)
    return pd.DataFrame(rows)


def _domain_parts(frame: pd.DataFrame, dom: str) -> dict[str, pd.Series]:
    """K04's four parts with A and B restricted to the domain's MSMEs."""
    parts = _k04_parts(frame)
    if dom == "women":
        parts["A"], parts["B"] = parts["A"] * frame["owner_female"], parts["B"] * frame["owner_female"]
    return parts


def test_take_all_large_firms_add_no_variance_or_df_to_k04(census):
    # The main scenario through compute(): the large firms' certainty PSU contributes nothing,
    # so K04 = (A/B)/(C/D) with C/D the census value has SE = K04 x SE(log A/B) over the MSME
    # strata and the same Satterthwaite df; the nominal df counts no PSU of the large stratum.
    n_psu, reps = 3, 40
    s = two_stage_samples(census, n_psu, reps, seed=31)
    assert (s.loc[s["size_class"] == "large", "weight"] == 1).all()
    assert len(s[s["size_class"] == "large"]) == reps * (census["size_class"] == "large").sum()
    est = _estimates(s, ("weight", "strata", "psu"), singleton="certainty")
    k04 = est[(est["indicator"] == "K04") & (est["breakdown"] == "total")].sort_values(
        ["time_period", "ref_area"])
    msme = s[s["size_class"] != "large"]
    ab = survey.delta(survey.totals(msme, _domain_parts(msme, "total"), weight="weight",
                                    strata="strata", psu="psu", by=["year", "country"]),
                      *_log_part((0, 1)))
    np.testing.assert_allclose(k04["se"].to_numpy(), k04["value"].to_numpy() * ab["se"].to_numpy(),
                               rtol=1e-9)
    np.testing.assert_allclose(k04["df"].to_numpy(), ab["df"].to_numpy(), rtol=1e-9)
    assert (k04["df_nominal"] == 3 * n_psu - 3).all()  # 3 MSME strata; large: 1 PSU - 1
    pc = census[census["country"] == "KHM"]
    khm = k04[k04["ref_area"] == "KHM"]
    cd = pc.loc[pc["size_class"] == "large", "value_added"].sum() / pc.loc[
        pc["size_class"] == "large", "employees"].sum()
    np.testing.assert_allclose(khm["value"].to_numpy(),
                               np.exp(ab.loc[ab["country"] == "KHM", "estimate"].to_numpy()) / cd,
                               rtol=1e-9)
    with pytest.raises(survey.SurveyDesignError, match=r"single PSU: \['KHM\|large'.*certainty="):
        _estimates(s, ("weight", "strata", "psu"))  # a certainty stratum must be declared
    # ... or named: certainty=["large"] with each enumerated firm its own PSU (as files record
    # them) gives the same table, with singleton="fail" kept for the sampled strata, in
    # memory and in DuckDB
    firms = s.assign(psu=np.where(s["size_class"] == "large", s["firm_id"], s["psu"]))
    for engine in ("pandas", "duckdb"):
        named = pd.DataFrame(indicators.compute(
            firms, breakdowns=["owner_female"], indicators=list(INDICATORS), aggregate=False,
            disclosure=False, design=("weight", "strata", "psu"), certainty=["large"],
            engine=engine))
        for col in ("value", "se", "df", "ci_low", "ci_high", "df_nominal"):
            np.testing.assert_allclose(named[col].to_numpy(), est[col].to_numpy(), rtol=1e-9,
                                       err_msg=f"{engine} {col}")


@pytest.mark.slow
def test_k04_missing_variance_sits_mostly_in_the_large_firm_ratio(census):
    # log K04 = log(A/B) - log(C/D): the MSME strata hold A, B and the large stratum C, D, so
    # the linearised variance of log K04 is exactly the sum of the two parts', and (strata
    # sampled independently) so is its Monte Carlo variance, up to noise. In the stress
    # scenario (large firms sampled: n_psu districts x ~3 firms per country) both parts are
    # short, but the large firms' ratio most (measured lin/MC 0.42-0.73 against 0.51-0.83 for
    # the MSMEs overall) and it holds 58-98% of log K04's missing variance overall (women-owned
    # cells: 26-70%, the women's MSME ratio being short too: 0.33-0.67). With the large firms
    # enumerated (take-all, the main scenario) their part is exactly 0 and log K04's variance
    # is the MSME part's -- whose own shortfall remains (the medium stratum, 1 + Poisson(4)
    # firms in each of n_psu districts, carries 87-92% of its linearised variance).
    tables = {(large, n): k04_parts_table(census, n, large)
              for large in SCENARIOS for n in (2, 3, 8)}
    stress = pd.concat([tables[("sampled", n)] for n in (2, 3, 8)], ignore_index=True)
    main = pd.concat([tables[("take-all", n)] for n in (2, 3, 8)], ignore_index=True)
    for name, t in (("sampled", stress), ("take-all", main)):
        show = t[["n_psu", "country", "domain"]].copy()
        for part in (*K04_LOG_PARTS, "log_k04"):
            show[f"{part}_lin/mc"] = t[f"lin_{part}"] / t[f"mc_{part}"]
            show[f"{part}_mc"] = t[f"mc_{part}"]
            show[f"{part}_cover"] = t[f"cover_{part}"]
        show["large_share_missing"] = ((t["mc_large"] - t["lin_large"])
                                       / (t["mc_log_k04"] - t["lin_log_k04"]))
        print(f"\n{name}\n" + show.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    for t in (stress, main):  # the split is exact, and the MC variances add up
        np.testing.assert_allclose(t["lin_msme"] + t["lin_large"], t["lin_log_k04"], rtol=1e-9)
        np.testing.assert_allclose(t["mc_msme"] + t["mc_large"], t["mc_log_k04"], rtol=0.1)
    missing = {p: stress[f"mc_{p}"] - stress[f"lin_{p}"] for p in (*K04_LOG_PARTS, "log_k04")}
    total = stress["domain"] == "total"
    assert ((missing["large"] / missing["log_k04"])[total] > 0.55).all(), stress.to_string()
    assert (stress["lin_large"] / stress["mc_large"] < 0.75).all()
    assert (stress["lin_msme"] / stress["mc_msme"] < 0.9).all()
    assert (main["lin_large"] == 0).all() and (main["mc_large"] < 1e-20).all()
    np.testing.assert_allclose(main["mc_msme"], stress["mc_msme"], rtol=1e-12)  # same MSMEs


# --------------------------------------------------------------------------------------------
# K04 with a delete-one-PSU jackknife (JKn) variance: measured, not adopted
# --------------------------------------------------------------------------------------------
def _k04_psu_totals(s: pd.DataFrame, member: np.ndarray, n_psu: int) -> np.ndarray:
    """PSU totals of K04's four weighted parts (A, B over the domain's MSMEs; C, D over all
    large firms), shaped (replicates, countries, strata, PSUs, 4); every stratum of a
    replicate has ``n_psu`` PSU labels (absent domain members: 0)."""
    parts = pd.DataFrame(_k04_parts(s)).to_numpy() * s["weight"].to_numpy()[:, None]
    parts[:, :2] *= member[:, None]
    key = [s[c].to_numpy() for c in ("year", "country", "size_class", "psu")]
    z = pd.DataFrame(parts).groupby(key).sum()
    full = pd.MultiIndex.from_product([np.unique(s["year"]), COUNTRIES, CLASSES, range(n_psu)])
    reps = len(np.unique(s["year"]))
    return z.reindex(full, fill_value=0.0).to_numpy().reshape(reps, len(COUNTRIES),
                                                               len(CLASSES), n_psu, 4)


def jkn(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K04, its JKn replicates and variance from the PSU totals ``z`` (..., strata, PSUs, 4).

    Replicate (h, j) deletes PSU j of stratum h and reweights the stratum's others by
    ``n_h / (n_h - 1)``: ``T_(hj) = T - t_h + n_h/(n_h - 1) (t_h - t_hj)`` for each of the
    four totals; ``v = sum_h (n_h - 1)/n_h sum_j (theta_(hj) - theta)^2`` (R ``survey``
    ``as.svrepdesign(type="JKn")``, ``svrVar``; Wolter 2007 ch. 4; Rust & Rao 1996).
    """
    n = z.shape[-2]
    t_h = z.sum(axis=-2)
    big_t = t_h.sum(axis=-2)
    rep = (big_t[..., None, None, :] - t_h[..., None, :] + n / (n - 1) * (t_h[..., None, :] - z))
    theta = _k04(big_t.reshape(-1, 4)).reshape(big_t.shape[:-1])
    theta_r = _k04(rep.reshape(-1, 4)).reshape(rep.shape[:-1])
    v = ((n - 1) / n * (theta_r - theta[..., None, None]) ** 2).sum(axis=(-2, -1))
    return theta, theta_r, v


def test_jkn_replicates_equal_direct_reweighting(census):
    # each replicate estimate from the PSU-total formula equals K04 recomputed from the rows
    # with the JKn replicate weights (PSU j of stratum h: 0; its stratum's others x n/(n-1))
    n_psu = 3
    s = two_stage_samples(census, n_psu, reps=2, seed=77, large="sampled")
    theta, theta_r, v = jkn(_k04_psu_totals(s, np.ones(len(s), dtype=bool), n_psu))
    for r in range(2):
        one = s[(s["year"] == r) & (s["country"] == "THA")]
        for hi, h in enumerate(CLASSES):
            for j in range(n_psu):
                w = one["weight"].to_numpy().copy()
                in_h = (one["size_class"] == h).to_numpy()
                w[in_h] *= np.where(one["psu"].to_numpy()[in_h] == j, 0.0, n_psu / (n_psu - 1))
                tt = np.array([[(w * p).sum() for p in _k04_parts(one).values()]])
                assert theta_r[r, 1, hi, j] == pytest.approx(_k04(tt)[0], rel=1e-12)
        direct = _k04(np.array([[(one["weight"] * p).sum()
                                 for p in _k04_parts(one).values()]]))[0]
        assert theta[r, 1] == pytest.approx(direct, rel=1e-12)
        manual = sum((n_psu - 1) / n_psu * (theta_r[r, 1, hi, j] - direct) ** 2
                     for hi in range(len(CLASSES)) for j in range(n_psu))
        assert v[r, 1] == pytest.approx(manual, rel=1e-12)


def k04_jackknife_table(pop: pd.DataFrame, n_psu: int) -> pd.DataFrame:
    """K04 coverage per domain: the published interval (log scale, linearised SE,
    Satterthwaite df), the symmetric t interval on the same value, SE and df, and JKn
    intervals with the nominal df (#PSUs - #strata, as R's replicate designs), with the
    published Satterthwaite df, and on the log scale; ``below_*``: share of intervals wholly
    below the truth; variance ratios per country, averaged. Computed once per ``n_psu``."""
    if n_psu not in _K04_TABLES:
        _K04_TABLES[n_psu] = _k04_table(pop, n_psu)
    return _K04_TABLES[n_psu]


_K04_TABLES: dict[int, pd.DataFrame] = {}


def _k04_table(pop: pd.DataFrame, n_psu: int) -> pd.DataFrame:
    s = two_stage_samples(pop, n_psu, REPS, seed=1000 + n_psu, large="sampled")
    est = _estimates(s, ("weight", "strata", "psu"))
    truth = _estimates(pop.assign(year=0), design=()).set_index(
        ["indicator", "ref_area", "breakdown", "group"])["value"]
    rows = []
    for dom, (brk, grp) in DOMAINS.items():
        member = (np.ones(len(s), dtype=bool) if brk == "total"
                  else s["owner_female"].to_numpy() == (grp == "female"))
        theta, _, v = jkn(_k04_psu_totals(s, member, n_psu))
        sel = est[(est["indicator"] == "K04") & (est["breakdown"] == brk)
                  & (est["group"] == grp)].sort_values(["time_period", "ref_area"])
        value, df = sel["value"].to_numpy(), sel["df"].to_numpy()
        np.testing.assert_allclose(value, theta.reshape(-1), rtol=1e-9)
        t = truth.xs(("K04", brk, grp), level=[0, 2, 3]).loc[sel["ref_area"]].to_numpy()
        area = sel["ref_area"].to_numpy()
        se_jk, se_lin = np.sqrt(v.reshape(-1)), sel["se"].to_numpy()
        lo, hi = sel["ci_low"].to_numpy(), sel["ci_high"].to_numpy()
        np.testing.assert_allclose(np.c_[lo, hi], np.c_[survey.log_interval(value, se_lin, df, 0.05)],
                                   rtol=1e-12)
        jk_lo, jk_hi = survey.log_interval(value, se_jk, df, 0.05)
        rows.append({"n_psu": n_psu, "domain": dom,
                     "published": float(np.mean((lo <= t) & (t <= hi))),
                     "symmetric": _cover(value, t, se_lin, df),
                     "below_published": float(np.mean(hi < t)),
                     "below_symmetric": float(np.mean(value + stats.t.ppf(0.975, df) * se_lin < t)),
                     "jkn_nominal_df": _cover(value, t, se_jk, sel["df_nominal"].to_numpy()),
                     "jkn_satterthwaite_df": _cover(value, t, se_jk, df),
                     "jkn_log": float(np.mean((jk_lo <= t) & (t <= jk_hi))),
                     "var_ratio_linearised": _var_ratio(value, se_lin, area),
                     "var_ratio_jkn": _var_ratio(value, se_jk, area)})
    return pd.DataFrame(rows)


def _cover(value: np.ndarray, truth: np.ndarray, se: np.ndarray, df: np.ndarray) -> float:
    """Coverage of the symmetric t intervals ``value +- t_df se``."""
    return float(np.mean(np.abs(value - truth) <= stats.t.ppf(0.975, df) * se))


def _var_ratio(value: np.ndarray, se: np.ndarray, area: np.ndarray) -> float:
    """Mean SE^2 over the estimates' variance, per country, averaged."""
    return float(np.mean([np.mean(se[area == c] ** 2) / value[area == c].var(ddof=1)
                          for c in COUNTRIES]))


@pytest.mark.slow
def test_k04_jackknife_does_not_reach_the_band(census):
    # The JKn variance of K04 is not too small (1.1-1.7 x the estimator's variance, against
    # 0.58-0.75 for the linearised one), but with R's nominal df it covers less than the
    # linearised symmetric interval at 2 PSUs (90.0%), and even with the Satterthwaite df the
    # women-owned cells at 3 and 8 PSUs stay below the band (measured 90.9% and 89.6%;
    # overall and men 94.4-96.4%): the estimate and its SE are correlated in the small
    # domain. On the log scale (jkn_log) it reaches 93.6-96.9% at 2-3 PSUs but not 8 PSUs
    # (92.05-92.9%), and its replicates need each PSU's four totals from the engines' second
    # pass (which only returns sums of squares of a linear combination): not adopted.
    table = pd.concat([k04_jackknife_table(census, n) for n in (2, 3, 8)], ignore_index=True)
    print("\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    assert (table["var_ratio_jkn"] > 1.0).all() and (table["var_ratio_linearised"] < 0.8).all()
    women = table[table["domain"] == "women"].set_index("n_psu")
    assert (women.loc[[3, 8], "jkn_satterthwaite_df"] < 0.92).all()
    assert (table.loc[table["n_psu"] < 8, "jkn_nominal_df"] < 0.93).all()
    others = table[table["domain"] != "women"]
    assert others["jkn_satterthwaite_df"].between(0.93, 0.97).all(), others.to_string()
    assert (table["jkn_satterthwaite_df"] > table["symmetric"]).all()
    assert (table.loc[table["n_psu"] == 8, "jkn_log"] < 0.93).all()


@pytest.mark.slow
def test_k04_log_interval_gains_where_the_symmetric_misses_below(census):
    # K04's estimate and linearised SE are positively correlated (a large sampled C -- the
    # large firms' heavy-tailed value added -- lowers both), so the symmetric interval misses
    # mostly from below (measured 4.7-14.1% of intervals wholly below the truth, 0.5-2.8%
    # above). The published log-scale interval (survey.log_interval) is longer above: the
    # women-owned cells gain 3.3 / 4.9 / 3.0 points at 2 / 3 / 8 PSUs (into the band at 2 PSUs),
    # overall and men-owned stay within ~1 point (+0.15 to +0.35 at 2-3 PSUs, -1.0 / -1.15 at 8).
    table = pd.concat([k04_jackknife_table(census, n) for n in (2, 3, 8)], ignore_index=True)
    print("\n" + table[["n_psu", "domain", "published", "symmetric", "below_published",
                        "below_symmetric"]].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    gain = (table["published"] - table["symmetric"]).to_numpy()
    women = (table["domain"] == "women").to_numpy()
    assert (gain[women] >= 0.025).all(), table.to_string()
    assert (np.abs(gain[~women]) <= 0.0125).all(), table.to_string()
    assert (table["below_published"] < table["below_symmetric"]).all()
    assert table.loc[(table["n_psu"] == 2), "published"].between(0.93, 0.97).all()

"""Impact evaluation: staggered DiD, TWFE baselines, weighting/matching, balance, power, evaluate().

    import msme_eval as me
    res = me.impact.did(panel, outcome="employees")       # Callaway-Sant'Anna via diff-diff
    res.overall, res.event_study, res.pretrend, res.summary(), res.plot()
    ev = me.impact.evaluate(panel)                         # growth, jobs, survival, inclusion

What is diff-diff's and what is ours: diff-diff (pinned 3.13) computes the unconditional and
outcome-regression ATT(g,t), their influence functions and the multiplier bootstrap. Written here:
the covariate DR/IPW cells as R did computes them (drdid.py: DRDID's drdid_panel and
std_ipw_did_panel, Hajek-normalised, scores >= 0.995 trimmed), the simple/group/dynamic/calendar
aggregations with R aggte's overall rows, input checks and refusals, the pre-trend Wald test
(Holm-adjusted across evaluate()'s headline tests), analytical sup-t bands,
the survival estimator (survival.py), TWFE wrappers over pyfixest, IPW with M-estimation SEs
and nearest-neighbour matching with Abadie-Imbens SEs (weighting.py), MatchIt's nearest-neighbour
matching with its weights, SEs and Love plot (match.py), balance tables (cobalt conventions),
power calculations, model tables rendered by maketables (tables.py), the Goodman-Bacon
decomposition from diff-diff's exact weights (bacon.py), HonestDiD bounds through moderndid's
port of R HonestDiD (honest.py), and the evaluation layer (evaluate.py). Every result shares
msme_eval.results' interface: ``tidy()``
(estimate, se, ci_low, ci_high, pvalue), ``choices``, ``alpha``, ``summary()``, ``plot()``,
``_repr_html_``; balance_table returns a ResultFrame.
"""
from __future__ import annotations

from ._checks import ImpactInputError
from .bacon import BaconResult, bacon
from .balance import balance_table
from .did import did, prepare_panel
from .evaluate import Evaluation, build_outcomes, evaluate, interpret
from .honest import HonestResult, honest_bounds, honest_did
from .match import MatchResult, love_plot, match
from .power import PowerResult, mde, sample_size
from .results import DidResult, Estimate, WaldTest
from .survival import SurvivalResult, survival_did
from .tables import ModelTable, model_table
from .twfe import TwfeResult, twfe, twfe_event_study
from .weighting import WeightingResult, weighting

__all__ = [
    "did", "prepare_panel", "DidResult", "Estimate", "WaldTest", "ImpactInputError",
    "twfe", "twfe_event_study", "TwfeResult", "weighting", "WeightingResult", "balance_table",
    "evaluate", "Evaluation", "build_outcomes", "interpret", "mde", "sample_size", "PowerResult",
    "survival_did", "SurvivalResult", "model_table", "ModelTable",
    "honest_did", "honest_bounds", "HonestResult",
    "bacon", "BaconResult",
    "match", "MatchResult", "love_plot",
]

"""Impact evaluation: staggered DiD, TWFE baselines, weighting/matching, balance, power, evaluate().

    import msme_eval as me
    res = me.impact.did(panel, outcome="employees")       # Callaway-Sant'Anna via diff-diff
    res.overall, res.event_study, res.pretrend, res.summary(), res.plot()
    ev = me.impact.evaluate(panel)                         # growth, jobs, survival, inclusion

What is diff-diff's and what is ours: diff-diff (pinned 3.13) computes ATT(g,t), their influence
functions, the simple/group/dynamic aggregations and the multiplier bootstrap. Written here:
input checks and refusals, calendar aggregation, the pre-trend Wald test, analytical sup-t bands,
the survival estimator (survival.py), TWFE wrappers over pyfixest, IPW with M-estimation SEs,
nearest-neighbour matching with Abadie-Imbens SEs, balance tables, power calculations, and the
evaluation layer (evaluate.py).
"""
from __future__ import annotations

from ._checks import ImpactInputError
from .balance import balance_table
from .did import did, prepare_panel
from .evaluate import Evaluation, build_outcomes, evaluate, interpret
from .power import PowerResult, mde, sample_size
from .results import DidResult, Estimate, WaldTest
from .survival import SurvivalResult, survival_did
from .twfe import TwfeResult, twfe, twfe_event_study
from .weighting import WeightingResult, weighting

__all__ = [
    "did", "prepare_panel", "DidResult", "Estimate", "WaldTest", "ImpactInputError",
    "twfe", "twfe_event_study", "TwfeResult", "weighting", "WeightingResult", "balance_table",
    "evaluate", "Evaluation", "build_outcomes", "interpret", "mde", "sample_size", "PowerResult",
    "survival_did", "SurvivalResult",
]

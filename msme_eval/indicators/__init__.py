"""Indicators: the registry of the 10 SAP SMED KPIs (+ operational ones) and compute().

    import msme_eval as me
    me.indicators.registry()                       # metadata, one row per indicator
    me.indicators.compute(panel, macro, breakdowns=["size_class", "owner_female"])
"""
from __future__ import annotations

from .registry import DEFAULT_PATH, RegistryError, registry
from .table import BREAKDOWNS, OBS_STATUS, OUTPUT_COLUMNS, availability, compute, rules

__all__ = ["compute", "registry", "availability", "rules", "RegistryError", "OUTPUT_COLUMNS", "OBS_STATUS",
           "BREAKDOWNS", "DEFAULT_PATH"]

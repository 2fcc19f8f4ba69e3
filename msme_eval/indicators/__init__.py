"""Indicators: the registry of the 10 SAP SMED KPIs (+ operational ones) and compute().

    import msme_eval as me
    me.indicators.registry()                       # metadata, one row per indicator
    me.indicators.compute(panel, macro, breakdowns=["size_class", "owner_female"])
"""
from __future__ import annotations

from .compute import BREAKDOWNS, OBS_STATUS, OUTPUT_COLUMNS, availability, compute, rules
from .registry import DEFAULT_PATH, RegistryError, registry

__all__ = ["compute", "registry", "availability", "rules", "RegistryError", "OUTPUT_COLUMNS", "OBS_STATUS",
           "BREAKDOWNS", "DEFAULT_PATH"]

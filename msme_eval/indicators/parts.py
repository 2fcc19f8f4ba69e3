"""What an indicator is made of, shared by the in-memory and the SQL stage (a).

An indicator of the registry is a ratio ``num / den``, a relative ratio ``(num/den) /
(rnum/rden)`` (K04) or a total ``num (+ num2)``; each *part* sums a feature (``value``) over a
population (``population``, a 0/1 feature), optionally shifted to a later period (``shift``:
year-to-year indicators such as survival). Stage (a) -- :class:`msme_eval.indicators.table`'s
numpy pass or :mod:`msme_eval.indicators._sql` -- returns the PSU totals of the parts as
:class:`Moments`; group labels of a breakdown follow ``BOOL_LABELS`` / ``NA_LABELS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["TOTAL", "BOOL_LABELS", "NA_LABELS", "Part", "parts", "roles", "share_roles",
           "is_share", "moment_names", "Moments", "centred_ss", "COMPARISON", "disclosure_parts",
           "comparison_of", "rest_of_total"]

#: labels of a boolean breakdown (False, True); missing -> NA_LABELS or "not stated"
BOOL_LABELS = {"owner_female": ("male", "female"), "urban": ("rural", "urban")}
NA_LABELS = {"programme_type": "not supported"}
TOTAL = "total"
#: suffix of the disclosure-statistics key of an indicator's comparison group (``K04:cmp``)
COMPARISON = ":cmp"


@dataclass
class Part:
    """One summed part of an indicator: its role (num, den, rnum, rden, num2), the feature
    summed, the population feature (0/1) and the period shift."""

    role: str            # num, den, rnum, rden, num2
    value: str
    population: str
    shift: int


def parts(ind: dict[str, Any]) -> list[Part]:
    """The parts a registry row specifies (``*_spec`` entries with a ``value``), in role order."""
    out = []
    shift0 = int(ind.get("shift") or 0)
    for role, key in (("num", "numerator_spec"), ("den", "denominator_spec"),
                      ("rnum", "reference_numerator_spec"), ("rden", "reference_denominator_spec"),
                      ("num2", "numerator_2_spec")):
        spec = ind.get(key)
        if not isinstance(spec, dict) or "value" not in spec:
            continue
        out.append(Part(role, spec["value"], spec.get("population", "all"),
                         int(spec.get("shift", shift0))))
    return out


def rest_of_total(ind: dict[str, Any]) -> list[Part]:
    """The large firms inside the denominator of an MSME share of an all-firm magnitude total
    (K02 employment, K06 loans, K07 exports): ``[den part restricted to population "large"]``,
    else ``[]``. The share s = MSME / (MSME + large) reveals the large firms' part of the total,
    1 - s, as much as the MSMEs': with one or two large firms, their share of the country's
    employment, loans or exports. Statistics offices protect it as the complement of a
    published total (Hundepool et al. 2012, *Statistical Disclosure Control*, 4.2: a cell and
    its total reveal their difference)."""
    if ind["kind"] != "ratio" or not (isinstance(ind.get("magnitude"), str) and ind["magnitude"]):
        return []
    ps = parts(ind)
    num = [p for p in ps if p.role == "num"]
    den = [p for p in ps if p.role == "den"]
    if len(den) != 1 or den[0].population != "all" or not num or num[0].population != "msme":
        return []
    return [Part("den", den[0].value, "large", den[0].shift)]


def disclosure_parts(ind: dict[str, Any]) -> dict[str, list[Part]]:
    """Whose unweighted contributions a published cell reveals: key -> parts.

    ``{id: numerator parts (num, num2)}`` and, for a ratio against a comparison group
    (``relative_ratio``, K04: MSMEs' productivity over the large firms'), ``{id + COMPARISON:
    [rnum]}``: the comparison group's numerator (large firms' value added); for an MSME share
    of an all-firm total (K02, K06, K07), the large firms in that total (:func:`rest_of_total`).
    The ratio reveals that group's magnitude as much as the cell's own (one large firm: its
    productivity, or its share of the country's exports), so the disclosure rules apply to
    both (DESIGN.md section 4; Hundepool et al. 2012, *Statistical Disclosure Control*,
    chapter 4 on magnitude tables).
    """
    ps = parts(ind)
    out = {ind["id"]: [p for p in ps if p.role in ("num", "num2")]}
    ref = [p for p in ps if p.role == "rnum"] or rest_of_total(ind)
    if ref:
        out[ind["id"] + COMPARISON] = ref
    return out


def comparison_of(ind: dict[str, Any]) -> str | None:
    """The comparison group's population feature (``"large"`` for K04, and for K02/K06/K07
    the large firms in their total), or None."""
    ref = [p for p in parts(ind) if p.role == "rnum"] or rest_of_total(ind)
    return ref[0].population if ref else None


def roles(ind: dict[str, Any]) -> list[str]:
    """The PSU-level variables of an indicator: ``tot`` (num + num2) for totals, else parts."""
    if ind["kind"] == "total":
        return ["tot"]
    return [p.role for p in parts(ind)]


def share_roles(ind: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(group-level roles, domain-level roles) of a share-of-total indicator in a breakdown."""
    rs = roles(ind)
    gp = ["num", "den"] if ind["kind"] == "relative_ratio" else ["num"]
    return [r for r in rs if r in gp], [r for r in rs if r not in gp]


def is_share(ind: dict[str, Any], n_groups: int) -> bool:
    """True when a breakdown cell gives its share of the domain total (``share_of_total``)."""
    return not (ind["kind"] == "total" or ind["scope"] == "within_group" or n_groups == 1)


def moment_names(ind: dict[str, Any]) -> dict[str, str]:
    """Moment columns of one indicator: ``{id}:{role}`` -> role, the sum over the cell's PSUs
    of the PSU total ``X_a`` of the weighted part (the second moments come from the centred
    second pass, the stage's ``centred_ss``)."""
    return {f"{ind['id']}:{r}": r for r in roles(ind)}


@dataclass
class Moments:
    """Stage-(a) output for one breakdown: dense arrays of shape (n_strata, ny, n_groups).

    ``m`` holds the moment columns of :func:`moment_names` plus counts: ``__rows__`` (records,
    shift 0), ``__psus__`` (PSU-periods with records), ``__large__`` (large-firm records) and
    per indicator ``{id}:n``, ``{id}:pop``, ``{id}:miss`` (see ``_Estimator``).
    """
    labels: list[str]
    m: dict[str, np.ndarray]
    psu: Any = None  # the stage's PSU totals of this table, for the second (centred) pass

    @property
    def n_groups(self) -> int:
        return len(self.labels)


def centred_ss(psu: tuple, G: int, reqs: dict[str, dict[str, Any]], py_hy: np.ndarray,
               n_strata: int, ny: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Second pass: ``sum_i (u_i - c)^2`` per (stratum, period, group) over the PSU-periods
    with records, ``u_i = sum_a e_a X_ia`` (+ ``e_b T_ib`` for the domain-level roles of a
    share cell, ``T_ib = sum_g X_igb``); also the number of those PSU-periods per
    (stratum, period).

    ``psu = (k_py, k_g, psu_x)`` (a :class:`Moments`' ``psu``), ``G`` its number of groups:
    per (PSU-period, group) row its PSU-period index and group
    code (unique pairs) and ``psu_x[iid][role]`` the PSU totals ``X``; ``py_hy``: stratum *
    ny + period of every PSU-period index. ``reqs[iid]``: ``coef`` role -> e (n_strata, ny, G),
    ``centre`` c (n_strata, ny, G), ``domain_roles`` (and ``cal``: calibration residuals
    ``u_i - B_h w_i`` with the PSU-period weights ``psu_x["__w__"]``). Centring each PSU's u
    before squaring keeps the variance free of the cancellation in ``sum u^2 - (sum u)^2 / n``
    (the u_i of a ratio are near-constant). Shared by the in-memory and the SQL stage (a).
    """
    k_py, k_g, psu_x = psu
    n_py = len(py_hy)
    used = np.bincount(k_py, minlength=n_py) > 0
    all_used = bool(used.all())
    hy_u = py_hy if all_used else py_hy[used]
    n_present = np.bincount(hy_u, minlength=n_strata * ny).astype(float)
    cell = (hy_u[:, None] * G + np.arange(G)).ravel()
    out: dict[str, np.ndarray] = {}
    pair_cell = py_hy[k_py] * G + k_g  # (stratum, period, group) of every pair
    for iid, r in reqs.items():
        X = psu_x[iid]
        dev = -r["centre"].reshape(-1, G)[py_hy]  # u_i - c, u_i accumulated below
        for role in r["domain_roles"]:
            t = np.bincount(k_py, weights=X[role], minlength=n_py)
            dev += r["coef"][role].reshape(-1, G)[py_hy] * t[:, None]
        for role, e in r["coef"].items():
            if role not in r["domain_roles"]:  # X is 0 outside the pairs: update them only
                dev[k_py, k_g] += e.ravel()[pair_cell] * X[role]
        if "cal" in r:  # calibration residual u_i - B_h w_i (w_i: PSU-period weights)
            w_py = np.bincount(k_py, weights=psu_x["__w__"], minlength=n_py)
            dev -= r["cal"].reshape(-1, G)[py_hy] * w_py[:, None]
        if not all_used:
            dev = dev[used]
        np.square(dev, out=dev)
        out[iid] = np.bincount(cell, weights=dev.ravel(),
                               minlength=n_strata * ny * G).reshape(n_strata, ny, G)
    return out, n_present.reshape(n_strata, ny)

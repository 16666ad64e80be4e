"""The statistics of a human evaluation, on plain lists so that each can be checked by hand.

- Pairwise judgements: win / tie / loss rates per pair of systems with percentile bootstrap
  intervals that resample *items* (several raters judging one item are not independent).
- Bradley-Terry strengths for three or more systems (choix's maximum-likelihood fit; a tie counts
  as half a win for each side), with bootstrap intervals and on the Elo scale Chatbot Arena reports.
- Likert ratings: means with Student-t intervals.
- Agreement between raters: Krippendorff's alpha (the `krippendorff` package; ordinal, missing
  judgements allowed) and Cohen's kappa per pair of raters (scikit-learn; quadratic weights for
  Likert ratings) on the units both judged.
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

import numpy as np

#: Outcomes of a pairwise judgement, from the first system's side of the pair.
WIN, TIE, LOSS = 1.0, 0.5, 0.0
ELO_SCALE = 400 / math.log(10)  # Elo points per unit of log strength
ELO_BASE = 1000


def _interval(samples: np.ndarray, level: float) -> list[float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return [float(low), float(high)]


def _item_bootstrap(items: list, statistic, resamples: int, seed: int) -> np.ndarray:
    """`statistic` of `resamples` resamplings of the distinct items (with replacement), each
    resampled item bringing every judgement made on it."""
    distinct = sorted(set(items), key=str)
    position = {item: i for i, item in enumerate(distinct)}
    index = np.array([position[item] for item in items])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        counts = np.bincount(rng.integers(0, len(distinct), len(distinct)), minlength=len(distinct))
        out.append(statistic(counts[index]))  # each judgement weighted by how often its item was drawn
    return np.array(out)


def pairwise(judgements: list[tuple], level: float = 0.95, resamples: int = 2000, seed: int = 0) -> list[dict]:
    """judgements: (item, system_a, system_b, outcome), outcome WIN / TIE / LOSS for system_a. One
    entry per pair of systems (in the order first seen, each pair read as given first): counts,
    rates and bootstrap intervals of the win, tie and loss rates."""
    by_pair: dict[tuple, list] = {}
    for item, a, b, outcome in judgements:
        if (b, a) in by_pair:
            a, b, outcome = b, a, 1.0 - outcome
        by_pair.setdefault((a, b), []).append((item, outcome))
    rows = []
    for (a, b), judged in by_pair.items():
        items = [item for item, _ in judged]
        outcomes = np.array([o for _, o in judged])
        row = {"system_a": a, "system_b": b, "judgements": len(judged), "items": len(set(items))}
        for name, plural, value in (("win", "wins", WIN), ("tie", "ties", TIE), ("loss", "losses", LOSS)):
            hits = (outcomes == value).astype(float)
            row[plural] = int(hits.sum())
            row[f"{name}_rate"] = float(hits.mean())
            samples = _item_bootstrap(items, lambda w, hits=hits: float((w * hits).sum() / w.sum()), resamples, seed)
            row[f"{name}_rate_interval"] = _interval(samples, level)
        row["win_rate_ties_half"] = float(outcomes.mean())
        rows.append(row)
    return rows


def bradley_terry(
    judgements: list[tuple],
    systems: list[str],
    level: float = 0.95,
    resamples: int = 200,
    seed: int = 0,
    alpha: float = 1e-3,
) -> list[dict]:
    """Bradley-Terry strengths (log scale, mean zero) of `systems` from pairwise judgements, each
    with a bootstrap interval (resampling items) and on the Elo scale (1000 + 400/ln 10 x strength),
    best first. `alpha` is choix's regularisation, which keeps the fit finite when a system wins or
    loses every comparison; at its default it moves the strengths of a few dozen judgements by under 0.01."""
    import choix

    index = {s: i for i, s in enumerate(systems)}

    def fit(weights: np.ndarray) -> np.ndarray:
        # A win enters twice; a tie once each way: half a win for each side.
        data = []
        for (item, a, b, outcome), w in zip(judgements, weights):
            pair = (index[a], index[b]) if outcome == WIN else (index[b], index[a])
            copies = [pair, pair] if outcome != TIE else [(index[a], index[b]), (index[b], index[a])]
            data += copies * int(w)
        strengths = choix.ilsr_pairwise(len(systems), data, alpha=alpha, max_iter=10_000, tol=1e-10)
        return strengths - strengths.mean()

    point = fit(np.ones(len(judgements), dtype=int))
    samples = _item_bootstrap([j[0] for j in judgements], fit, resamples, seed) if resamples else None
    rows = []
    for s, i in index.items():
        row = {"system": s, "strength": float(point[i]), "elo": ELO_BASE + ELO_SCALE * float(point[i])}
        if samples is not None:
            row["strength_interval"] = _interval(samples[:, i], level)
            row["elo_interval"] = [ELO_BASE + ELO_SCALE * v for v in row["strength_interval"]]
        rows.append(row)
    rows.sort(key=lambda r: -r["strength"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def mean_interval(values: list[float], level: float = 0.95) -> dict:
    """Mean, standard deviation and Student-t interval of the mean (None where one value)."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    out = {"n": len(x), "mean": float(x.mean()) if len(x) else None, "sd": None, "interval": None}
    if len(x) >= 2:
        sd = float(x.std(ddof=1))
        half = float(stats.t.ppf((1 + level) / 2, len(x) - 1)) * sd / math.sqrt(len(x))
        out.update(sd=sd, interval=[out["mean"] - half, out["mean"] + half])
    return out


def krippendorff_alpha(units: dict, level: str = "ordinal", values: list | None = None) -> dict:
    """Krippendorff's alpha over units judged by more than one rater. units: unit -> {rater: value}.
    None (with the reason) where it is not defined: no unit judged twice, or every value the same."""
    import krippendorff

    raters = sorted({r for judged in units.values() for r in judged})
    shared = [u for u, judged in units.items() if len(judged) >= 2]
    out = {"units": len(shared), "raters": len(raters), "alpha": None}
    if not shared:
        out["reason"] = "no unit was judged by two raters"
        return out
    matrix = np.full((len(raters), len(shared)), np.nan)
    for j, unit in enumerate(shared):
        for rater, value in units[unit].items():
            matrix[raters.index(rater), j] = value
    seen = np.unique(matrix[~np.isnan(matrix)])
    if len(seen) < 2:
        out["reason"] = "every judgement has the same value, so agreement beyond chance is undefined"
        return out
    domain = np.asarray(sorted(set(values) | set(seen.tolist())) if values else seen)
    out["alpha"] = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=domain))
    return out


def cohen_kappas(units: dict, weights: str | None = None) -> list[dict]:
    """Cohen's kappa for every pair of raters on the units both judged (scikit-learn), with the
    share of those units on which they gave the same value."""
    from sklearn.metrics import cohen_kappa_score

    by_rater: dict[str, dict] = defaultdict(dict)
    for unit, judged in units.items():
        for rater, value in judged.items():
            by_rater[rater][unit] = value
    rows = []
    for first, second in combinations(sorted(by_rater), 2):
        both = sorted(set(by_rater[first]) & set(by_rater[second]), key=str)
        row = {"raters": [first, second], "units": len(both), "kappa": None}
        if both:
            a = [by_rater[first][u] for u in both]
            b = [by_rater[second][u] for u in both]
            row["agreement"] = float(np.mean([x == y for x, y in zip(a, b)]))
            if len(set(a) | set(b)) >= 2:
                kappa = float(cohen_kappa_score(a, b, weights=weights))
                row["kappa"] = None if math.isnan(kappa) else kappa
            if row["kappa"] is None:
                row["reason"] = "kappa is undefined when chance agreement is certain (one value throughout)"
        else:
            row["reason"] = "no unit judged by both"
        rows.append(row)
    return rows

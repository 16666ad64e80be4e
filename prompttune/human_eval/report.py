"""A study's results: the statistics of stats.py over its judgements, written as JSON, CSV and an
HTML page with plots, and attached to the registry versions the study compared."""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path

from . import stats
from .study import Study

OUTCOME = {"left": stats.WIN, "tie": stats.TIE, "right": stats.LOSS}


def analyse(study: Study, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Everything the report says, as one JSON-ready dict."""
    order = {s: i for i, s in enumerate(study.systems)}
    judgements = study.judgements()
    pairs, preference_units = [], {}
    ratings: dict[str, dict[str, list]] = {s: {c: [] for c in study.design.criteria} for s in study.systems}
    rating_units: dict[str, dict] = {c: {} for c in study.design.criteria}
    for j in judgements:
        if j["kind"] == "pair":
            a, b, outcome = j["left"], j["right"], OUTCOME[j["preference"]]
            if order[a] > order[b]:  # every pair read from the side of the system listed first
                a, b, outcome = b, a, 1.0 - outcome
            pairs.append((j["item"], a, b, outcome))
            preference_units.setdefault((j["item"], a, b), {})[j["rater"]] = outcome
        else:
            for criterion, value in j["ratings"].items():
                ratings[j["left"]][criterion].append(value)
                rating_units[criterion].setdefault((j["item"], j["left"]), {})[j["rater"]] = value
    result = {
        "study": {
            "folder": str(study.folder),
            "id": study.id,
            "created": study.meta["created"],
            "data": study.meta["data"],
            "design": study.meta["design"],
            "systems": study.system_details(),
            "raters": [{k: r[k] for k in ("name", "tasks", "done")} for r in study.raters()],
            "judgements": len(judgements),
            "level": level,
            "resamples": resamples,
            "seed": seed,
        },
        "pairwise": stats.pairwise(pairs, level, resamples, seed) if pairs else [],
        "bradley_terry": None,
        "ratings": {},
        "agreement": {},
    }
    compared = [s for s in study.systems if any(s in (a, b) for _, a, b, _ in pairs)]
    if len(compared) >= 3:
        result["bradley_terry"] = stats.bradley_terry(pairs, compared, level, min(resamples, 200), seed)
    if study.design.mode != "pairwise":
        result["ratings"] = {
            s: {c: stats.mean_interval(values, level) for c, values in by.items()} for s, by in ratings.items()
        }
    if pairs:
        result["agreement"]["preference"] = {
            "krippendorff_alpha": stats.krippendorff_alpha(
                preference_units, "ordinal", [stats.LOSS, stats.TIE, stats.WIN]
            ),
            "cohen_kappa": stats.cohen_kappas(preference_units),
        }
    for criterion, units in rating_units.items():
        if units:
            result["agreement"][criterion] = {
                "krippendorff_alpha": stats.krippendorff_alpha(
                    units, "ordinal", list(range(1, study.design.scale + 1))
                ),
                "cohen_kappa": stats.cohen_kappas(units, weights="quadratic"),
            }
    return result


def judgement_rows(study: Study, items: list[dict]) -> list[dict]:
    """One flat row per judgement, systems named (the export raters never see); `items` as
    `Study.items` gives them."""
    items = {i["item"]: i for i in items}
    rows = []
    for j in study.judgements():
        row = {
            "rater": j["rater"],
            "item": j["item"],
            "row": items[j["item"]]["row"],
            "kind": j["kind"],
            "left": j["left"],
            "right": j["right"] or "",
            "preference": j["preference"] or "",
            "winner": "",
            "given": j["given"],
            "seconds": "" if j["seconds"] is None else round(j["seconds"], 3),
        }
        if j["kind"] == "pair":
            row["winner"] = {"left": j["left"], "right": j["right"], "tie": "tie"}[j["preference"]]
        for criterion in study.design.criteria:
            row[criterion] = (j["ratings"] or {}).get(criterion, "")
        rows.append(row)
    return rows


def write_report(study: Study, out: str | os.PathLike, result: dict) -> dict:
    """report.json, judgements.csv, outputs.jsonl, the plots and report.html in `out` (each written
    atomically; other files there are left alone). Returns their paths."""
    from ..storage import save_figure, write_atomic, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "json": out / "report.json",
        "csv": out / "judgements.csv",
        "outputs": out / "outputs.jsonl",
        "html": out / "report.html",
    }
    write_json_atomic(written["json"], result)
    items = study.items()
    rows = judgement_rows(study, items)
    columns = [
        "rater",
        "item",
        "row",
        "kind",
        "left",
        "right",
        "preference",
        "winner",
        *study.design.criteria,
        "given",
        "seconds",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(written["csv"], buffer.getvalue())
    write_atomic(written["outputs"], "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    plots = []
    for name, figure in _figures(result):
        path = out / f"{name}.png"
        save_figure(figure, path)
        plots.append(path)
    written["plots"] = plots
    write_atomic(written["html"], _html(result, plots))
    return {k: [str(p) for p in v] if isinstance(v, list) else str(v) for k, v in written.items()}


def _figures(result: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if result["pairwise"]:
        rows = result["pairwise"]
        figure, axis = plt.subplots(figsize=(7, 0.6 + 0.5 * len(rows)))
        labels = [f"{r['system_a']} vs {r['system_b']}" for r in rows]
        left = [0.0] * len(rows)
        for key, colour in (("win_rate", "#4c72b0"), ("tie_rate", "#bbbbbb"), ("loss_rate", "#dd8452")):
            values = [r[key] for r in rows]
            axis.barh(labels, values, left=left, color=colour, label=key.split("_")[0])
            left = [a + b for a, b in zip(left, values)]
        wins = [r["win_rate"] for r in rows]
        errors = [
            [w - r["win_rate_interval"][0] for w, r in zip(wins, rows)],
            [r["win_rate_interval"][1] - w for w, r in zip(wins, rows)],
        ]
        axis.errorbar(wins, labels, xerr=errors, fmt="none", ecolor="black", capsize=3)
        axis.set_xlim(0, 1)
        axis.set_xlabel(f"share of judgements (first system's wins, with a {result['study']['level']:.0%} interval)")
        axis.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False)
        figure.tight_layout()
        yield "pairwise", figure
        plt.close(figure)
    if result["bradley_terry"]:
        rows = result["bradley_terry"]
        figure, axis = plt.subplots(figsize=(7, 0.6 + 0.5 * len(rows)))
        elo = [r["elo"] for r in rows]
        errors = [
            [e - r["elo_interval"][0] for e, r in zip(elo, rows)],
            [r["elo_interval"][1] - e for e, r in zip(elo, rows)],
        ]
        axis.errorbar(elo, [r["system"] for r in rows], xerr=errors, fmt="o", capsize=3)
        axis.invert_yaxis()
        axis.set_xlabel("Bradley-Terry strength on the Elo scale")
        figure.tight_layout()
        yield "bradley_terry", figure
        plt.close(figure)
    if result["ratings"]:
        systems = list(result["ratings"])
        criteria = list(next(iter(result["ratings"].values())))
        figure, axis = plt.subplots(figsize=(1.5 + 1.6 * len(criteria), 3.6))
        width = 0.8 / len(systems)
        for k, system in enumerate(systems):
            xs = [c + (k - (len(systems) - 1) / 2) * width for c in range(len(criteria))]
            cells = [result["ratings"][system][c] for c in criteria]
            means = [cell["mean"] or 0 for cell in cells]
            errors = [
                [m - cell["interval"][0] if cell["interval"] else 0 for m, cell in zip(means, cells)],
                [cell["interval"][1] - m if cell["interval"] else 0 for m, cell in zip(means, cells)],
            ]
            axis.bar(xs, means, width, yerr=errors, capsize=3, label=system)
        axis.set_xticks(range(len(criteria)), criteria)
        axis.set_ylim(0, result["study"]["design"]["scale"] + 0.5)
        axis.set_ylabel("mean rating")
        axis.legend(fontsize=8)
        figure.tight_layout()
        yield "ratings", figure
        plt.close(figure)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(values) -> str:
    return "–" if not values else f"[{values[0]:.3f}, {values[1]:.3f}]"


def _table(header: list[str], rows: list[list]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


PAIRWISE_COLUMNS = (
    ("first", "system_a", None),
    ("second", "system_b", None),
    ("judgements", "judgements", None),
    ("wins", "wins", None),
    ("ties", "ties", None),
    ("losses", "losses", None),
    ("win rate", "win_rate", _fmt),
    ("interval", "win_rate_interval", _interval),
    ("tie rate", "tie_rate", _fmt),
    ("loss rate", "loss_rate", _fmt),
    ("interval", "loss_rate_interval", _interval),
)


def _pairwise_html(pairwise: list[dict]) -> list[str]:
    header = [name for name, _, _ in PAIRWISE_COLUMNS]
    rows = [[show(r[key]) if show else r[key] for _, key, show in PAIRWISE_COLUMNS] for r in pairwise]
    return ["<h2>Pairwise</h2>", _table(header, rows)]


def _bradley_terry_html(strengths: list[dict]) -> list[str]:
    rows = [
        [
            r["rank"],
            r["system"],
            _fmt(r["strength"]),
            _interval(r["strength_interval"]),
            _fmt(r["elo"], 0),
            _interval(r["elo_interval"]),
        ]
        for r in strengths
    ]
    return ["<h2>Bradley-Terry</h2>", _table(["rank", "system", "strength", "interval", "Elo", "interval"], rows)]


def _ratings_html(ratings: dict, level: str) -> list[str]:
    criteria = list(next(iter(ratings.values())))
    header = ["system", *[f"{c} (mean, {level} interval, n)" for c in criteria]]
    rows = [
        [s, *[f"{_fmt(cell['mean'], 2)} {_interval(cell['interval'])} n={cell['n']}" for cell in by.values()]]
        for s, by in ratings.items()
    ]
    return ["<h2>Ratings</h2>", _table(header, rows)]


def _agreement_html(agreements: dict) -> list[str]:
    rows = []
    for what, agreement in agreements.items():
        alpha = agreement["krippendorff_alpha"]
        kappas = "; ".join(
            f"{' & '.join(k['raters'])}: {_fmt(k['kappa'])} ({k['units']} units)" for k in agreement["cohen_kappa"]
        )
        rows.append([what, _fmt(alpha["alpha"]), alpha["units"], alpha.get("reason", ""), kappas])
    header = ["judgement", "Krippendorff's alpha", "units judged twice", "note", "Cohen's kappa"]
    return ["<h2>Agreement between raters</h2>", _table(header, rows)]


def _html(result: dict, plots: list[Path]) -> str:
    study = result["study"]
    level = f"{study['level']:.0%}"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Human evaluation</title>",
        (
            "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;font-size:13px;"
            "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:48%;margin:1%}"
            "</style></head><body>"
        ),
        f"<h1>Human evaluation: {html.escape(', '.join(s['name'] for s in study['systems']))}</h1>",
        (
            f"<p>{study['judgements']} judgements by {len(study['raters'])} raters on {html.escape(study['data'])}; "
            f"mode {html.escape(study['design']['mode'])}; intervals at {level}.</p>"
        ),
        _table(["rater", "judged", "of"], [[r["name"], r["done"], r["tasks"]] for r in study["raters"]]),
    ]
    if result["pairwise"]:
        parts += _pairwise_html(result["pairwise"])
    if result["bradley_terry"]:
        parts += _bradley_terry_html(result["bradley_terry"])
    if result["ratings"]:
        parts += _ratings_html(result["ratings"], level)
    if result["agreement"]:
        parts += _agreement_html(result["agreement"])
    parts += [f"<img src='{p.name}' alt='{p.stem}'>" for p in plots]
    parts.append(f"<h2>Study</h2><pre>{html.escape(json.dumps(study, indent=2))}</pre></body></html>")
    return "\n".join(parts)


def attach(study: Study, result: dict) -> list[dict]:
    """Attach the result to every registry version the study compared: its side of each pairwise
    comparison, its Bradley-Terry strength and its ratings."""
    from ..artifacts.registry import Registry

    attached = []
    for system in result["study"]["systems"]:
        if not system.get("spec"):
            continue
        name = system["name"]
        own = {
            "study": str(study.folder),
            "study_id": study.id,
            "system": name,
            "judgements": result["study"]["judgements"],
            "pairwise": [_own_side(r, name) for r in result["pairwise"] if name in (r["system_a"], r["system_b"])],
        }
        for row in result["bradley_terry"] or []:
            if row["system"] == name:
                own["bradley_terry"] = row
        if name in result["ratings"]:
            own["ratings"] = result["ratings"][name]
        attached.append(Registry(system["registry"]).attach(system["spec"], "human_eval", study.id, own))
    return attached


def _own_side(row: dict, name: str) -> dict:
    """A pairwise row as seen from `name`'s side."""
    if row["system_a"] == name:
        return {
            "against": row["system_b"],
            "wins": row["wins"],
            "ties": row["ties"],
            "losses": row["losses"],
            "win_rate": row["win_rate"],
            "win_rate_interval": row["win_rate_interval"],
        }
    return {
        "against": row["system_a"],
        "wins": row["losses"],
        "ties": row["ties"],
        "losses": row["wins"],
        "win_rate": row["loss_rate"],
        "win_rate_interval": row["loss_rate_interval"],
    }

"""Who made the numbers: the models table (kind, size, epochs, cost), the provenance section (commit,
packages, machine, dates) and one page per model with all of its metrics and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from genbench.report.convergence import MEASURE

from genbench.io import write_text
from genbench.report.leaderboard import FIELDS, METRIC_COLUMNS
from genbench.report.records import lookup
from genbench.report.render import html_page
from genbench.report.sections import Est, Section, column_decimals, fmt, fmt_fixed

EPOCH_KEYS = ("epochs", "max_iter", "n_iter")  # the hyperparameter that sets a model's training length


def model_href(model: str) -> str:
    return f"models/{model}.html"


def _epochs(record: dict) -> str:
    hyper = record.get("hyperparameters") or {}
    for key in EPOCH_KEYS:
        if key in hyper:
            return f"{hyper[key]} ({key})"
    return "closed form / EM"


def _size(record: dict) -> tuple[object, str]:
    size = record.get("size") or {}
    return size.get("parameters"), size.get("counted", "")


def convergence_text(record: dict, short: bool = False) -> str:
    """"still falling (2.3%)" or "flat (0.1%)" (the median seed's drop of the validation loss over the last
    quarter of training, genbench.report.convergence), with its column unless `short`; "" without one."""
    found = record.get("convergence")
    if not found:
        return ""
    drop = sorted(found["drops"].values())[len(found["drops"]) // 2]
    text = f"{'still falling' if found['still_falling'] else 'flat'} ({drop:.1%}"
    return text + ")" if short else f"{text} over the last quarter of training, median seed, {found['column']})"


def models_section(records: list[dict]) -> Section:
    rows = []
    for r in records:
        parameters, counted = _size(r)
        rows.append({"model": r["model"], "kind": r.get("kind"), "capabilities": ", ".join(r.get("capabilities") or []),
                     "numbers stored": f"{parameters:,}" if isinstance(parameters, int) else "",
                     "counted as": counted, "training length": _epochs(r),
                     "fit s / seed": Est(float(lookup(r, "cost.fit_seconds") or 0.0)),
                     "val. loss at end": convergence_text(r, short=True),
                     "device": lookup(r, "cost.device") or r.get("device")})
    table = pd.DataFrame(rows)
    decimals = column_decimals([row["fit s / seed"].mean for row in rows])
    table["fit s / seed"] = [fmt_fixed(v, decimals) for v in table["fit s / seed"]]
    table = table.map(lambda v: v if isinstance(v, str) else fmt(v))
    notes = ["Each model's page (its name) lists every metric with its interval and seed count, its hyperparameters "
             "as run, and its figures. Numbers stored: torch parameters, or for scikit-learn and numpy models the "
             "elements of their fitted arrays (a kNN stores its training images).",
             f"Val. loss at end: {MEASURE} (genbench/report/convergence.py); in brackets the median seed's drop "
             "over the last quarter. A model still falling is under-trained for its settings, and its numbers are "
             "those of that length of training. Empty: no validation loss is logged."]
    return Section("Models", table, notes, links={r["model"]: model_href(r["model"]) for r in records})


def provenance_section(records: list[dict], evaluator: dict | None, meta: dict | None) -> Section:
    """One row per distinct (commit, machine, packages) that produced the records, with their dates."""
    groups: dict[str, dict] = {}
    for r in records:
        made = r.get("provenance") or {}
        key = json.dumps([made.get("commit"), made.get("code_modified"), made.get("machine"), made.get("gpu"),
                          made.get("packages")], sort_keys=True)
        entry = groups.setdefault(key, {"made": made, "models": [], "dates": []})
        entry["models"].append(r["model"])
        if made.get("date_utc"):
            entry["dates"].append(made["date_utc"])
    rows = []
    for entry in groups.values():
        made = entry["made"]
        commit = made.get("commit")
        packages = made.get("packages") or {}
        dates = sorted(entry["dates"])
        rows.append({
            "models": ", ".join(entry["models"]) if len(groups) > 1 else f"all {len(entry['models'])}",
            "commit": (commit[:12] + (" (modified)" if made.get("code_modified") else "")) if commit else "not recorded",
            "run (UTC)": f"{dates[0][:16]} to {dates[-1][:16]}" if dates else "not recorded",
            "machine": (f"{made.get('machine')}, {made.get('cores')} cores" if made.get("machine") else "not recorded")
                       + (f", {made['gpu']}" if made.get("gpu") else ""),
            "python": made.get("python") or "",
            "packages": ", ".join(f"{k} {v}" for k, v in packages.items() if v) or "not recorded",
        })
    notes = ["What produced each metrics record: the commit of the code that ran (modified: genbench/, stages/ or "
             "params.yaml differed from it), when, on what machine and with which package versions. Records written "
             "before provenance was recorded say 'not recorded'."]
    if evaluator:
        notes.append(f"Feature network (FID, PRDC, CAS): evaluators/<dataset>/evaluator.pt, sha256 "
                     f"{evaluator.get('sha256', '?')}, committed; every FID above used it.")
    if meta and meta.get("source"):
        source = meta["source"]
        files = source.get("files") or {}
        notes.append(f"Data: {source.get('origin', '')}" + (f" at {source['path']}" if source.get("path") else "")
                     + ("; files (sha256): " + ", ".join(f"{k} {v[:12]}" for k, v in files.items()) if files else "") + ".")
    return Section("Provenance", pd.DataFrame(rows), notes)


def _metric_rows(record: dict) -> list[dict]:
    rows = []
    for column in METRIC_COLUMNS:
        path = FIELDS[column]
        value = lookup(record, path)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        found = (record.get("intervals") or {}).get(path) or {}
        estimate = Est(float(value), found.get("low"), found.get("high"))
        decimals = column_decimals([float(value)])
        rows.append({"metric": column, "mean [95% interval]": fmt_fixed(estimate, decimals),
                     "seeds": fmt(found.get("n_seeds") or record.get("n_seeds")),
                     "interval method": found.get("method") or ""})
    return rows


def write_model_pages(out: Path, dataset: str, records: list[dict], images: dict[str, list[tuple[str, str]]]) -> None:
    """reports/<dataset>/models/<model>.html: every metric, hyperparameters, size, provenance and figures."""
    for r in records:
        model = r["model"]
        parameters, counted = _size(r)
        hyper = pd.DataFrame([{"hyperparameter": k, "value": json.dumps(v) if not isinstance(v, str) else v}
                              for k, v in sorted((r.get("hyperparameters") or {}).items())])
        made = r.get("provenance") or {}
        sections = [
            Section("Metrics", pd.DataFrame(_metric_rows(r)), [
                "Means over seeds with 95% intervals, as in leaderboard.csv (same columns); per-seed values are in "
                "per_seed.csv."]),
            Section("Hyperparameters as run", hyper, [f"Training length: {_epochs(r)}. Numbers stored: "
                                                      + (f"{parameters:,} ({counted})." if isinstance(parameters, int)
                                                         else "not recorded.")]),
            Section("Figures", images=[(caption, f"../{path}") for caption, path in images.get(model, [])]),
        ]
        not_applicable = r.get("not_applicable") or {}
        if not_applicable:
            sections[0].notes.append("Not measured: " + "; ".join(f"{k} ({v})" for k, v in not_applicable.items()) + ".")
        if convergence_text(r):
            sections[0].notes.insert(0, f"Training: {convergence_text(r)}.")
        intro = [f"{model} ({r.get('kind')}) on {dataset}; capabilities: {', '.join(r.get('capabilities') or [])}; "
                 f"seeds {', '.join(map(str, r.get('seeds') or []))}.",
                 f"Commit {str(made.get('commit'))[:12]}, run {made.get('date_utc', 'at an unrecorded time')} on "
                 f"{made.get('machine', 'an unrecorded machine')}." if made else "Provenance not recorded."]
        write_text(out / "models" / f"{model}.html", html_page(
            f"genbench: {model} on {dataset}", intro, [s for s in sections if s.table is not None or s.images],
            links=[("report", "../index.html"), ("leaderboard.csv", "../leaderboard.csv"),
                   ("all datasets", "../../index.html")]))

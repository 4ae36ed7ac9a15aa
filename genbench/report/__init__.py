"""The report stages: metrics records -> pandas leaderboard -> Markdown/HTML pages with figures.

`build_dataset_report(root, out_dir, dataset, models)` writes one dataset's report folder,
`reports/<dataset>/`, from the records of the listed models only, so running a subset of datasets never
touches another dataset's report. `build_index(reports_dir, datasets)` writes the entry page
`reports/index.html` from the listed datasets' `reports/<dataset>/summary.json`.

Inputs of a dataset's report, relative to the repository root: `metrics/<dataset>/<model>.json` (means
over seeds, 95% intervals and per-seed records; see `genbench.report.records`),
`curves/<dataset>/<model>.csv`, `samples/<dataset>/<model>/{grid.png,figure-*.png,info.json}`,
`evaluators/<dataset>/{evaluator,reference}.json`, `data/<dataset>/meta.json` and the studies,
`studies/<dataset>/{learning_curve,augmentation}/<model>.json` (genbench.report.studies). Outputs (DESIGN.md, "Outputs"):
`reports/<dataset>/{leaderboard.csv,per_seed.csv,summary.json,README.md,index.html,samples/,figures/,curves/}`,
written as one folder that replaces the old one atomically, and `reports/index.html`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from genbench.io import atomic_directory, read_json, write_json, write_text
from genbench.params import Paths
from genbench.report.leaderboard import (
    FIELDS, apply_verdicts, best_per_metric, leaderboard, per_seed_table, reference_sha, tie_marks,
)
from genbench.report.published import published_section
from genbench.report.convergence import still_falling
from genbench.report.records import RECORD_STAGE, load_records
from genbench.report.provenance import model_href, models_section, provenance_section, write_model_pages
from genbench.report.render import html_page, markdown
from genbench.report.studies import augmentation_sections, learning_curve_sections, load_studies, study_selection
from genbench.report.sections import TIE_NOTE, Est, Section, column_decimals, fmt_fixed, metric_sections
from genbench.report.visuals import comparisons, model_figures, sample_grids, training_curves

__all__ = ["FIELDS", "best_per_metric", "build_dataset_report", "build_index", "build_report", "leaderboard",
           "load_records", "per_seed_table", "run_index", "run_report"]

# The DVC stage that writes reports/<dataset>/ (named in build_index's error for a missing summary):
# the `report` stage of the dataset's generated pipeline (genbench.dvc_pipelines).
REPORT_STAGE = "pipelines/{dataset}/dvc.yaml:report"


def _read_optional(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def _splits_text(meta: dict | None) -> str:
    if not meta or not meta.get("sizes"):
        return ""
    return " · ".join(f"{split} {n}" for split, n in meta["sizes"].items()) + " images"


def _describe(dataset: str, meta: dict | None) -> str:
    """One readable line: shape, levels, classes, where the images came from and any subset."""
    if not meta:
        return f"Dataset metadata (data/{dataset}/meta.json) not found."
    parts = []
    if meta.get("image_shape"):
        parts.append("images " + "×".join(map(str, meta["image_shape"])))
    if meta.get("levels"):
        parts.append(f"{meta['levels']} intensity levels")
    if meta.get("num_classes"):
        names = meta.get("class_names") or []
        shown = "" if not names or names == [str(i) for i in range(len(names))] else f" ({', '.join(names)})"
        parts.append(f"{meta['num_classes']} classes{shown}")
    source = meta.get("source")
    if isinstance(source, dict):
        parts.append(f"source: {source.get('origin', 'unknown')}" + (f", {source['path']}" if source.get("path") else ""))
    elif source:
        parts.append(f"source: {source}")
    config = meta.get("config") or {}
    subset = [f"{key} {config[key]}" for key in ("max_train", "max_test") if config.get(key)]
    if subset:
        parts.append("stratified subsets: " + ", ".join(subset) + " (not comparable with full-test-set results)")
    return "; ".join(parts) + "."


def build_dataset_report(root: str | Path, out_dir: str | Path, dataset: str, models: Iterable[str],
                         studies: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """Write one dataset's report folder `out_dir` (= reports/<dataset>/) completely and return its summary.

    Reads only the records of `models` (the models listed in params.yaml): a record on disk for another
    model is ignored, a listed model without a record is an error naming the file and its stage.
    `studies`: study -> models whose studies/<dataset>/<study>/<model>.json to read (None: the files there).
    Writes leaderboard.csv, per_seed.csv, summary.json (the returned dict), README.md, index.html, one page
    per model under models/, the comparison data under plots/ and the figures under figures/, samples/ and
    curves/; the folder replaces the previous one in one rename.
    Returns {"dataset", "models", "seeds", "splits", "best": [{"metric", "model", "value", "low", "high",
    "tied": [models], "text", ...}]}."""
    root, out_dir = Path(root), Path(out_dir)
    records = load_records(root, dataset, models)
    paths = Paths(root)
    meta = _read_optional(paths.data(dataset) / "meta.json")
    evaluator = _read_optional(paths.evaluator(dataset) / "evaluator.json")
    floor = _read_optional(paths.reference(dataset))
    if evaluator is not None and floor is not None and floor["fid"].get("features_sha256") == evaluator.get("sha256"):
        evaluator = {**evaluator, "reference_fid": floor["fid"]}  # real data at the models' sample count
    sha, fid_warnings = reference_sha(records, evaluator)
    for r in records:  # is the validation loss still falling when training stops?
        curve = paths.curve(dataset, r["model"])
        if curve.exists() and curve.stat().st_size:
            r["convergence"] = still_falling(pd.read_csv(curve))
    verdicts = _read_optional(paths.results(dataset) / "comparisons.json")  # genbench.comparisons
    records = apply_verdicts(records, verdicts)  # every table shows the interval its verdict was reached with
    board = leaderboard(records, sha, verdicts)
    summary = {
        "dataset": dataset,
        "models": [r["model"] for r in records],
        "seeds": sorted({s for r in records for s in r["seeds"] if s is not None}),
        "splits": (meta or {}).get("sizes"),
        "best": best_per_metric(board),
    }
    image_shape = tuple((meta or {}).get("image_shape") or (1, 8, 8))
    with atomic_directory(out_dir) as out:
        write_text(out / "leaderboard.csv", board.to_csv(index=False))
        write_text(out / "per_seed.csv", per_seed_table(records, sha).to_csv(index=False))
        floor = (evaluator or {}).get("reference_fid")
        real = ((verdicts or {}).get("real_data") or {}).get("metrics", {}).get("fid")
        if real:  # the compare stage's FIDs are in its bounded space: so must the real-data line be
            floor = real
        glance = comparisons(out, dataset, board, floor)
        sections = metric_sections(records, evaluator, tie_marks(board), sha, fid_warnings, verdicts)
        for section in sections:
            section.links = {r["model"]: model_href(r["model"]) for r in records}
        published = published_section(dataset, board, sizes=(meta or {}).get("sizes"),
                                      hyperparameters={r["model"]: r.get("hyperparameters") or {} for r in records})
        sections += [published] if published else []
        study_records = load_studies(root, dataset, dict(studies) if studies is not None else None)
        sections += learning_curve_sections(out, dataset, study_records["learning_curve"])
        sections += augmentation_sections(out, dataset, study_records["augmentation"])
        visuals = [s for s in (sample_grids(root, out, dataset, records, image_shape),
                               model_figures(root, out, dataset, records, image_shape),
                               training_curves(root, out, dataset, records)) if s]
        sections = [*([glance] if glance else []), *sections, *visuals, models_section(records),
                    provenance_section(records, evaluator, meta)]
        per_model: dict[str, list[tuple[str, str]]] = {}
        for section in visuals:
            for caption, path in section.images:
                model = Path(path).stem.split("-")[0]
                per_model.setdefault(model, []).append((f"{section.title}: {caption}", path))
        write_model_pages(out, dataset, records, per_model)
        _write_pages(out, dataset, meta, summary, sections)
        write_json(out / "summary.json", summary)
    return summary


def _seeds_text(summary: dict) -> str:
    seeds = summary.get("seeds") or []
    return f"{len(seeds)} seed{'' if len(seeds) == 1 else 's'} ({', '.join(map(str, seeds))})" if seeds else ""


def _write_pages(out: Path, dataset: str, meta: dict | None, summary: dict, sections: list[Section]) -> None:
    splits = _splits_text(meta)
    title = f"genbench: {dataset}" + (f" ({splits})" if splits else "")
    description = _describe(dataset, meta)
    seeds = _seeds_text(summary)
    runs = (f"Every model is trained and evaluated once per seed, {seeds}; tables show the mean over seeds with "
            "its 95% interval [low, high]." if seeds else "")
    best = [b["text"] for b in summary["best"]]
    best_md = "\n".join(f"- {line}" for line in best)
    links_md = ("[leaderboard.csv](leaderboard.csv) · [per_seed.csv](per_seed.csv) · [HTML version](index.html) · "
                "[all datasets](../index.html)")
    write_text(out / "README.md", markdown(title, [p for p in (description, runs, links_md, best_md,
                                                               TIE_NOTE if best else "") if p], sections))
    links = [("leaderboard.csv", "leaderboard.csv"), ("per_seed.csv", "per_seed.csv"), ("Markdown version", "README.md"),
             ("all datasets", "../index.html")]
    write_text(out / "index.html", html_page(title, [p for p in (description, runs) if p], sections, links=links,
                                             best=best, tie_note=TIE_NOTE if best else ""))


def build_index(reports_dir: str | Path, datasets: Iterable[str], committed_only: Iterable[str] = (),
                out_dir: str | Path | None = None) -> None:
    """Write `reports_dir/index.html` linking the listed datasets' reports, with their best lines and tied
    groups, from `reports_dir/<dataset>/summary.json` (other folders under `reports_dir` are not read).
    `committed_only`: datasets turned off in params.yaml, whose committed reports are shown as such.
    `out_dir`: where index.html goes (default: `reports_dir`)."""
    reports_dir = Path(reports_dir)
    datasets = list(dict.fromkeys(datasets))
    missing = [d for d in datasets if not (reports_dir / d / "summary.json").exists()]
    if missing:
        raise FileNotFoundError("missing " + "; ".join(
            f"{reports_dir / d / 'summary.json'} (built by `dvc repro {REPORT_STAGE.format(dataset=d)}`)" for d in missing))
    summaries = {d: read_json(reports_dir / d / "summary.json") for d in datasets}
    write_text(Path(out_dir or reports_dir) / "index.html", _entry_page(summaries, set(committed_only)))


def _entry_page(datasets: Mapping[str, dict], committed_only: set[str] = frozenset()) -> str:
    """The cross-dataset summary: one row per headline metric, one column per dataset, each cell the best
    model with its value and interval and how many others are tied with it; then each dataset's links."""
    metrics = list(dict.fromkeys(b["metric"] for s in datasets.values() for b in s.get("best") or []))
    rows = []
    for metric in metrics:
        row = {"metric": metric}
        for dataset, summary in datasets.items():
            best = next((b for b in summary.get("best") or [] if b["metric"] == metric), None)
            if best is None:
                row[dataset] = ""
                continue
            estimate = Est(best["value"], best.get("low"), best.get("high"))
            width = [(estimate.high - estimate.low) / 2] if estimate.low is not None and estimate.high is not None else []
            tied = f" (+{len(best['tied'])} tied: {', '.join(best['tied'])})" if best.get("tied") else " (no tie)"
            row[dataset] = f"{best['model']}: {fmt_fixed(estimate, column_decimals([estimate.mean], width))}{tied}"
        rows.append(row)
    summary_section = Section("Best per metric", pd.DataFrame(rows), [
        "Per dataset: the model with the best mean over seeds [its 95% interval], and the models tied with it. "
        f"{TIE_NOTE} Numbers on different datasets are not comparable."])
    sections = [summary_section] if rows else []
    for dataset, summary in datasets.items():
        splits = _splits_text({"sizes": summary.get("splits")})
        seeds = _seeds_text(summary)
        text = f"{len(summary['models'])} models" + (f" · {seeds}" if seeds else "") + (f" · {splits}" if splits else "")
        off = ([f"Committed results, not rebuilt by dvc repro here: {dataset} is turned off in params.yaml "
                f"(enabled: false). With its data files in place, uv run genbench enable {dataset} turns it on."]
               if dataset in committed_only else [])
        section = Section(dataset, notes=[text, *off] + [b["text"] for b in summary.get("best") or []])
        section.images = []
        section.links = {}
        sections.append(section)
    intro = ["No datasets listed in params.yaml."] if not datasets else [
        "Values: mean over seeds [95% interval]. Each dataset's report has the full tables, figures and provenance."]
    links = [link for d in datasets for link in ((f"{d} report", f"{d}/index.html"), (f"{d} Markdown", f"{d}/README.md"),
                                                  (f"{d} leaderboard.csv", f"{d}/leaderboard.csv"),
                                                  (f"{d} per_seed.csv", f"{d}/per_seed.csv"))]
    return html_page("genbench reports", intro, sections, links=links)


def run_report(params: dict[str, Any], dataset: str, root: str | Path = ".", out: str | Path | None = None) -> dict[str, Any]:
    """The `report` stage of one dataset (`genbench report <dataset>`): reports/<dataset>/ (under `out`,
    default `root`) from the records of the models under `models:` in params.yaml."""
    from genbench.params import check_selection

    check_selection(params, dataset=dataset)
    return build_dataset_report(root, Paths(root if out is None else out).report(dataset), dataset,
                                list(params.get("models") or {}),
                                studies=study_selection(Path(root), dataset))


def run_index(params: dict[str, Any], root: str | Path = ".", out: str | Path | None = None) -> None:
    """The `index` stage (`genbench index`): reports/index.html for the datasets `dvc repro` builds and the
    committed reports of those turned off (`enabled: false`), which it says are not rebuilt here."""
    from genbench.params import enabled_datasets, index_datasets

    reports = Path(root) / "reports"
    datasets = index_datasets(params, reports)
    build_index(reports, datasets, committed_only=[d for d in datasets if d not in enabled_datasets(params)],
                out_dir=None if out is None else Path(out) / "reports")


def build_report(root: str | Path, out_dir: str | Path, datasets: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """Every listed dataset's report (`datasets`: dataset -> its models) and the entry page, in one call.

    Returns {"out_dir": ..., "datasets": {dataset: summary}}."""
    root, out_dir = Path(root), Path(out_dir)
    summaries = {dataset: build_dataset_report(root, out_dir / dataset, dataset, models)
                 for dataset, models in datasets.items()}
    build_index(out_dir, list(datasets))
    return {"out_dir": str(out_dir), "datasets": summaries}

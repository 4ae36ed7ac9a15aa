"""The report stages: metrics records -> pandas leaderboard -> Markdown/HTML pages with figures.

`build_dataset_report(root, out_dir, dataset, models)` writes one dataset's report folder,
`reports/<dataset>/`, from the records of the listed models only, so running a subset of datasets never
touches another dataset's report. `build_index(reports_dir, datasets)` writes the entry page
`reports/index.html` from the listed datasets' `reports/<dataset>/summary.json`.

Inputs of a dataset's report, relative to the repository root: `metrics/<dataset>/<model>.json` (means
over seeds, 95% intervals and per-seed records; see `genbench.report.records`),
`curves/<dataset>/<model>.csv`, `samples/<dataset>/<model>/{grid.png,figure-*.png,info.json}`,
`evaluators/<dataset>/{evaluator,reference}.json` and `data/<dataset>/meta.json`. Outputs (DESIGN.md, "Outputs"):
`reports/<dataset>/{leaderboard.csv,per_seed.csv,summary.json,README.md,index.html,samples/,figures/,curves/}`,
written as one folder that replaces the old one atomically, and `reports/index.html`.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from genbench.io import atomic_directory, atomic_file, read_json, write_json, write_text
from genbench.report.leaderboard import (
    FIELDS, best_per_metric, leaderboard, per_seed_table, reference_sha, tie_marks,
)
from genbench.report.published import published_section
from genbench.report.records import RECORD_STAGE, load_records
from genbench.report.render import curve_figure, html_page, markdown
from genbench.report.sections import TIE_NOTE, Section, metric_sections

__all__ = ["FIELDS", "best_per_metric", "build_dataset_report", "build_index", "build_report", "leaderboard",
           "load_records", "per_seed_table", "run_index", "run_report"]

# The DVC stage that writes reports/<dataset>/ (named in build_index's error for a missing summary):
# the `report` stage of the dataset's generated pipeline (genbench.dvc_pipelines).
REPORT_STAGE = "pipelines/{dataset}/dvc.yaml:report"


def _read_optional(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def _sample_grids(root: Path, out: Path, dataset: str, records: list[dict]) -> Section | None:
    """Copy each model's sample grid next to the page; models that cannot sample have none."""
    section = Section("Samples", notes=["Random samples from each model that can generate, as a torchvision image grid, "
                                        "from the model trained with the first seed."])
    for record in records:
        model = record["model"]
        grid = root / "samples" / dataset / model / "grid.png"
        info = _read_optional(root / "samples" / dataset / model / "info.json") or {}
        if grid.exists():
            with atomic_file(out / "samples" / f"{model}.png") as tmp:
                shutil.copyfile(grid, tmp)
            section.images.append((model, f"samples/{model}.png"))
        elif info.get("capable"):
            stage = RECORD_STAGE.format(dataset=dataset, model=model)
            section.warnings.append(f"{model} can sample but {grid.relative_to(root)} is missing: rerun its stage, "
                                    f"`dvc repro {stage}`.")
    return section if section.images or section.warnings else None


def _figures(root: Path, out: Path, dataset: str, records: list[dict]) -> Section | None:
    """Model-specific figures (latent interpolations, translations, denoising trajectories)."""
    section = Section("Figures", notes=["Figures a model draws for itself (its `figures` hook), from the test split, "
                                        "by the model trained with the first seed."])
    for record in records:
        model = record["model"]
        info = _read_optional(root / "samples" / dataset / model / "info.json") or {}
        for name, filename in (info.get("figures") or {}).items():
            source = root / "samples" / dataset / model / filename
            if source.exists():
                with atomic_file(out / "figures" / f"{model}-{name}.png") as tmp:
                    shutil.copyfile(source, tmp)
                section.images.append((f"{model}: {name.replace('_', ' ')}", f"figures/{model}-{name}.png"))
    return section if section.images else None


def _training_curves(root: Path, out: Path, dataset: str, records: list[dict]) -> Section | None:
    """One loss-per-epoch figure per model that logged any (closed-form models log none)."""
    section = Section("Training curves", notes=["Training losses per epoch, as logged by the training loop. With "
                                                "several seeds: the line is the mean over seeds, the shaded band "
                                                "spans the seeds' minimum to maximum."])
    for record in records:
        model = record["model"]
        path = root / "curves" / dataset / f"{model}.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        curve = pd.read_csv(path)
        if curve.empty or "epoch" not in curve.columns or not set(curve.columns) - {"epoch", "seed"}:
            continue
        curve_figure(curve, f"{model} on {dataset}", out / "curves" / f"{model}.png")
        section.images.append((model, f"curves/{model}.png"))
    return section if section.images else None


def _splits_text(meta: dict | None) -> str:
    if not meta or not meta.get("sizes"):
        return ""
    return " · ".join(f"{split} {n}" for split, n in meta["sizes"].items()) + " images"


def _describe(dataset: str, meta: dict | None) -> str:
    if not meta:
        return f"Dataset metadata (data/{dataset}/meta.json) not found."
    parts = []
    if meta.get("image_shape"):
        parts.append("images " + "×".join(map(str, meta["image_shape"])))
    if meta.get("levels"):
        parts.append(f"{meta['levels']} intensity levels")
    if meta.get("num_classes"):
        parts.append(f"{meta['num_classes']} classes")
    if meta.get("source"):
        parts.append(f"source: {meta['source']}")
    return "; ".join(parts) + "."



def build_dataset_report(root: str | Path, out_dir: str | Path, dataset: str, models: Iterable[str]) -> dict[str, Any]:
    """Write one dataset's report folder `out_dir` (= reports/<dataset>/) completely and return its summary.

    Reads only the records of `models` (the models listed in params.yaml): a record on disk for another
    model is ignored, a listed model without a record is an error naming the file and its stage.
    Writes leaderboard.csv, per_seed.csv, summary.json (the returned dict), README.md, index.html and
    the samples/, figures/, curves/ images; the folder replaces the previous one in one rename.
    Returns {"dataset", "models", "seeds", "splits", "best": [{"metric", "model", "value", "low", "high",
    "tied": [models], "text", ...}]}."""
    root, out_dir = Path(root), Path(out_dir)
    records = load_records(root, dataset, models)
    meta = _read_optional(root / "data" / dataset / "meta.json")
    evaluator = _read_optional(root / "evaluators" / dataset / "evaluator.json")
    floor = _read_optional(root / "evaluators" / dataset / "reference.json")
    if evaluator is not None and floor is not None and floor["fid"].get("features_sha256") == evaluator.get("sha256"):
        evaluator = {**evaluator, "reference_fid": floor["fid"]}  # real data at the models' sample count
    sha, fid_warnings = reference_sha(records, evaluator)
    board = leaderboard(records, sha)
    summary = {
        "dataset": dataset,
        "models": [r["model"] for r in records],
        "seeds": sorted({s for r in records for s in r["seeds"] if s is not None}),
        "splits": (meta or {}).get("sizes"),
        "best": best_per_metric(board),
    }
    with atomic_directory(out_dir) as out:
        write_text(out / "leaderboard.csv", board.to_csv(index=False))
        write_text(out / "per_seed.csv", per_seed_table(records, sha).to_csv(index=False))
        sections = metric_sections(records, evaluator, tie_marks(board), sha, fid_warnings)
        published = published_section(dataset, board, sizes=(meta or {}).get("sizes"),
                                      hyperparameters={r["model"]: r.get("hyperparameters") or {} for r in records})
        sections += [published] if published else []
        sections += [s for s in (_sample_grids(root, out, dataset, records), _figures(root, out, dataset, records),
                                 _training_curves(root, out, dataset, records)) if s]
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
    best_html = ("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in best) + "</ul>"
                 f'<p class="note">{html.escape(TIE_NOTE)}</p>') if best else ""
    write_text(out / "index.html", html_page(title, [
        f"<p>{html.escape(description)}</p>",
        *([f"<p>{html.escape(runs)}</p>"] if runs else []),
        '<p><a href="leaderboard.csv">leaderboard.csv</a> · <a href="per_seed.csv">per_seed.csv</a> · '
        '<a href="README.md">Markdown version</a> · <a href="../index.html">all datasets</a></p>',
        best_html,
    ], sections))


def build_index(reports_dir: str | Path, datasets: Iterable[str]) -> None:
    """Write `reports_dir/index.html` linking the listed datasets' reports, with their best lines and tied
    groups, from `reports_dir/<dataset>/summary.json` (other folders under `reports_dir` are not read)."""
    reports_dir = Path(reports_dir)
    datasets = list(dict.fromkeys(datasets))
    missing = [d for d in datasets if not (reports_dir / d / "summary.json").exists()]
    if missing:
        raise FileNotFoundError("missing " + "; ".join(
            f"{reports_dir / d / 'summary.json'} (built by `dvc repro {REPORT_STAGE.format(dataset=d)}`)" for d in missing))
    summaries = {d: read_json(reports_dir / d / "summary.json") for d in datasets}
    write_text(reports_dir / "index.html", _entry_page(summaries))


def _entry_page(datasets: Mapping[str, dict]) -> str:
    body = []
    for dataset, summary in datasets.items():
        name = html.escape(dataset)
        splits = _splits_text({"sizes": summary.get("splits")})
        seeds = _seeds_text(summary)
        body.append(f"<h2>{name}</h2>")
        body.append(f"<p>{len(summary['models'])} models" + (f" · {html.escape(seeds)}" if seeds else "")
                    + (f" · {html.escape(splits)}" if splits else "")
                    + f' · <a href="{name}/index.html">report</a> · <a href="{name}/README.md">Markdown</a>'
                    f' · <a href="{name}/leaderboard.csv">leaderboard.csv</a>'
                    f' · <a href="{name}/per_seed.csv">per_seed.csv</a></p>')
        items = [f"<li>{html.escape(best['text'])}</li>" for best in summary.get("best") or []]
        body.append("<ul>" + "".join(items) + "</ul>" if items else "<p>No ranked metrics yet.</p>")
    if not datasets:
        body.append("<p>No datasets listed in params.yaml.</p>")
    else:
        body.append(f'<p class="note">Values: mean over seeds [95% interval]. {html.escape(TIE_NOTE)}</p>')
    return html_page("genbench reports", body, [])


def run_report(params: dict[str, Any], dataset: str, root: str | Path = ".") -> dict[str, Any]:
    """The `report` stage of one dataset (`genbench report <dataset>`): reports/<dataset>/ from the records
    of the models under `models:` in params.yaml."""
    from genbench.pipeline import Paths, check_selection

    check_selection(params, dataset=dataset)
    return build_dataset_report(root, Paths(root).report(dataset), dataset, list(params.get("models") or {}))


def run_index(params: dict[str, Any], root: str | Path = ".") -> None:
    """The `index` stage (`genbench index`): reports/index.html for the datasets under `datasets:`."""
    build_index(Path(root) / "reports", list(params.get("datasets") or {}))


def build_report(root: str | Path, out_dir: str | Path, datasets: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """Every listed dataset's report (`datasets`: dataset -> its models) and the entry page, in one call.

    Returns {"out_dir": ..., "datasets": {dataset: summary}}."""
    root, out_dir = Path(root), Path(out_dir)
    summaries = {dataset: build_dataset_report(root, out_dir / dataset, dataset, models)
                 for dataset, models in datasets.items()}
    build_index(out_dir, list(datasets))
    return {"out_dir": str(out_dir), "datasets": summaries}

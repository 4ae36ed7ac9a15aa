"""The report stage: metrics records -> pandas leaderboard -> Markdown/HTML pages with figures.

Inputs, relative to the repository root: `metrics/<dataset>/<model>.json` (schema in
`genbench.metrics`), `curves/<dataset>/<model>.csv`, `samples/<dataset>/<model>/{grid.png,info.json}`,
`evaluators/<dataset>/evaluator.json` and `data/<dataset>/meta.json`. Outputs (DESIGN.md, "Outputs"):
`<out>/<dataset>/{leaderboard.csv,README.md,index.html,samples/*.png,curves/*.png}` and
`<out>/index.html`. Every file is written atomically.
"""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from genbench.io import atomic_file, read_json, write_text
from genbench.report.render import curve_figure, html_page, markdown
from genbench.report.sections import Section, fmt, metric_sections

# Leaderboard column -> field of the flattened record. The required columns come first, in order;
# protocol details follow. A model without a section (capability) gets NaN there.
LEADERBOARD_FIELDS = {
    "dataset": "dataset",
    "model": "model",
    "kind": "kind",
    "accuracy": "classification.accuracy",
    "log_loss": "classification.log_loss",
    "ece": "classification.ece",
    "nll_nats": "likelihood.nll_nats",
    "nll_space": "likelihood.space",
    "nll_estimator": "likelihood.estimator",
    "nll_method": "likelihood.method",
    "bits_per_dim": "likelihood.bits_per_dim",
    "fid": "fid.value",
    "fid_n_generated": "fid.n_generated",
    "precision": "prdc.precision",
    "recall": "prdc.recall",
    "density": "prdc.density",
    "coverage": "prdc.coverage",
    "memorisation": "memorisation.share",
    "cas": "cas.accuracy",
    "anomaly_auroc": "anomaly.auroc_mean",
    "train_seconds": "cost.train_seconds",
    "total_seconds": "cost.total_seconds",
    "linear_probe_accuracy": "linear_probe.accuracy",
    "ece_bins": "classification.ece_bins",
    "nll_levels": "likelihood.levels",
    "nll_samples": "likelihood.samples",
    "fid_features": "fid.features",
    "fid_features_sha256": "fid.features_sha256",
    "fid_n_reference": "fid.n_reference",
    "sample_seconds": "cost.sample_seconds",
    "evaluate_seconds": "cost.evaluate_seconds",
    "anomaly_seconds": "cost.anomaly_seconds",
    "device": "cost.device",
}
TEXT_COLUMNS = {"dataset", "model", "kind", "nll_space", "nll_estimator", "nll_method", "fid_features",
                "fid_features_sha256", "device"}
COUNT_COLUMNS = {"fid_n_generated", "ece_bins", "nll_levels", "nll_samples", "fid_n_reference"}


def load_records(root: str | Path) -> list[dict[str, Any]]:
    """Every `metrics/<dataset>/<model>.json` under `root`, sorted by dataset and model."""
    root = Path(root)
    paths = sorted((root / "metrics").glob("*/*.json"))
    if not paths:
        raise FileNotFoundError(f"no metrics records in {root / 'metrics'}/<dataset>/<model>.json: "
                                "run `dvc repro` first (the evaluate stage writes them)")
    records = []
    for path in paths:
        try:
            record = read_json(path)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): rerun its evaluate stage") from error
        # The path names the record when a field is missing.
        record.setdefault("dataset", path.parent.name)
        record.setdefault("model", path.stem)
        records.append(record)
    return sorted(records, key=lambda r: (r["dataset"], r["model"]))


def collect(root: str | Path) -> pd.DataFrame:
    """All records as one DataFrame, one row per dataset and model, nested fields flattened with dots
    (`classification.accuracy`, `anomaly.auroc_per_class.3`, ...)."""
    return pd.json_normalize(load_records(root))


def leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """The flattened records (see `collect`) as leaderboard columns, one row per model."""
    board = frame.reindex(columns=list(LEADERBOARD_FIELDS.values())).set_axis(list(LEADERBOARD_FIELDS), axis=1)
    for column in board.columns:
        if column in COUNT_COLUMNS:
            board[column] = pd.to_numeric(board[column]).astype("Int64")
        elif column not in TEXT_COLUMNS:
            board[column] = pd.to_numeric(board[column]).astype(float)
    return board.sort_values(["dataset", "model"], kind="stable").reset_index(drop=True)


def best_per_metric(board: pd.DataFrame, fid_sha256: str | None = None) -> list[dict[str, Any]]:
    """The best model per headline metric of one dataset's leaderboard.

    NLLs are ranked within a likelihood space only, and FIDs only among records computed with the
    feature network `fid_sha256` (or, without it, only when all FIDs share one network)."""
    picks = [("accuracy", board, "accuracy", False)]
    for space in sorted(board["nll_space"].dropna().unique()):
        picks.append((f"NLL, {space} space (nats/image)", board[board["nll_space"] == space], "nll_nats", True))
    with_fid = board.dropna(subset=["fid"])
    if fid_sha256 is not None:
        picks.append(("FID", with_fid[with_fid["fid_features_sha256"] == fid_sha256], "fid", True))
    elif with_fid["fid_features_sha256"].nunique(dropna=False) <= 1:
        picks.append(("FID", with_fid, "fid", True))
    picks += [("CAS accuracy", board, "cas", False), ("anomaly AUROC (mean)", board, "anomaly_auroc", False)]
    best = []
    for label, rows, column, ascending in picks:
        rows = rows.dropna(subset=[column])
        if rows.empty:
            continue
        top = rows.sort_values(column, ascending=ascending, kind="stable").iloc[0]
        entry = {"metric": label, "column": column, "model": top["model"], "value": float(top[column])}
        if column == "nll_nats":
            entry["estimator"] = top["nll_estimator"]
        best.append(entry)
    return best


def _read_optional(path: Path) -> dict | None:
    return read_json(path) if path.exists() else None


def _sample_grids(root: Path, out: Path, dataset: str, records: list[dict]) -> Section | None:
    """Copy each model's sample grid next to the page; models that cannot sample have none."""
    section = Section("Samples", notes=["Random samples from each model that can generate, as a torchvision image grid."])
    for record in records:
        model = record["model"]
        grid = root / "samples" / dataset / model / "grid.png"
        info = _read_optional(root / "samples" / dataset / model / "info.json") or {}
        if grid.exists():
            with atomic_file(out / "samples" / f"{model}.png") as tmp:
                shutil.copyfile(grid, tmp)
            section.images.append((model, f"samples/{model}.png"))
        elif info.get("capable"):
            section.warnings.append(f"{model} can sample but {grid.relative_to(root)} is missing: rerun its sample stage.")
    return section if section.images or section.warnings else None


def _figures(root: Path, out: Path, dataset: str, records: list[dict]) -> Section | None:
    """Model-specific figures (latent interpolations, translations, denoising trajectories)."""
    section = Section("Figures", notes=["Figures a model draws for itself (its `figures` hook), from the test split."])
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
    section = Section("Training curves", notes=["Training losses per epoch, as logged by the training loop."])
    for record in records:
        model = record["model"]
        path = root / "curves" / dataset / f"{model}.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        curve = pd.read_csv(path)
        if curve.empty or "epoch" not in curve.columns or len(curve.columns) < 2:
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


def dataset_report(root: Path, out: Path, dataset: str, records: list[dict], board: pd.DataFrame) -> dict[str, Any]:
    """Write one dataset's leaderboard.csv, README.md, index.html and figures; return its summary."""
    meta = _read_optional(root / "data" / dataset / "meta.json")
    evaluator = _read_optional(root / "evaluators" / dataset / "evaluator.json")
    write_text(out / "leaderboard.csv", board.to_csv(index=False))

    sections = metric_sections(records, evaluator)
    sections += [s for s in (_sample_grids(root, out, dataset, records), _figures(root, out, dataset, records),
                             _training_curves(root, out, dataset, records)) if s]

    splits = _splits_text(meta)
    title = f"genbench: {dataset}" + (f" ({splits})" if splits else "")
    description = _describe(dataset, meta)
    write_text(out / "README.md", markdown(title, [
        description,
        "[leaderboard.csv](leaderboard.csv) · [HTML version](index.html) · [all datasets](../index.html)",
    ], sections))
    write_text(out / "index.html", html_page(title, [
        f"<p>{html.escape(description)}</p>",
        '<p><a href="leaderboard.csv">leaderboard.csv</a> · <a href="README.md">Markdown version</a> · '
        '<a href="../index.html">all datasets</a></p>',
    ], sections))
    return {
        "models": [r["model"] for r in records],
        "splits": (meta or {}).get("sizes"),
        "best": best_per_metric(board, (evaluator or {}).get("sha256")),
    }


def _entry_page(datasets: dict[str, dict]) -> str:
    body = []
    for dataset, summary in datasets.items():
        name = html.escape(dataset)
        splits = _splits_text({"sizes": summary["splits"]})
        body.append(f"<h2>{name}</h2>")
        body.append(f"<p>{len(summary['models'])} models" + (f" · {html.escape(splits)}" if splits else "") +
                    f' · <a href="{name}/index.html">report</a> · <a href="{name}/README.md">Markdown</a>'
                    f' · <a href="{name}/leaderboard.csv">leaderboard.csv</a></p>')
        items = []
        for best in summary["best"]:
            estimator = f" ({best['estimator']})" if best.get("estimator") else ""
            items.append(f"<li>best {html.escape(best['metric'])}: {html.escape(best['model'])} "
                         f"{fmt(best['value'])}{html.escape(estimator)}</li>")
        body.append("<ul>" + "".join(items) + "</ul>" if items else "<p>No ranked metrics yet.</p>")
    return html_page("genbench reports", body, [])


def build_report(root: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write every dataset's report under `out_dir` and the entry page `out_dir/index.html`.

    Returns {"out_dir": ..., "datasets": {dataset: {"models", "splits", "best"}}}."""
    root, out_dir = Path(root), Path(out_dir)
    records = load_records(root)
    frame = pd.json_normalize(records)
    datasets = {}
    for dataset in sorted({r["dataset"] for r in records}):
        chosen = [r for r in records if r["dataset"] == dataset]
        board = leaderboard(frame[frame["dataset"] == dataset])
        datasets[dataset] = dataset_report(root, out_dir / dataset, dataset, chosen, board)
    write_text(out_dir / "index.html", _entry_page(datasets))
    return {"out_dir": str(out_dir), "datasets": datasets}

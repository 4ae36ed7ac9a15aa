"""The report's figure sections: comparisons across models (with intervals), sample grids, model
figures and training curves. Each builder writes its images under the report folder and returns a
`Section` (or None when there is nothing to show)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from genbench.io import read_json, write_text
from genbench.params import Paths
from genbench.report.figures import curve_epochs, curve_figure, interval_plot, interval_scatter, labelled_grid
from genbench.report.records import RECORD_STAGE
from genbench.report.sections import STAR, Section

# The comparison plots each report writes as reports/<dataset>/plots/<name>.csv (model, mean, low,
# high, ...) for `dvc plots show`: name -> (axis title, better direction).
COMPARISON_PLOTS = {
    "accuracy": ("test accuracy (mean over seeds)", "higher"),
    "nll_binary": ("binary-space NLL, nats/image (mean over seeds)", "lower"),
    "fid": ("FID, evaluator features (mean over seeds)", "lower"),
    "anomaly_auroc": ("one-class AUROC, mean over normal classes (mean over seeds)", "higher"),
}

# Comparison plot -> (leaderboard column, rows it ranks, higher is better, axis label)
COMPARISONS = {
    "accuracy": ("accuracy", None, True, "test accuracy"),
    "nll_binary": ("nll_nats", "binary", False, "NLL of the binarised test images (nats/image)"),
    "fid": ("fid", None, False, "FID on the evaluator's bounded features"),
    "anomaly_auroc": ("anomaly_auroc", None, True, "one-class AUROC, mean over normal classes"),
}
assert set(COMPARISONS) == set(COMPARISON_PLOTS)


def _rows(board: pd.DataFrame, column: str, space: str | None) -> pd.DataFrame:
    rows = board[board[column].notna()]
    if space is not None:
        rows = rows[rows["nll_group"] == space]  # Parzen-window estimates belong to no group
    return pd.DataFrame({
        "model": rows["model"], "kind": rows["kind"].fillna("generative"), "mean": rows[column].astype(float),
        "low": rows[f"{column}_ci_low"].astype(float), "high": rows[f"{column}_ci_high"].astype(float),
        "tied": rows[f"{column}_tied_best"].fillna(False).astype(bool),
    }).reset_index(drop=True)


def comparisons(out: Path, dataset: str, board: pd.DataFrame, floor: dict | None) -> Section | None:
    """Bars with 95% intervals per headline metric (colour: generative / discriminative / anomaly), and
    FID against NLL and precision against recall; also reports/<dataset>/plots/<name>.csv for DVC."""
    section = Section("At a glance", notes=[
        f"Dots: the mean over seeds; lines: its 95% interval (the leaderboard's); filled dots with {STAR}: the best "
        "mean and every model the Holm-corrected paired comparison cannot separate from it (tied; an interval "
        "that overlaps is not enough). Colour: the model's kind, so the accuracy chart "
        "compares generative classifiers (Bayes' rule on p(x | y) p(y)) with discriminative ones."])
    for name, (column, space, higher, label) in COMPARISONS.items():
        rows = _rows(board, column, space)
        csv = rows.rename(columns={"tied": "tied_best"})
        write_text(out / "plots" / f"{name}.csv", csv.to_csv(index=False))
        if len(rows) < 2:
            continue
        reference = None
        if name == "fid" and floor and floor.get("value") is not None:
            reference = {"value": floor["value"], "low": floor.get("low"), "high": floor.get("high"),
                         "label": f"real data {floor['value']:.1f}"}
        title = f"{dataset}: {label}"
        interval_plot(rows, title=title, xlabel=label, higher=higher, reference=reference,
                      path=out / "figures" / f"compare-{name}.svg")
        caption = f"{label}, per model, 95% intervals" + (
            " (binary space only: NLLs of other spaces are not comparable with these)" if space else "") + (
            "; dashed line and band: two real-data samples of the same size (the floor)" if reference else "")
        section.images.append((caption, f"figures/compare-{name}.svg"))

    both = board[board["fid"].notna() & board["nll_nats"].notna() & (board["nll_space"] == "binary")]
    if len(both) >= 2:
        interval_scatter(_pair(both, "fid", "nll_nats"), x="fid", y="nll_nats", x_log=True,
                         xlabel="FID on the evaluator's features (log scale, lower is better)",
                         ylabel="binary-space NLL (nats/image, lower is better)",
                         title=f"{dataset}: sample quality against likelihood", path=out / "figures" / "fid-vs-nll.svg")
        section.images.append(("FID against binary-space NLL, for the models that have both (95% intervals on both axes)",
                               "figures/fid-vs-nll.svg"))
    pr = board[board["precision"].notna() & board["recall"].notna()]
    if len(pr) >= 2:
        interval_scatter(_pair(pr, "precision", "recall"), x="precision", y="recall",
                         xlabel="precision (Kynkäänniemi et al. 2019; higher: samples look real)",
                         ylabel="recall (higher: samples cover the data)",
                         title=f"{dataset}: precision against recall", path=out / "figures" / "precision-vs-recall.svg")
        section.images.append(("Precision against recall in the evaluator's feature space (95% intervals)",
                               "figures/precision-vs-recall.svg"))
    return section if section.images else None


def _pair(board: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    out = pd.DataFrame({"model": board["model"], "kind": board["kind"].fillna("generative")})
    for c in (x, y):
        out[c] = board[c].astype(float)
        out[f"{c}_low"] = board[f"{c}_ci_low"].astype(float)
        out[f"{c}_high"] = board[f"{c}_ci_high"].astype(float)
    return out.reset_index(drop=True)


def _info(root: Path, dataset: str, model: str) -> dict:
    path = Paths(root).samples(dataset, model) / "info.json"
    return read_json(path) if path.exists() else {}


def sample_grids(root: Path, out: Path, dataset: str, records: list[dict], image_shape) -> Section | None:
    """Each sampling model's grid, rows and columns labelled (classes for class-conditional models)."""
    section = Section("Samples", notes=[
        "Random samples from each model that can generate, from the model trained with the first seed, "
        "shown pixel for pixel (no smoothing). Class-conditional models: one row per class, labelled."])
    binary = [r["model"] for r in records if r.get("fid") and (r.get("likelihood") or {}).get("space") == "binary"]
    if binary:
        section.notes.append(
            f"{', '.join(binary)} model binarised images: their samples are binary or Bernoulli means, while the FID "
            "reference images have all their grey levels, so part of their FID is that mismatch, not only sample quality.")
    for record in records:
        model = record["model"]
        info = _info(root, dataset, model)
        grid = Paths(root).samples(dataset, model) / "grid.png"
        if grid.exists():
            layout = info.get("grid") or {"padding": 1}
            conditional = bool(info.get("conditional"))
            target = out / "samples" / f"{model}.svg"
            labelled_grid(grid, layout, target, image_shape=image_shape, title=f"{model}: samples"
                          + (" (class-conditional)" if conditional else ""),
                          xlabel="sample within its class" if conditional else "sample (column)",
                          ylabel="class y (one row each)" if conditional else "row")
            section.images.append((f"{model}" + (" — class-conditional, one row per class" if conditional else ""),
                                   f"samples/{model}.svg"))
        elif info.get("capable"):
            stage = RECORD_STAGE.format(dataset=dataset, model=model)
            section.warnings.append(f"{model} can sample but {grid.relative_to(root)} is missing: rerun its stage, "
                                    f"`dvc repro {stage}`.")
    return section if section.images or section.warnings else None


FIGURE_AXES = {  # figure name -> (x label, y label) for the grid
    "interpolation": ("interpolation weight t between two test images' codes", "image pair"),
    "reconstructions": ("test image", "input / reconstruction"),
    "translation": ("test image", "domain"),
    "denoising_trajectory": ("reverse diffusion step", "sample"),
}


def model_figures(root: Path, out: Path, dataset: str, records: list[dict], image_shape) -> Section | None:
    """Figures a model draws for itself (interpolations, translations, trajectories), labelled."""
    section = Section("Model figures", notes=["Figures a model draws for itself (its `figures` hook), from the test "
                                              "split, by the model trained with the first seed; pixel for pixel."])
    for record in records:
        model = record["model"]
        info = _info(root, dataset, model)
        layouts = info.get("figure_layouts") or {}
        for name, filename in (info.get("figures") or {}).items():
            source = Paths(root).samples(dataset, model) / filename
            if not source.exists():
                continue
            layout = layouts.get(name) or {"padding": 1}
            xlabel, ylabel = FIGURE_AXES.get(name, ("column", "row"))
            target = out / "figures" / f"{model}-{name}.svg"
            labelled_grid(source, layout, target, image_shape=image_shape, xlabel=xlabel, ylabel=ylabel,
                          title=f"{model}: {name.replace('_', ' ')}")
            section.images.append((f"{model}: {name.replace('_', ' ')}", f"figures/{model}-{name}.svg"))
    return section if section.images else None


def training_curves(root: Path, out: Path, dataset: str, records: list[dict]) -> Section | None:
    """One figure per model that logged two or more epochs: each quantity on its own labelled axis."""
    section = Section("Training curves", notes=[
        "Per epoch, as logged by the shared training loop: solid lines on the training batches, dashed lines on "
        "held-out validation images (the first 1000 of the validation split, after each epoch, never trained on). "
        "Line: mean over seeds; band: the seeds' minimum to maximum."])
    short, no_val = [], []
    for record in records:
        model = record["model"]
        path = Paths(root).curve(dataset, model)
        if not path.exists() or path.stat().st_size == 0:
            continue
        curve = pd.read_csv(path)
        if curve.empty or not set(curve.columns) - {"epoch", "seed", "layer"}:
            continue
        if curve_epochs(curve) < 2:
            short.append(f"{model} ({curve_epochs(curve)} logged step)")
            continue
        if not any(c.startswith("val_") for c in curve.columns):
            no_val.append(model)
        curve_figure(curve, model, out / "curves" / f"{model}.svg")
        section.images.append((model, f"curves/{model}.svg"))
    if short:
        section.notes.append("Not drawn, with fewer than two logged epochs: " + ", ".join(short) + ".")
    if no_val:
        section.notes.append(f"No validation line for {', '.join(no_val)}: their fit logs none (an adversarial "
                             "model's losses score a game against the current discriminator, which held-out images "
                             "cannot check; scikit-learn's MLP reports its training loss only).")
    return section if section.images else None

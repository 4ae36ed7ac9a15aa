"""The report's figures, with matplotlib: comparison bars and scatters with 95% intervals, training
curves with their validation counterparts, and labelled image grids upscaled by whole pixels.

Plots are SVG with their text kept as text, and every axis label carries an id (`x-axis-label-<i>`,
`y-axis-label-<i>`), so a reader (and tests/test_report_browser.py) can check that each figure says
what its axes are. `save` refuses a figure with an unlabelled axis. `Figure` (not pyplot) renders
without a display and keeps no global state.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from genbench.io import atomic_file

rcParams["svg.fonttype"] = "none"  # text stays text in the SVG: searchable, and checkable by tests
rcParams["svg.hashsalt"] = "genbench"  # the same figure gives the same bytes (ids are hashed with this salt)
rcParams["font.size"] = 10

KIND_COLORS = {"generative": "#1f77b4", "discriminative": "#ff7f0e", "anomaly": "#2ca02c"}

# Training-curve column -> (y-axis label, quantity group). Columns of one group share a panel.
CURVE_LABELS = {
    "loss": ("training objective", "loss"),
    "accuracy": ("accuracy (fraction correct)", "accuracy"),
    "nll": ("conditional NLL (nats/image)", "loss"),
    "reconstruction": ("reconstruction NLL (nats/image)", "loss"),
    "kl": ("KL(q(z|x) || p(z)) (nats/image)", "kl"),
    "free_energy_gap": ("F(data) − F(model samples) (nats)", "gap"),
    "energy_gap": ("log p̃(model samples) − log p̃(data) (nats)", "gap"),
    "reconstruction_bce": ("reconstruction BCE (nats/image)", "loss"),
    "reconstruction_sq_error": ("reconstruction squared error (standardised units)", "loss"),
    "neg_pseudo_log_likelihood": ("negative pseudo-log-likelihood (nats/image)", "loss"),
    "neg_lower_bound": ("negative EM lower bound (nats/image)", "loss"),
    "d_loss": ("discriminator loss (BCE)", "adversarial"),
    "g_loss": ("generator loss", "adversarial"),
    "d_real": ("D(x) on real images", "discriminator"),
    "d_fake": ("D(G(z)) on generated images", "discriminator"),
    "cycle": ("cycle-consistency L1", "cycle"),
    "identity": ("identity L1", "cycle"),
    "g_adversarial": ("generator adversarial loss", "adversarial"),
}
# The objective a model's `loss` column is, where a reader needs more than "training objective".
MODEL_LOSS = {
    "vae": "negative ELBO (nats/image)", "autoencoder": "reconstruction error (per image)",
    "cnn": "cross-entropy (nats)", "crf": "penalised conditional NLL (nats)", "ddpm": "L_simple (noise MSE)",
    "mlp": "cross-entropy (nats)",
}
# A panel holding several columns of one group: one axis label for all of them.
GROUP_YLABELS = {"discriminator": "mean discriminator output D(·)", "adversarial": "adversarial losses (BCE, nats)",
                 "cycle": "L1 error (pixel units)"}
GROUP_TITLES = {"loss": "objective", "accuracy": "accuracy", "kl": "KL term", "gap": "free-energy gap",
                "adversarial": "adversarial losses", "discriminator": "discriminator outputs", "cycle": "cycle losses"}


def label_axes(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def save(fig: Figure, path: Path, format: str = "svg", dpi: int = 100) -> None:
    """Write `fig` atomically, after checking that every visible axes has both axis labels."""
    for i, ax in enumerate(a for a in fig.axes if a.get_visible()):
        if not ax.get_xlabel().strip() or not ax.get_ylabel().strip():
            raise ValueError(f"{path.name}: axes {i} ('{ax.get_title()}') lacks an axis label")
        ax.xaxis.label.set_gid(f"x-axis-label-{i}")
        ax.yaxis.label.set_gid(f"y-axis-label-{i}")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=format, dpi=dpi, metadata={"Date": None} if format == "svg" else None)


# --- comparisons -----------------------------------------------------------------------------------


def _kind_legend(fig: Figure, kinds: list[str], extra: list = ()) -> None:
    handles = [Line2D([], [], marker="o", linestyle="", color=KIND_COLORS.get(k, "#7f7f7f"), label=k) for k in kinds]
    fig.legend(handles=[*handles, *extra], loc="outside lower center", ncols=len(handles) + len(extra), fontsize=8,
               frameon=False)


def interval_plot(rows: pd.DataFrame, *, title: str, xlabel: str, higher: bool, reference: dict | None = None,
                  path: Path) -> None:
    """One row per model (columns model, kind, mean, low, high, tied), best first: the mean as a dot and
    its 95% interval as a line. Tied-best models (the paired verdict): filled dots and a ★;
    the others hollow. `reference`: {"value", "low", "high", "label"}, drawn as a dashed line and band."""
    rows = rows.sort_values("mean", ascending=not higher, kind="stable").reset_index(drop=True)
    fig = Figure(figsize=(8.5, 1.2 + 0.26 * len(rows)), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    for yi, row in zip(y, rows.itertuples()):
        color = KIND_COLORS.get(row.kind, "#7f7f7f")
        low = row.low if pd.notna(row.low) else row.mean
        high = row.high if pd.notna(row.high) else row.mean
        ax.plot([low, high], [yi, yi], color=color, linewidth=2.2, solid_capstyle="butt")
        ax.plot(row.mean, yi, "o", markersize=6, color=color, markerfacecolor=color if row.tied else "white")
    ax.set_yticks(y, [f"{m} ★" if t else m for m, t in zip(rows["model"], rows["tied"])], fontsize=8)
    extra = []
    if reference is not None and reference.get("value") is not None:
        ax.axvline(reference["value"], color="black", linestyle="--", linewidth=1)
        if reference.get("low") is not None and reference.get("high") is not None:
            ax.axvspan(reference["low"], reference["high"], color="black", alpha=0.08, linewidth=0)
        extra.append(Line2D([], [], color="black", linestyle="--", label=reference["label"]))
    if len(rows) > 1 and rows["mean"].min() > 0 and rows["high"].max() / max(rows["low"].min(), 1e-12) > 50:
        ax.set_xscale("log")  # FIDs from 10 to 5000: a linear axis hides every difference among the good ones
    best_of_tied = [m for m, t in zip(rows["model"], rows["tied"]) if t]
    extra.append(Line2D([], [], marker="o", linestyle="", color="#555", label=f"★ filled: tied best ({len(best_of_tied)})"))
    _kind_legend(fig, [k for k in KIND_COLORS if k in set(rows["kind"])], extra)
    label_axes(ax, xlabel + f" ({'higher' if higher else 'lower'} is better" +
               (", log scale)" if ax.get_xscale() == "log" else ")"), "model")
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3, which="both")
    save(fig, path)


def interval_scatter(rows: pd.DataFrame, *, x: str, y: str, xlabel: str, ylabel: str, title: str, path: Path,
                     x_log: bool = False) -> None:
    """One point per model at (x mean, y mean) with 95% interval whiskers on both axes, named."""
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    ax = fig.subplots()
    for kind, group in rows.groupby("kind", sort=False):
        xerr = [(group[x] - group[f"{x}_low"].fillna(group[x])).clip(lower=0),
                (group[f"{x}_high"].fillna(group[x]) - group[x]).clip(lower=0)]
        yerr = [(group[y] - group[f"{y}_low"].fillna(group[y])).clip(lower=0),
                (group[f"{y}_high"].fillna(group[y]) - group[y]).clip(lower=0)]
        ax.errorbar(group[x], group[y], xerr=xerr, yerr=yerr, fmt="o", color=KIND_COLORS.get(kind, "#7f7f7f"),
                    ecolor="#bbb", elinewidth=1, capsize=2)
        for _, row in group.iterrows():
            ax.annotate(row["model"], (row[x], row[y]), textcoords="offset points", xytext=(4, 3), fontsize=8)
    if x_log:
        ax.set_xscale("log")
    label_axes(ax, xlabel, ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    _kind_legend(fig, [k for k in KIND_COLORS if k in set(rows["kind"])])
    save(fig, path)


# --- training curves -------------------------------------------------------------------------------


def curve_panels(curve: pd.DataFrame, model: str) -> list[list[str]]:
    """The training columns of `curve` grouped into panels (train column names; `val_<name>` go with them)."""
    names = [c for c in curve.columns if c not in ("epoch", "seed", "layer") and not c.startswith("val_")]
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(CURVE_LABELS.get(name, (name, name))[1], []).append(name)
    return list(groups.values())


def _ylabel(names: list[str], model: str) -> str:
    group = CURVE_LABELS.get(names[0], ("", ""))[1]
    if len(names) > 1 and group in GROUP_YLABELS:
        return GROUP_YLABELS[group]
    labels = [MODEL_LOSS.get(model, CURVE_LABELS["loss"][0]) if n == "loss" else CURVE_LABELS.get(n, (n,))[0]
              for n in names]
    if len(labels) == 1:
        return labels[0]
    units = {label[label.rfind("("):] for label in labels if label.endswith(")")}
    if len(units) == 1 and all(label.endswith(")") for label in labels):  # one unit: say it once
        unit = units.pop()
        return " / ".join(label[: label.rfind("(")].strip() for label in labels) + f" {unit}"
    return " / ".join(labels)


def curve_figure(curve: pd.DataFrame, model: str, path: Path) -> None:
    """One panel per quantity (objective, accuracy, KL, ...) against epoch: training (solid) and held-out
    validation (dashed, where the model logs it); with several seeds the line is their mean and the band
    spans their min to max. A DBN's layers are drawn as separate lines (each layer's epochs from 1)."""
    panels = curve_panels(curve, model)
    layers = sorted(curve["layer"].dropna().unique()) if "layer" in curve.columns else [None]
    n_seeds = curve["seed"].nunique() if "seed" in curve.columns else 1
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(max(4.2 * cols, 5.0) + 0.4, 3.0 * rows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    color = 0
    for ax, names in zip(axes, panels):
        for name in names:
            for layer in layers:
                part = curve if layer is None else curve[curve["layer"] == layer]
                suffix = "" if layer is None else f", layer {int(layer)}"
                for column, style, what in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
                    if column not in part.columns or part[column].isna().all():
                        continue
                    stats = part.groupby("epoch")[column].agg(["mean", "min", "max"])
                    c = f"C{color % 10}"
                    label = (f"{name.replace('_', ' ')}, " if len(names) > 1 else "") + what + suffix
                    ax.plot(stats.index, stats["mean"], style, color=c, label=label,
                            marker="." if len(stats) < 15 else None)
                    if n_seeds > 1:
                        ax.fill_between(stats.index, stats["min"], stats["max"], color=c, alpha=0.15, linewidth=0)
                color += 1
        if CURVE_LABELS.get(names[0], ("", ""))[1] == "accuracy":
            ax.set_ylim(top=1.0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        label_axes(ax, "epoch" + (" (of each layer)" if layers != [None] else ""), _ylabel(names, model))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.8)
        ax.set_title(GROUP_TITLES.get(CURVE_LABELS.get(names[0], ("", names[0]))[1], names[0]), fontsize=9)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    seeds = f"{n_seeds} seeds: mean, band min–max" if n_seeds > 1 else "one seed"
    fig.suptitle(f"{model} ({seeds})", fontsize=10)
    save(fig, path)


def curve_epochs(curve: pd.DataFrame) -> int:
    """Epochs (rows per seed and layer) a curve has; fewer than 2 draws no figure."""
    keys = [k for k in ("seed", "layer") if k in curve.columns]
    return int(curve.groupby(keys).size().max()) if keys and len(curve) else len(curve)


# --- image grids -------------------------------------------------------------------------------------


def labelled_grid(source: Path, layout: dict, path: Path, *, xlabel: str, ylabel: str, title: str,
                  image_shape: tuple[int, ...], width_px: int = 480) -> None:
    """The torchvision grid `source` (layout: per_row, n, padding, row_labels?, column_labels?) drawn
    with its rows and columns labelled, at a whole number of screen pixels per image pixel, unsmoothed."""
    from PIL import Image

    image = np.asarray(Image.open(source).convert("RGB"))
    height, width = int(image_shape[-2]), int(image_shape[-1])
    pad = int(layout.get("padding", 1))
    # a layout without counts (an older info.json): read them off the grid's size
    per_row = int(layout.get("per_row") or (image.shape[1] - pad) // (width + pad))
    rows = math.ceil(int(layout["n"]) / per_row) if layout.get("n") else (image.shape[0] - pad) // (height + pad)
    scale = max(1, min(8, round(width_px / image.shape[1])))  # whole screen pixels per image pixel
    row_labels, column_labels = layout.get("row_labels") or [], layout.get("column_labels") or []
    margin_left = 1.6 if row_labels else 0.6
    dpi = 100
    fig = Figure(figsize=(scale * image.shape[1] / dpi + margin_left + 0.2, scale * image.shape[0] / dpi + 1.1),
                 dpi=dpi, layout="constrained")
    ax = fig.subplots()
    # "none": the SVG embeds the pixels as they are, styled image-rendering: pixelated (no smoothing)
    ax.imshow(image, interpolation="none")
    centre = lambda i, size: pad + i * (size + pad) + size / 2 - 0.5  # noqa: E731  (pixel centres)
    ax.set_yticks([centre(i, height) for i in range(len(row_labels))] if row_labels else [],
                  row_labels if row_labels else [], fontsize=8)
    ax.set_xticks([centre(i, width) for i in range(len(column_labels))] if column_labels else [],
                  column_labels if column_labels else [], fontsize=7, rotation=30 if len(column_labels) > 6 else 0)
    if not row_labels:
        ax.set_yticks([centre(i, height) for i in range(rows)], [str(i + 1) for i in range(rows)], fontsize=7)
    if not column_labels:
        ax.set_xticks([centre(i, width) for i in range(per_row)], [str(i + 1) for i in range(per_row)], fontsize=7)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    label_axes(ax, xlabel, ylabel)
    ax.set_title(title, fontsize=9)
    save(fig, path, format="svg", dpi=dpi)


# --- studies: accuracy against training-set size ----------------------------------------------------


def line_panels(panels: list[dict], path: Path, *, xlabel: str, ylabel: str, title: str, sharey: bool = True) -> None:
    """Side-by-side panels {"title", "lines", "ylabel"?, "zero_line"?}, each line {"label", "x", "mean", "low",
    "high", "style" ("-" or "--"), "color"}: the mean with markers, its 95% interval as a band; x on a log
    axis ticked at the sizes themselves. `zero_line`: a black line at y = 0 (for differences)."""
    cols = len(panels)
    fig = Figure(figsize=(min(4.6 * cols, 13.5), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, cols, sharey=sharey, squeeze=False)).ravel()
    for ax, panel in zip(axes, panels):
        sizes = set()
        for line in panel["lines"]:
            x = np.asarray(line["x"], dtype=float)
            sizes |= set(line["x"])
            ax.plot(x, line["mean"], line.get("style", "-"), color=line["color"], marker="o", markersize=3.5,
                    linewidth=1.4, label=line["label"])
            if line.get("low") is not None:
                ax.fill_between(x, line["low"], line["high"], color=line["color"], alpha=0.12, linewidth=0)
        if panel.get("zero_line"):
            ax.axhline(0.0, color="black", linewidth=0.9)
        ax.set_xscale("log")
        ax.set_xticks(sorted(sizes), [str(int(n)) for n in sorted(sizes)], fontsize=7)
        ax.minorticks_off()
        label_axes(ax, xlabel, panel.get("ylabel") or ylabel)
        ax.set_title(panel["title"], fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, framealpha=0.85, loc="best")
    fig.suptitle(title, fontsize=10)
    save(fig, path)

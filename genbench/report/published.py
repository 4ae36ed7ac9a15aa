"""Published numbers next to genbench's, per dataset, with the protocol difference stated on each row.

Plain data: one `Published` per number, naming the genbench model and leaderboard column it is set
against (or no model, for a published method genbench does not implement). A number is shown, never
ranked: the protocols differ, and each row says how.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from genbench.report.sections import Est, Section, column_decimals, fmt_fixed


@dataclass(frozen=True)
class Published:
    metric: str  # leaderboard column
    value: str  # as published ("0.897", "~84.8", "86.8-88.7")
    method: str  # the published method, in the paper's words
    source: str
    model: str | None  # the genbench model it is set against, None when genbench has no counterpart
    protocol: str  # how the published protocol differs from genbench's
    settings: dict | None = None  # published hyperparameters genbench can match, by genbench's names


_XIAO = ("Xiao, Rasul & Vollgraf 2017, Table 3 (benchmark on the full 60,000/10,000 split; best of their "
         "scikit-learn hyperparameter grid)")
_XIAO_PROTOCOL = "genbench: params.yaml's hyperparameters (no grid search), mean over seeds"
_BINARY = ("published: stochastically binarised MNIST, 60,000 training / 10,000 test images; genbench: its train "
           "split without the validation images, a fixed stochastic binarisation of its test split")
_RUFF = ("Ruff et al. 2018, Table 1, mean over the 10 one-class tasks (normal class vs the rest)")
_RUFF_PROTOCOL = ("same one-class protocol; the published models see globally contrast-normalised, min-max scaled "
                  "images, genbench's raw [0, 1] images of its train split")

PUBLISHED: dict[str, list[Published]] = {
    "fashion_mnist": [
        Published("accuracy", "0.842", "LogisticRegression", _XIAO, "logistic_regression", _XIAO_PROTOCOL),
        Published("accuracy", "0.897", "SVC, RBF kernel, C=10", _XIAO, "svm", _XIAO_PROTOCOL, {"C": 10.0}),
        Published("accuracy", "0.873", "RandomForestClassifier", _XIAO, "random_forest", _XIAO_PROTOCOL),
        Published("accuracy", "0.854", "KNeighborsClassifier, k=5, p=1", _XIAO, "knn", _XIAO_PROTOCOL,
                  {"n_neighbors": 5, "p": 1}),
        Published("accuracy", "0.511", "GaussianNB", _XIAO, "gaussian_nb", _XIAO_PROTOCOL),
        Published("accuracy", "0.871", "MLPClassifier", _XIAO, "mlp", _XIAO_PROTOCOL),
    ],
    "mnist": [
        Published("nll_nats", "86.34", "RBM, 500 hidden units, CD-25, AIS estimate",
                  "Salakhutdinov & Murray 2008, Table 2", "rbm", _BINARY),
        Published("nll_nats", "~84.55", "DBN (approximate)", "Salakhutdinov & Murray 2008", "dbn",
                  _BINARY + "; genbench's DBN number is the variational lower bound"),
        Published("nll_nats", "86.8-88.7", "VAE, importance-sampled estimate (architecture-dependent)",
                  "Kingma & Welling 2014; Burda et al. 2016, Table 1", "vae", _BINARY),
        Published("nll_nats", "~84.8", "IWAE, k=50, two stochastic layers", "Burda et al. 2016, Table 1", None,
                  _BINARY + "; genbench trains a VAE (its IWAE-k bound is an evaluation estimate only)"),
        Published("anomaly_auroc", "0.869", "KDE", _RUFF, None, _RUFF_PROTOCOL),
        Published("anomaly_auroc", "0.913", "AnoGAN", _RUFF, None, _RUFF_PROTOCOL),
        Published("anomaly_auroc", "0.948", "one-class Deep SVDD", _RUFF, None, _RUFF_PROTOCOL),
    ],
    "cifar10": [
        Published("anomaly_auroc", "0.649", "KDE", _RUFF, None, _RUFF_PROTOCOL),
        Published("anomaly_auroc", "0.617", "AnoGAN", _RUFF, None, _RUFF_PROTOCOL),
        Published("anomaly_auroc", "0.648", "one-class Deep SVDD", _RUFF, None, _RUFF_PROTOCOL),
    ],
}

METRIC_NAMES = {"accuracy": "test accuracy", "nll_nats": "test NLL (nats/image, binary space)",
                "anomaly_auroc": "one-class AUROC (mean over classes)"}


def _genbench_cell(board: pd.DataFrame, model: str | None, metric: str) -> str:
    if model is None:
        return "no counterpart in genbench"
    if model not in board.index or pd.isna(board.loc[model, metric]):
        return f"{model}: not run"
    row = board.loc[model]
    if metric == "nll_nats" and row.get("nll_space") != "binary":
        return f"{model}: not in the binary space"
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    estimate = Est(float(row[metric]), float(low) if pd.notna(low) else None, float(high) if pd.notna(high) else None)
    width = [(estimate.high - estimate.low) / 2] if estimate.low is not None and estimate.high is not None else []
    return f"{model}: {fmt_fixed(estimate, column_decimals([estimate.mean], width))}"


def _protocol_cell(entry: Published, sizes: dict | None, hyperparameters: dict) -> str:
    """The entry's protocol difference, with the split sizes genbench ran on and, for the settings the
    published method fixed, whether genbench's model used the same ones (and how to make it)."""
    parts = [entry.protocol]
    if sizes and entry.model is not None:
        parts.append(f"genbench trained on {sizes.get('train', '?')} images (its train split; validation held "
                     f"out) and tested on {sizes.get('test', '?')}")
    used = hyperparameters.get(entry.model) or {}
    for name, value in (entry.settings or {}).items():
        if name not in used:
            continue
        if used[name] == value:
            parts.append(f"same {name}={value}")
        else:
            parts.append(f"genbench's {name}={used[name]}, published {value}: set models.{entry.model}.{name}: "
                         f"{value} (or under overrides) for the same setting")
    return "; ".join(parts)


def published_section(dataset: str, board: pd.DataFrame, *, sizes: dict | None = None,
                      hyperparameters: dict[str, dict] | None = None) -> Section | None:
    """The 'Published numbers' section of a dataset's report, from its leaderboard, the dataset's split
    sizes ({"train": n, ...}) and each model's hyperparameters as run; None when the dataset has no entries."""
    entries = PUBLISHED.get(dataset) or []
    if not entries:
        return None
    board = board.set_index("model") if "model" in board.columns else board
    rows = [{"metric": METRIC_NAMES.get(e.metric, e.metric), "published": e.value, "method": e.method,
             "source": e.source, "genbench (mean [95% interval])": _genbench_cell(board, e.model, e.metric),
             "protocol difference": _protocol_cell(e, sizes, hyperparameters or {})} for e in entries]
    return Section("Published numbers", table=pd.DataFrame(rows), notes=[
        "Numbers from the literature on the same dataset, set beside genbench's where genbench runs a counterpart. "
        "They are not ranked together: each row states how the published protocol differs. genbench's FID uses its "
        "own evaluator network's features, not Inception-v3, so no published FID is comparable and none is listed."])

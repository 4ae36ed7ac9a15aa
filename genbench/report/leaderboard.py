"""Records -> one dataset's leaderboard (means, 95% intervals, tied-best flags), per-seed table, best lines.

A ranked column never mixes protocols: NLLs are tied within one likelihood space only, and FID,
precision/recall/density/coverage and CAS are kept only for records computed with the reference
feature network (the evaluator's weights hash); any other record gets empty cells there.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pandas as pd

from genbench.comparisons import likelihood_group
from genbench.report.records import interval, is_number, lookup
from genbench.report.sections import Est, column_decimals, fmt_fixed

# Leaderboard column -> dotted path in a record's summary (or top level). The columns DESIGN.md
# requires come first, in order; protocol details follow.
FIELDS = {
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
    "kid": "kid.value",
    "fid_pixels": "fid_pixels.value",
    "kid_pixels": "kid_pixels.value",
    "fid_n_generated": "fid.n_generated",
    "precision": "prdc.precision",
    "recall": "prdc.recall",
    "density": "prdc.density",
    "coverage": "prdc.coverage",
    "copying_ct": "copying.ct",
    "cas": "cas.accuracy",
    "cas_real": "cas.real_accuracy",
    "anomaly_auroc": "anomaly.auroc_mean",
    "train_seconds": "cost.fit_seconds",  # DESIGN.md's name for the fit time (per seed, mean over seeds)
    "total_seconds": "cost.total_seconds",
    "linear_probe_accuracy": "linear_probe.accuracy",
    "val_loss_still_falling": "convergence.still_falling",  # genbench.report.convergence
    "ece_bins": "classification.ece_bins",
    "nll_levels": "likelihood.levels",
    "nll_samples": "likelihood.samples",
    "fid_features": "fid.features",
    "fid_features_sha256": "fid.features_sha256",
    "fid_n_reference": "fid.n_reference",
    "evaluate_seconds": "cost.evaluate_seconds",
    "anomaly_seconds": "cost.anomaly_seconds",
    "device": "cost.device",
    "n_seeds": "n_seeds",
    "stage_seconds": "stage_seconds",
    "workers": "workers",
    "nll_group": "likelihood.group",  # the group NLLs are ranked in: the space; empty for Parzen-window estimates
}
TEXT_COLUMNS = {"dataset", "model", "kind", "nll_space", "nll_group", "nll_estimator", "nll_method", "fid_features",
                "fid_features_sha256", "device", "val_loss_still_falling"}
COUNT_COLUMNS = {"fid_n_generated", "ece_bins", "nll_levels", "nll_samples", "fid_n_reference", "n_seeds", "workers"}
# Numeric metrics: each gets <column>_ci_low, _ci_high, _n_seeds, _ci_method (empty without an interval).
METRIC_COLUMNS = ["accuracy", "log_loss", "ece", "nll_nats", "bits_per_dim", "fid", "kid", "fid_pixels", "kid_pixels",
                  "precision", "recall", "density", "coverage", "copying_ct", "cas", "cas_real", "anomaly_auroc",
                  "linear_probe_accuracy", "train_seconds",
                  "evaluate_seconds", "anomaly_seconds", "total_seconds"]
# Ranked metrics -> higher is better; each gets <column>_tied_best.
RANKED = {"accuracy": True, "log_loss": False, "ece": False, "nll_nats": False, "bits_per_dim": False, "fid": False,
          "kid": False, "fid_pixels": False, "kid_pixels": False, "precision": True, "recall": True, "density": True, "coverage": True, "cas": True, "anomaly_auroc": True,
          "linear_probe_accuracy": True}
PER_SPACE = {"nll_nats", "bits_per_dim"}  # ranked within one likelihood group (genbench.comparisons.likelihood_group)
FEATURE_COLUMNS = ["fid", "kid", "fid_pixels", "kid_pixels", "fid_n_generated", "fid_n_reference", "precision", "recall",
                   "density", "coverage", "copying_ct", "cas", "cas_real"]
# Sample metrics that the compare stage computes from the stored samples (genbench.comparisons): the report
# shows its values, in its feature spaces, instead of the model stage's.
COMPARED_VALUES = {"fid", "kid", "fid_pixels", "kid_pixels", "precision", "recall", "density", "coverage"}
CI_SUFFIXES = ("ci_low", "ci_high", "n_seeds", "ci_method")
# Per ranked column with a paired verdict (results/<dataset>/comparisons.json, genbench.comparisons): the paired
# difference from the best model with its 95% interval, and the Holm-corrected p-value of "no difference".
VERSUS_SUFFIXES = ("vs_best", "vs_best_low", "vs_best_high", "p_holm")
TIE_WORDS = "the Holm-corrected paired comparison cannot separate them"


def columns() -> list[str]:
    out = list(FIELDS)
    for column in METRIC_COLUMNS:
        out += [f"{column}_{suffix}" for suffix in CI_SUFFIXES]
        if column in RANKED:
            out += [f"{column}_tied_best", *(f"{column}_{suffix}" for suffix in VERSUS_SUFFIXES)]
    return out


def _verdict(comparisons: dict | None, column: str, record: dict) -> dict | None:
    """The paired verdict of `record`'s model on `column` (its likelihood space's group for NLLs), or None."""
    metric = ((comparisons or {}).get("metrics") or {}).get(column)
    if not metric:
        return None
    group = likelihood_group(record.get("likelihood")) if column in PER_SPACE else "all"
    return ((metric.get("groups") or {}).get(str(group)) or {}).get("models", {}).get(record["model"])


def apply_verdicts(records: list[dict], comparisons: dict | None) -> list[dict]:
    """Records whose ranked metrics carry the paired bootstrap's percentile interval (seeds and test images, or
    generated samples, drawn together) instead of the summary's, so that every table shows the interval its
    verdict was reached with, never a symmetric interval about a skewed metric."""
    out = []
    for record in records:
        record = copy.deepcopy(record)
        if record.get("likelihood"):
            record["likelihood"]["group"] = likelihood_group(record["likelihood"])
        intervals = record.setdefault("intervals", {})
        for column in RANKED:
            verdict = _verdict(comparisons, column, record)
            path = FIELDS[column]
            if verdict is None or (path not in intervals and column not in COMPARED_VALUES):
                continue
            if column in COMPARED_VALUES:  # the compare stage's value, in its feature space, per seed too
                _put(record, path, verdict["value"])
                for seed_record, value in zip(record.get("per_seed") or [], verdict.get("per_seed") or []):
                    _put(seed_record, path, value)
            metric = comparisons["metrics"][column]
            intervals[path] = {**intervals.get(path, {}), "low": verdict["low"], "high": verdict["high"],
                               "n_seeds": verdict.get("n_seeds"),
                               "method": f"95% interval: percentile bootstrap over seeds and {metric['units']} drawn "
                                         f"together, {comparisons['n_resamples']} resamples"}
        copying = ((comparisons or {}).get("copying") or {}).get("models", {}).get(record["model"])
        if copying:
            from genbench.stats import summarise

            _put(record, FIELDS["copying_ct"], copying["ct"])
            intervals[FIELDS["copying_ct"]] = summarise(copying["per_seed"])  # a test statistic per seed: t interval
            for seed_record, value in zip(record.get("per_seed") or [], copying["per_seed"]):
                _put(seed_record, FIELDS["copying_ct"], value)
        out.append(record)
    return out


def _put(record: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        record = record.setdefault(key, {})
    record[leaf] = value


def reference_sha(records: list[dict], evaluator: dict | None) -> tuple[str | None, list[str]]:
    """The feature network whose FIDs are ranked (the evaluator's), and warnings about it."""
    if evaluator and evaluator.get("sha256"):
        return evaluator["sha256"], []
    hashes = {(r.get("fid") or {}).get("features_sha256") for r in records if r.get("fid")}
    if len(hashes) == 1:
        return hashes.pop(), ["The evaluator record is missing: FIDs are ranked among themselves (they share one "
                              "feature network) but are not checked against the current evaluator."]
    if hashes:
        return None, ["The evaluator record is missing and the FIDs use different feature networks: none is ranked "
                      "(leaderboard.csv leaves FID/PRDC/CAS empty); rerun the evaluator and model stages."]
    return None, []


def same_features(record: dict, sha: str | None) -> bool:
    """Whether the record's (or one seed's) FID/PRDC/CAS were computed on the reference features."""
    return sha is not None and (record.get("fid") or {}).get("features_sha256") == sha


def _row(record: dict, sha: str | None, comparisons: dict | None) -> dict[str, Any]:
    row = {column: lookup(record, path) for column, path in FIELDS.items()}
    for column in RANKED:
        verdict = _verdict(comparisons, column, record) or {}
        row |= {f"{column}_vs_best": verdict.get("diff"), f"{column}_vs_best_low": verdict.get("diff_low"),
                f"{column}_vs_best_high": verdict.get("diff_high"), f"{column}_p_holm": verdict.get("p_holm"),
                f"{column}_tied_best": verdict.get("tied")}
    for column in METRIC_COLUMNS:
        found = interval(record, FIELDS[column]) or {}
        row |= {f"{column}_ci_low": found.get("low"), f"{column}_ci_high": found.get("high"),
                f"{column}_n_seeds": found.get("n_seeds"), f"{column}_ci_method": found.get("method")}
    if not same_features(record, sha) or (record.get("fid") or {}).get("reference_domain"):  # cyclegan: own table
        for column in FEATURE_COLUMNS:
            row[column] = None
            if column in METRIC_COLUMNS:
                row |= {f"{column}_{suffix}": None for suffix in CI_SUFFIXES}
            if column in RANKED:
                row |= {f"{column}_{suffix}": None for suffix in ("tied_best", *VERSUS_SUFFIXES)}
    return row


def _numeric(values: pd.Series, count: bool) -> pd.Series:
    values = pd.to_numeric(values, errors="coerce").astype(float)
    finite = values.dropna()
    if count and (finite == finite.round()).all():
        return values.astype("Int64")
    return values


def leaderboard(records: list[dict], sha: str | None, comparisons: dict | None = None) -> pd.DataFrame:
    """One row per record: summary means, interval columns, and per ranked column the paired verdict against
    the best model (`comparisons`, genbench.comparisons): difference, its interval, Holm-corrected p-value and
    the tied-best flag. A ranked column without a paired verdict marks no tie. Sorted by dataset and model."""
    records = apply_verdicts(records, comparisons)
    board = pd.DataFrame([_row(r, sha, comparisons) for r in records]).reindex(columns=columns())
    for column in board.columns:
        if column in TEXT_COLUMNS or column.endswith("_ci_method"):
            board[column] = board[column].astype(object).where(board[column].notna(), None)
        elif column.endswith("_tied_best"):
            board[column] = board[column].astype("boolean")
        else:
            board[column] = _numeric(board[column], column in COUNT_COLUMNS or column.endswith("_n_seeds"))
    return board.sort_values(["dataset", "model"], kind="stable").reset_index(drop=True)


def tie_marks(board: pd.DataFrame) -> set[tuple[str, str]]:
    """{(model, column)} for every tied-best cell of the leaderboard."""
    marks = set()
    for column in RANKED:
        flags = board[f"{column}_tied_best"].fillna(False).astype(bool)
        marks |= {(model, column) for model in board.loc[flags, "model"]}
    return marks


def per_seed_table(records: list[dict], sha: str | None) -> pd.DataFrame:
    """Long format: one row per (dataset, model, seed, metric) that the seed's record holds."""
    rows = []
    for r in records:
        for seed_record in r["per_seed"]:
            skip = set() if same_features(seed_record, sha) else set(FEATURE_COLUMNS)
            for column in METRIC_COLUMNS:
                value = lookup(seed_record, FIELDS[column])
                if column not in skip and is_number(value) and not math.isnan(value):
                    rows.append({"dataset": r["dataset"], "model": r["model"], "seed": seed_record.get("seed"),
                                 "metric": column, "value": float(value)})
    table = pd.DataFrame(rows, columns=["dataset", "model", "seed", "metric", "value"])
    table["seed"] = pd.to_numeric(table["seed"], errors="coerce").astype("Int64")
    return table


def _estimate(row: pd.Series, column: str) -> Est:
    low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
    return Est(float(row[column]), None if pd.isna(low) else float(low), None if pd.isna(high) else float(high))


def best_per_metric(board: pd.DataFrame) -> list[dict[str, Any]]:
    """The best mean per headline metric, with its tied group (the leaderboard's `_tied_best` flags).

    NLLs per likelihood space; FIDs only among records on the reference features (the others are
    empty in the board already)."""
    picks = [("accuracy", board, "accuracy")]
    for space in sorted(board["nll_group"].dropna().unique()):  # Parzen-window estimates are in no group
        picks.append((f"NLL, {space} space (nats/image)", board[board["nll_group"] == space], "nll_nats"))
    picks += [("FID", board, "fid"), ("CAS accuracy", board, "cas"), ("anomaly AUROC (mean)", board, "anomaly_auroc"),
              ("linear-probe accuracy", board, "linear_probe_accuracy")]
    best = []
    for label, rows, column in picks:
        rows = rows.dropna(subset=[column]).sort_values(
            [column, "model"], ascending=[not RANKED[column], True], kind="stable")
        if rows.empty:
            continue
        top = rows.iloc[0]
        tied = rows.iloc[1:][rows.iloc[1:][f"{column}_tied_best"].fillna(False).astype(bool)]
        estimate = _estimate(top, column)
        entry = {"metric": label, "column": column, "model": top["model"], "value": estimate.mean,
                 "low": estimate.low, "high": estimate.high,
                 "n_seeds": None if pd.isna(top[f"{column}_n_seeds"]) else int(top[f"{column}_n_seeds"]),
                 "method": top[f"{column}_ci_method"], "tied": list(tied["model"])}
        estimator = ""
        if column == "nll_nats":
            entry["estimator"] = top["nll_estimator"]
            estimator = f" ({top['nll_estimator']})" if top["nll_estimator"] else ""
        verdict = board.loc[board[f"{column}_tied_best"].notna(), f"{column}_tied_best"]
        ties = (f"; tied: {', '.join(entry['tied'])} ({TIE_WORDS})" if entry["tied"]
                else f"; no tie (the paired comparison separates every other model from it)" if len(verdict)
                else "; no paired verdict")
        width = [(estimate.high - estimate.low) / 2] if estimate.low is not None and estimate.high is not None else []
        entry["text"] = (f"best {label}: {top['model']} {fmt_fixed(estimate, column_decimals([estimate.mean], width))}"
                         f"{estimator}{ties}")
        best.append(entry)
    return best

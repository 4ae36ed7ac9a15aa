"""One table per metric family, built from the metrics records of one dataset.

Each builder returns `Section`s: a table already formatted as strings (headers carry units and the
better direction), plus notes and warnings. A ranked column never mixes protocols: likelihoods get
one table per space, FIDs one table per feature network.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

@dataclass
class Section:
    title: str
    table: pd.DataFrame | None = None  # formatted strings, one row per model (or per estimate)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the page)


def fmt(value: Any, digits: int = 4) -> str:
    """A cell: 4 significant digits, no exponent for large numbers, empty when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def short_hash(sha: Any) -> str:
    return str(sha)[:12] if sha else "?"


def ranked_table(rows: list[dict[str, Any]], by: str, *, ascending: bool) -> pd.DataFrame:
    """Sort raw rows by their main metric (missing values last), then format every cell."""
    table = pd.DataFrame(rows)
    table = table.sort_values(by, ascending=ascending, na_position="last", kind="stable")
    return table.map(fmt).reset_index(drop=True)


def absent_note(records: list[dict], key: str, what: str) -> list[str]:
    """Say which models have no `key` section and why (their record's `not_applicable`)."""
    missing = [r for r in records if not r.get(key)]
    if not missing:
        return []
    reasons = [f"{r['model']} ({(r.get('not_applicable') or {}).get(key, 'not measured')})" for r in missing]
    return [f"No {what}: " + "; ".join(reasons) + "."]


def classification(records: list[dict]) -> list[Section]:
    measured = [r for r in records if r.get("classification")]
    if not measured:
        return []
    # The ECE depends on its bin count: put it in the header when all records agree.
    bins = {r["classification"].get("ece_bins") for r in measured} - {None}
    ece = f"ECE ↓ ({next(iter(bins))} bins)" if len(bins) == 1 else "ECE ↓"
    rows = []
    for r in measured:
        c = r["classification"]
        row = {"model": r["model"], "kind": r.get("kind"), "accuracy ↑": c.get("accuracy"),
               "log-loss ↓ (nats)": c.get("log_loss"), ece: c.get("ece")}
        if len(bins) > 1:
            row["ECE bins"] = c.get("ece_bins")
        rows.append(row | {"split": c.get("split"), "n (images)": c.get("n")})
    notes = [
        "Accuracy is the fraction of correct test labels; log-loss is the mean negative log-probability of the "
        "true label in nats; ECE is the expected calibration error (L1, equal-width confidence bins). "
        "Generative classifiers predict by Bayes' rule and are scored on the same split as discriminative ones.",
        *absent_note(records, "classification", "classification"),
    ]
    return [Section("Classification", ranked_table(rows, "accuracy ↑", ascending=False), notes)]


def _extra_label(extra: dict) -> str:
    """"ELBO" for an extra estimate whose method reads "ELBO, 1 sample; ..."."""
    label = extra.get("label") or extra.get("name") or re.split(r"[,;(]", extra.get("method") or "")[0].strip()
    return label or extra.get("estimator") or "extra"


SPACE_NOTES = {
    "binary": "Test images binarised once with a fixed seed (each pixel ~ Bernoulli(intensity)); "
    "the NLL is that of binary data, bits/dim = NLL / (D ln 2).",
    "discrete": "Intensities quantised to K levels; continuous densities are evaluated on uniformly "
    "dequantised images, which gives a lower bound on the discrete log-likelihood (Theis et al. 2016); "
    "bits/dim = NLL / (D ln 2).",
}


def likelihood(records: list[dict]) -> list[Section]:
    # One entry per estimate: the main `likelihood` plus any `likelihood_extra` (e.g. the ELBO).
    entries = []
    for r in records:
        if r.get("likelihood"):
            entries.append((r["model"], r["likelihood"]))
        for extra in r.get("likelihood_extra") or []:
            entries.append((f"{r['model']} ({_extra_label(extra)})", extra))
    # Binary first, then discrete, then any other space; never one table for two spaces.
    spaces = sorted({e.get("space") or "unknown" for _, e in entries}, key=lambda s: (s != "binary", s != "discrete", s))
    sections = []
    for space in spaces:
        chosen = [(label, e) for label, e in entries if (e.get("space") or "unknown") == space]
        has_stderr = any(e.get("nll_stderr_nats") is not None for _, e in chosen)
        rows = []
        for label, e in chosen:
            row = {"model": label, "NLL ↓ (nats/image)": e.get("nll_nats")}
            if has_stderr:
                row["± s.e. (nats)"] = e.get("nll_stderr_nats")
            rows.append(row | {"bits/dim ↓": e.get("bits_per_dim"), "estimator": e.get("estimator"),
                               "method": e.get("method"), "samples": e.get("samples"),
                               "split": e.get("split"), "n (images)": e.get("n")})
        levels = sorted({e.get("levels") for _, e in chosen if e.get("levels")})
        dims = sorted({e.get("dim") for _, e in chosen if e.get("dim")})
        shape = ", ".join(filter(None, [
            f"{'/'.join(map(str, levels))} levels" if levels else "", f"D = {'/'.join(map(str, dims))}" if dims else ""]))
        title = f"Likelihood: {space} space" + (f" ({shape})" if shape else "")
        notes = [
            SPACE_NOTES.get(space, ""),
            "Lower is better. Estimators: exact = the model's own likelihood; lower_bound = a lower bound on the log-likelihood (ELBO, AIS "
            "for DBN), so the true NLL is at most the value shown; estimate = a stochastic estimate "
            "(AIS, importance sampling, Parzen) with the sample count shown. "
            "Never compare this table with another space's.",
        ]
        sections.append(Section(title, ranked_table(rows, "NLL ↓ (nats/image)", ascending=True), [n for n in notes if n]))
    if sections:
        sections[-1].notes += absent_note(records, "likelihood", "likelihood")
    return sections


def sample_quality(records: list[dict], evaluator: dict | None) -> list[Section]:
    """FID (and PRDC, memorisation, CAS when present), one table per feature network."""
    measured = [r for r in records if r.get("fid")]
    groups: dict[tuple, list[dict]] = {}
    for r in measured:
        groups.setdefault((r["fid"].get("features"), r["fid"].get("features_sha256")), []).append(r)
    sections = []
    for (features, sha), group in groups.items():
        feature_dim = group[0]["fid"].get("feature_dim") or (evaluator or {}).get("feature_dim")
        has = {key: any(r.get(key) for r in group) for key in ("prdc", "memorisation", "cas")}
        rows = []
        for r in group:
            f = r["fid"]
            reference = f.get("reference_split")
            if f.get("reference_domain"):
                reference = f"{reference}, {f['reference_domain']}"
            row = {"model": r["model"], "FID ↓": f.get("value"), "n generated (images)": f.get("n_generated"),
                   "n reference (images)": f.get("n_reference"), "reference split": reference}
            if has["prdc"]:
                p = r.get("prdc") or {}
                row |= {"precision ↑": p.get("precision"), "recall ↑": p.get("recall"),
                        "density ↑": p.get("density"), "coverage ↑": p.get("coverage")}
            if has["memorisation"]:
                row["memorised share (real: 0.5)"] = (r.get("memorisation") or {}).get("share")
            if has["cas"]:
                row["CAS accuracy ↑"] = (r.get("cas") or {}).get("accuracy")
            rows.append(row | {"seed": f.get("seed")})
        table = ranked_table(rows, "FID ↓", ascending=True)

        notes = [f"Fréchet distance between generated images and the reference split in the {feature_dim}-d "
                 f"feature space of the {features} network (weights sha256 {short_hash(sha)}). Lower is better."]
        other_domain = [r["model"] for r in group if r["fid"].get("reference_domain")]
        if other_domain:
            notes.append(f"{', '.join(other_domain)}: samples of another domain (translations), judged against the "
                         "reference split mapped into that domain (column 'reference split'), training images "
                         "likewise for memorisation; rank them with care next to the unconditional generators.")
        warnings = []
        matches_evaluator = evaluator is not None and evaluator.get("sha256") == sha
        if matches_evaluator and evaluator.get("reference_fid"):
            # A real-data row gives the scale: the FID two real samples of the data reach. Not ranked.
            reference = evaluator["reference_fid"]
            table = pd.concat([pd.DataFrame([{"model": "real data (reference)", "FID ↓": fmt(reference.get("value"))}]),
                               table], ignore_index=True).fillna("")
            notes.append(f"Reference row (not ranked): {reference.get('description', 'FID between real-data splits')}.")
        if matches_evaluator and evaluator.get("test_accuracy") is not None:
            notes.append(f"The feature network classifies the test split with accuracy {fmt(evaluator['test_accuracy'])}.")
        if evaluator is not None and not matches_evaluator:
            warnings.append(f"These FIDs used feature network {short_hash(sha)}, not the current evaluator "
                            f"({short_hash(evaluator.get('sha256'))}): rerun the evaluate stage before comparing.")
        floor = max(2 * feature_dim, 1000) if feature_dim else 1000
        small = [r for r in group if (r["fid"].get("n_generated") or 0) < floor]
        if small:
            listed = ", ".join(f"{r['model']} (n = {r['fid'].get('n_generated')})" for r in small)
            warnings.append(f"FID is biased upward at small sample counts: {listed} used fewer than "
                            f"{floor} generated images (max of 1000 and 2 × feature dim); compare FIDs only at equal n.")
        if has["prdc"]:
            ks = sorted({(r.get("prdc") or {}).get("k") for r in group if r.get("prdc")} - {None})
            notes.append("Precision, recall, density and coverage (Naeem et al. 2020) in the same feature space"
                         + (f", k = {'/'.join(map(str, ks))} nearest neighbours" if ks else "") + "; higher is better.")
        if has["memorisation"]:
            notes.append("Memorised share: the fraction of generated images closer (pixel L2) to their nearest training "
                         "image than the median held-out test image is to its own. Held-out real data scores 0.5 by "
                         "construction and copies of the training set score 1: well above 0.5 means samples sit "
                         "closer to the training images than new data does; below 0.5 is not better, only farther.")
        if has["cas"]:
            real = [(r.get("cas") or {}).get("real_data_accuracy") for r in group if r.get("cas")]
            real_text = f" (the same classifier trained on real data: {fmt(real[0])})" if real and real[0] is not None else ""
            notes.append("CAS: test accuracy of a classifier trained on class-conditional samples" + real_text + ".")
        title = "Sample quality" + (f": {features} features" if len(groups) > 1 else "")
        sections.append(Section(title, table, notes, warnings))
    if sections:
        sections[-1].notes += absent_note(records, "fid", "FID")
    return sections


def _class_order(key: str) -> tuple:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def anomaly(records: list[dict]) -> list[Section]:
    measured = [r for r in records if r.get("anomaly")]
    if not measured:
        return []
    classes = sorted({k for r in measured for k in (r["anomaly"].get("auroc_per_class") or {})}, key=_class_order)
    rows = []
    for r in measured:
        a = r["anomaly"]
        per_class = a.get("auroc_per_class") or {}
        rows.append({"model": r["model"], "kind": r.get("kind"), "mean AUROC ↑": a.get("auroc_mean"),
                     **{f"AUROC {c}": per_class.get(c) for c in classes}, "score": a.get("score")})
    protocols = sorted({r["anomaly"].get("protocol") for r in measured} - {None})
    notes = [f"Protocol: {p}" for p in protocols] + [
        "Column 'AUROC c': class c is the normal class (training data), the other classes are the anomalies; "
        "AUROC is in [0, 1], 0.5 is chance, higher is better.",
        *absent_note(records, "anomaly", "anomaly detection"),
    ]
    return [Section("Anomaly detection", ranked_table(rows, "mean AUROC ↑", ascending=False), notes)]


def representation(records: list[dict]) -> list[Section]:
    measured = [r for r in records if r.get("linear_probe")]
    if not measured:
        return []
    rows = [{"model": r["model"], "kind": r.get("kind"), "linear-probe accuracy ↑": r["linear_probe"].get("accuracy"),
             "feature dim": r["linear_probe"].get("feature_dim"), "n train": r["linear_probe"].get("n_train"),
             "n test": r["linear_probe"].get("n")} for r in measured]
    classifiers = sorted({r["linear_probe"].get("classifier") for r in measured} - {None})
    notes = [f"Linear probe: {c}, trained on encode(train split), accuracy on encode(test split)." for c in classifiers]
    return [Section("Representations (linear probe)", ranked_table(rows, "linear-probe accuracy ↑", ascending=False), notes)]


def other_metrics(records: list[dict]) -> list[Section]:
    """Model-specific metrics from `extra_metrics` (e.g. CycleGAN translation error)."""
    sections = []
    for r in records:
        extra = r.get("extra") or {}
        if not extra:
            continue
        rows = [{"metric": name, "value": fmt(v.get("value")) if isinstance(v, dict) else fmt(v),
                 "unit": v.get("unit", "") if isinstance(v, dict) else "",
                 "description": v.get("description", "") if isinstance(v, dict) else ""} for name, v in extra.items()]
        sections.append(Section(f"Other metrics: {r['model']}", pd.DataFrame(rows)))
    return sections


def cost(records: list[dict], evaluator: dict | None = None) -> list[Section]:
    rows = []
    for r in records:
        c = r.get("cost") or {}
        rows.append({"model": r["model"], "kind": r.get("kind"), "train (s)": c.get("train_seconds"),
                     "sample (s)": c.get("sample_seconds"), "evaluate (s)": c.get("evaluate_seconds"),
                     "anomaly (s)": c.get("anomaly_seconds"), "total (s)": c.get("total_seconds"),
                     "device": c.get("device")})
    notes = ["Wall-clock seconds per stage on the machine that ran it; times from different devices are not comparable."]
    totals = {key: sum((r.get("cost") or {}).get(f"{key}_seconds") or 0.0 for r in records)
              for key in ("train", "sample", "anomaly", "evaluate", "total")}
    if records:
        evaluator_seconds = (evaluator or {}).get("seconds")
        notes.append(f"All {len(records)} models together: {totals['total']:.0f} s of stage compute (train "
                     f"{totals['train']:.0f} s, sample {totals['sample']:.0f} s, anomaly {totals['anomaly']:.0f} s, "
                     f"evaluate {totals['evaluate']:.0f} s)"
                     + (f", plus {evaluator_seconds:.0f} s to train the evaluator network" if evaluator_seconds else "")
                     + ". A whole `dvc repro` also spends time in DVC itself and in starting each stage's process, "
                       "which these records do not include.")
    return [Section("Cost", ranked_table(rows, "total (s)", ascending=True), notes)]


def metric_sections(records: list[dict], evaluator: dict | None) -> list[Section]:
    return [*classification(records), *likelihood(records), *sample_quality(records, evaluator),
            *anomaly(records), *representation(records), *other_metrics(records), *cost(records, evaluator)]

"""One table per metric family, built from the metrics records of one dataset.

Each builder returns `Section`s: a table already formatted as strings (headers carry units and the
better direction), plus notes and warnings. A ranked column never mixes protocols: likelihoods get
one table per space, FIDs one table per feature network.

Records hold means over seeds (see `genbench.report.records`); a metric cell shows the mean with its
95% interval, `0.9833 [0.9806, 0.9861]`, and a trailing ★ where the leaderboard marks it tied-best.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from genbench.comparisons import likelihood_group
from genbench.report.records import interval, is_number, lookup

STAR = "★"
TIE_NOTE = (f"{STAR} the best mean, and every model tied with it: the difference from the best, paired by test "
            "image with each model's seeds drawn alongside (generated samples drawn per model), cannot be told from 0 by a two-sided "
            "bootstrap test, Holm-corrected across the models compared at 5% (results/<dataset>/comparisons.json). "
            "A wide interval is no tie by itself.")


def slug(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


@dataclass
class Section:
    title: str
    table: pd.DataFrame | None = None  # formatted strings, one row per model (or per estimate)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the page)
    links: dict[str, str] = field(default_factory=dict)  # cell text -> href (model names -> their pages)

    @property
    def anchor(self) -> str:
        return slug(self.title)


@dataclass
class Est:
    """A mean over seeds with its interval (None when the record has none) and its tied-best mark."""
    mean: float
    low: float | None = None
    high: float | None = None
    n_seeds: int | None = None
    method: str | None = None
    tied: bool = False


def fmt(value: Any, digits: int = 4) -> str:
    """A cell: 4 significant digits, no exponent for large numbers, empty when missing;
    an `Est` as `mean [low, high]`, with a trailing ★ when tied-best."""
    if isinstance(value, Est):
        text = fmt(value.mean, digits)
        if value.low is not None and value.high is not None:
            text += f" [{fmt(value.low, digits)}, {fmt(value.high, digits)}]"
        return text + (f" {STAR}" if value.tied else "")
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def column_decimals(values: list[Any], widths: list[float] = ()) -> int:
    """Fixed decimals for a column of numbers, from the median magnitude of its values (one outlier does
    not set the precision of the rest): below 1 -> 3, below 10 -> 2, below 1000 -> 1, else 0; more (up
    to 4) where the median interval half-width in `widths` would otherwise print as zero."""
    magnitudes = sorted(abs(v) for v in values if isinstance(v, float) and math.isfinite(v))
    if not magnitudes:
        return 3
    median = magnitudes[len(magnitudes) // 2]
    decimals = 3 if median < 1 else 2 if median < 10 else 1 if median < 1000 else 0
    positive = sorted(w for w in widths if math.isfinite(w) and w > 0)
    if positive:
        decimals = max(decimals, min(4, -math.floor(math.log10(positive[len(positive) // 2]))))
    return decimals


def fmt_fixed(value: Any, decimals: int) -> str:
    """A cell with `decimals` fixed decimals (an `Est` as `mean [low, high]`, ★ when tied-best);
    integers, text and booleans as they are; empty when missing."""
    if isinstance(value, Est):
        text = f"{value.mean:.{decimals}f}"
        if value.low is not None and value.high is not None:
            text += f" [{value.low:.{decimals}f}, {value.high:.{decimals}f}]"
        return text + (f" {STAR}" if value.tied else "")
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{decimals}f}"
    return fmt(value)


def est(record: dict, path: str, tie: str | None = None, ties: set | frozenset = frozenset()) -> Est | Any:
    """The summary value at `path` as an `Est` (its interval, and tied when (model, tie) is in `ties`);
    non-numeric values are returned as they are."""
    value = lookup(record, path)
    if not is_number(value) or (isinstance(value, float) and math.isnan(value)):
        return value
    found = interval(record, path) or {}
    low, high = found.get("low"), found.get("high")
    return Est(float(value), float(low) if is_number(low) else None, float(high) if is_number(high) else None,
               found.get("n_seeds") or record.get("n_seeds"), found.get("method"),
               tie is not None and (record["model"], tie) in ties)


def _mean(value: Any) -> Any:
    return value.mean if isinstance(value, Est) else value


def _method(text: str) -> str:
    """"95% interval: Student t over 3 seeds" -> "Student t over 3 seeds" (the note already says 95%; a
    cell whose seeds agreed exactly used the same method, with zero spread)."""
    return re.sub(r"^\s*95% interval:\s*", "", text).replace(" (all equal: zero spread)", "")


def interval_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Once per table: the seed counts and the interval methods of its cells, and the ★ legend."""
    cells = [(column, value) for row in rows for column, value in row.items() if isinstance(value, Est)]
    if not cells:
        return []
    counts = sorted({v.n_seeds for _, v in cells if v.n_seeds})
    seeds = " or ".join(map(str, counts)) if counts else "the"
    text = f"Each value is the mean over {seeds} seed{'' if counts == [1] else 's'} [95% interval]."
    methods: dict[str, list[str]] = {}
    for column, value in cells:
        if value.method and value.low is not None:
            columns = methods.setdefault(_method(value.method), [])
            if column not in columns:
                columns.append(column)
    if len(methods) == 1:
        text += f" Interval method: {_method(next(iter(methods)))}."
    elif methods:
        text += " Interval methods: " + "; ".join(f"{_method(m)} ({', '.join(c)})" for m, c in methods.items()) + "."
    bare = sorted({column for column, v in cells if v.low is None or v.high is None})
    if bare:
        text += f" Values without brackets have no interval in their record ({', '.join(bare)})."
    notes = [text]
    if any(v.tied for _, v in cells):
        notes.append(TIE_NOTE)
    return notes


def short_hash(sha: Any) -> str:
    return str(sha)[:12] if sha else "?"


def format_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text, with fixed decimals per column (`column_decimals`)."""
    out = {}
    for column in table.columns:
        values = list(table[column])
        widths = [(v.high - v.low) / 2 for v in values if isinstance(v, Est) and v.low is not None and v.high is not None]
        decimals = column_decimals([float(_mean(v)) for v in values if isinstance(_mean(v), float)], widths)
        out[column] = [fmt_fixed(v, decimals) for v in values]
    return pd.DataFrame(out, columns=table.columns)


def ranked_table(rows: list[dict[str, Any]], by: str, *, ascending: bool,
                 first: list[dict[str, Any]] = ()) -> pd.DataFrame:
    """Sort raw rows by their main metric (missing values last), put the unranked `first` rows (references)
    on top, then format every cell, so a reference shows the same decimals as the models."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    # object columns: a count with a missing cell must stay an integer, not become a float with NaN
    frame = lambda some: pd.DataFrame({k: pd.Series([row.get(k) for row in some], dtype=object) for k in keys})  # noqa: E731
    table = frame(rows).sort_values(by, ascending=ascending, na_position="last", kind="stable",
                                    key=lambda column: pd.to_numeric(column.map(_mean), errors="coerce"))
    if first:
        table = pd.concat([frame(first), table])
    return format_columns(table.reset_index(drop=True))


def drop_constant_columns(section: Section) -> None:
    """Protocol columns with one value in every row (split, n, reference split, ...) become one note line."""
    if section.table is None or len(section.table) < 2:
        return
    # reference rows (real data, raw pixels) leave protocol cells empty: they do not count
    table = section.table
    if "model" in table.columns:
        table = table[~table["model"].astype(str).str.endswith("(reference)")]
    if len(table) < 2:
        return
    constant = [c for c in table.columns if c not in ("model", "kind") and "↑" not in c and "↓" not in c
                and table[c].nunique() == 1 and table[c].iloc[0] != ""]
    if constant:
        section.table = section.table.drop(columns=constant)
        section.notes.append("Every row: " + "; ".join(f"{c} {table[c].iloc[0]}" for c in constant) + ".")


def absent_note(records: list[dict], key: str, what: str) -> list[str]:
    """Say which models have no `key` section and why (their record's `not_applicable`)."""
    missing = [r for r in records if not r.get(key)]
    if not missing:
        return []
    by_reason: dict[str, list[str]] = {}
    for r in missing:
        by_reason.setdefault((r.get("not_applicable") or {}).get(key, "not measured"), []).append(r["model"])
    return [f"No {what}: " + "; ".join(f"{', '.join(models)} ({reason})" for reason, models in by_reason.items()) + "."]


def classification(records: list[dict], ties: set = frozenset(), comparisons: dict | None = None) -> list[Section]:
    measured = [r for r in records if r.get("classification")]
    if not measured:
        return []
    # The ECE depends on its bin count: put it in the header when all records agree.
    bins = {r["classification"].get("ece_bins") for r in measured} - {None}
    ece = f"ECE ↓ ({fmt(next(iter(bins)))} bins)" if len(bins) == 1 else "ECE ↓"
    rows = []
    for r in measured:
        c = r["classification"]
        row = {"model": r["model"], "kind": r.get("kind"),
               "accuracy ↑": est(r, "classification.accuracy", "accuracy", ties),
               "log-loss ↓ (nats)": est(r, "classification.log_loss", "log_loss", ties),
               ece: est(r, "classification.ece", "ece", ties)}
        if len(bins) > 1:
            row["ECE bins"] = c.get("ece_bins")
        rows.append(row | {"split": c.get("split"), "n (images)": c.get("n")})
    notes = [
        *interval_notes(rows),
        "Accuracy is the fraction of correct test labels; log-loss is the mean negative log-probability of the "
        "true label in nats; ECE is the expected calibration error (L1, equal-width confidence bins). "
        "Generative classifiers predict by Bayes' rule and are scored on the same split as discriminative ones.",
        *resolvable_notes(comparisons, {"accuracy": "accuracy", "log_loss": "log-loss", "ece": "ECE"}),
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


PARZEN = "Parzen-window estimates (not ranked)"


def bound_direction(estimate: dict) -> str:
    """How an NLL estimate relates to the model's true NLL, from its estimator and method."""
    method, estimator = str(estimate.get("method") or ""), estimate.get("estimator")
    if "parzen" in method.lower():
        return "unrelated (density of the samples)"
    if "AIS" in method and estimator == "lower_bound":
        return "no guaranteed direction"
    if "AIS" in method:
        return "may be below (AIS)"
    if "IWAE" in method:
        return "at least, in expectation"
    if estimator == "lower_bound" or "dequantis" in method:
        return "at least"
    return "equal" if estimator == "exact" else "unknown"


def likelihood(records: list[dict], ties: set = frozenset(), comparisons: dict | None = None) -> list[Section]:
    # One entry per estimate: the main `likelihood` plus any `likelihood_extra` (e.g. the ELBO). Only the
    # main estimates take part in the tied-best marks (as in the leaderboard).
    entries = []  # (label, record, summary path of the estimate, main?, space)
    for r in records:
        if r.get("likelihood") and likelihood_group(r["likelihood"]) is None:  # Parzen: a table of its own
            entries.append((r["model"], r, "likelihood", False, f"{r['likelihood'].get('space')}, {PARZEN}"))
        elif r.get("likelihood"):
            entries.append((r["model"], r, "likelihood", True, r["likelihood"].get("space") or "unknown"))
        for i, extra in enumerate(r.get("likelihood_extra") or []):
            entries.append((f"{r['model']} ({_extra_label(extra)})", r, f"likelihood_extra.{i}", False,
                            extra.get("space") or "unknown"))
    # Binary first, then discrete, then any other space; never one table for two spaces.
    spaces = sorted({e[4] for e in entries}, key=lambda s: (PARZEN in s, s != "binary", s != "discrete", s))
    sections = []
    for space in spaces:
        chosen = [e[:4] for e in entries if e[4] == space]
        has_stderr = any(lookup(r, path).get("nll_stderr_nats") is not None for _, r, path, _ in chosen)
        rows = []
        for label, r, path, main in chosen:
            e = lookup(r, path)
            row = {"model": label, "NLL ↓ (nats/image)": est(r, f"{path}.nll_nats", "nll_nats" if main else None, ties)}
            if has_stderr:
                row["± s.e. (nats)"] = e.get("nll_stderr_nats")
            rows.append(row | {"bits/dim ↓": est(r, f"{path}.bits_per_dim", "bits_per_dim" if main else None, ties),
                               "estimator": e.get("estimator"), "vs the true NLL": bound_direction(e),
                               "method": e.get("method"),
                               "samples": e.get("samples"), "split": e.get("split"), "n (images)": e.get("n")})
        levels = sorted({lookup(r, path).get("levels") for _, r, path, _ in chosen} - {None})
        dims = sorted({lookup(r, path).get("dim") for _, r, path, _ in chosen} - {None})
        shape = ", ".join(filter(None, [
            f"{'/'.join(map(fmt, levels))} levels" if levels else "", f"D = {'/'.join(map(fmt, dims))}" if dims else ""]))
        title = (f"Likelihood: {space}" if PARZEN in space else f"Likelihood: {space} space") + (f" ({shape})" if shape else "")
        notes = [
            *interval_notes(rows),
            SPACE_NOTES.get(space, ""),
            "Lower is better. Column 'vs the true NLL' states each estimator's direction: an exact NLL is the true "
            "one; a lower bound on log p (ELBO, the DDPM bound, a dequantised density) gives an NLL at least the "
            "true one; IWAE does so in expectation; an AIS estimate of log Z is low in expectation, so an NLL "
            "built on it may lie below the true one (RBM, Boltzmann machine), and the DBN's bound with an AIS "
            "log Z has no guaranteed direction. Never compare this table with another space's.",
            *([f"{PARZEN.capitalize()}: a Gaussian kernel density fitted to the model's samples, not the model's "
               "likelihood (Theis et al. 2016 show how far it can be from it): shown, never ranked."]
              if PARZEN in space else []),
            *resolvable_notes(comparisons, {"nll_nats": "NLL (nats)"} if PARZEN not in space else {}),
        ]
        if has_stderr:
            notes.append("± s.e.: the standard error of the mean NLL over test images, averaged over seeds.")
        if any(not main for *_, main in chosen):
            notes.append(f"Rows 'model (label)' are a model's additional estimates (e.g. its ELBO); they are not "
                         f"ranked (no {STAR}).")
        sections.append(Section(title, ranked_table(rows, "NLL ↓ (nats/image)", ascending=True), [n for n in notes if n]))
    if sections:
        sections[-1].notes += absent_note(records, "likelihood", "likelihood")
    return sections


FEATURE_METRICS = "FID, precision/recall/density/coverage and CAS"


def sample_quality(records: list[dict], evaluator: dict | None, ties: set = frozenset(),
                   reference_sha: str | None = None, warnings: list[str] | None = None,
                   comparisons: dict | None = None) -> list[Section]:
    """FID, KID (and PRDC, the copying test, CAS when present), one table per feature network; with the
    compare stage's results (`comparisons`), in its feature spaces. Translations (cyclegan) are judged in
    their own table (`other_metrics`).

    `reference_sha`: the feature network the leaderboard ranks (the evaluator's); records on another
    network keep their own table, with a warning, and are left out of the leaderboard's columns."""
    measured = [r for r in records if r.get("fid") and not r["fid"].get("reference_domain")]
    groups: dict[tuple, list[dict]] = {}
    for r in measured:
        groups.setdefault((r["fid"].get("features"), r["fid"].get("features_sha256")), []).append(r)
    # The ranked (reference) network's table first.
    ordered = sorted(groups.items(), key=lambda item: item[0][1] != reference_sha)
    sections = []
    for (features, sha), group in ordered:
        feature_dim = group[0]["fid"].get("feature_dim") or (evaluator or {}).get("feature_dim")
        has = {key: any(r.get(key) for r in group) for key in ("prdc", "kid", "fid_pixels", "copying", "cas")}
        extra_spaces = [name for name in ((comparisons or {}).get("feature_spaces") or {})
                        if name not in ("evaluator", "pixels")]
        # distances between distributions on the unit sphere are small numbers: shown x 1000 (the csv is not)
        scale = SCALE if has["kid"] else 1.0
        fid_column = "FID ×10³ ↓" if has["kid"] else "FID ↓"
        rows = []
        for r in group:
            f = r["fid"]
            reference = f.get("reference_split")
            if f.get("reference_domain"):
                reference = f"{reference}, {f['reference_domain']}"
            row = {"model": r["model"], fid_column: _scaled(est(r, "fid.value", "fid", ties), scale)}
            if has["kid"]:
                row[KID_COLUMN] = _scaled(est(r, "kid.value", "kid", ties), SCALE)
            if has["fid_pixels"]:
                row |= {"FID pixels ↓": est(r, "fid_pixels.value", "fid_pixels", ties),
                        KID_PIXELS_COLUMN: _scaled(est(r, "kid_pixels.value", "kid_pixels", ties), SCALE)}
            for space in extra_spaces:  # user-weighted networks (params.yaml's feature_networks)
                row[f"FID {space} ↓"] = _verdict_est(comparisons, f"fid_{space}", r["model"])
            row |= {"n generated (images)": f.get("n_generated"), "n reference (images)": f.get("n_reference"),
                    "reference split": reference}
            if has["prdc"]:
                row |= {f"{name} ↑": est(r, f"prdc.{name}", name, ties)
                        for name in ("precision", "recall", "density", "coverage")}
            if has["copying"]:
                row["copying C_T (0: as new data)"] = est(r, "copying.ct")
            if has["cas"]:
                row["CAS accuracy ↑"] = est(r, "cas.accuracy", "cas", ties)
                row["CAS real ↑"] = est(r, "cas.real_accuracy")
            rows.append(row)
        matches_evaluator = evaluator is not None and evaluator.get("sha256") == sha
        real = (comparisons or {}).get("real_data")
        first = []
        if matches_evaluator and real and "fid" in real.get("metrics", {}):
            # A real-data row gives the scale: the values real images reach at the models' sample count. Not ranked.
            names = {fid_column: "fid", KID_COLUMN: "kid", "FID pixels ↓": "fid_pixels", KID_PIXELS_COLUMN: "kid_pixels",
                     **{f"{n} ↑": n for n in ("precision", "recall", "density", "coverage")}}
            factors = {fid_column: scale, KID_COLUMN: SCALE, KID_PIXELS_COLUMN: SCALE}
            first = [{"model": "real data (reference)",
                      **{column: _real_est(real["metrics"][name], factors.get(column, 1.0)) for column, name in
                         names.items() if column in rows[0] and name in real["metrics"]}}]
            if "copying C_T (0: as new data)" in rows[0] and real.get("copying_ct") is not None:
                first[0]["copying C_T (0: as new data)"] = Est(real["copying_ct"], None, None, 1, None, False)
        table = ranked_table(rows, fid_column, ascending=True, first=first)

        spaces = (comparisons or {}).get("feature_spaces") or {}
        if "evaluator" in spaces and has["kid"]:
            notes = [*interval_notes(rows),
                     f"FID (Heusel et al. 2017) and KID (Binkowski et al. 2018, cubic kernel, unbiased) between the "
                     f"stored samples and the reference split in the {spaces['evaluator']['dim']}-d space of "
                     f"{spaces['evaluator']['description']} (the {features} network, weights sha256 "
                     f"{short_hash(sha)}): bounded, so a few off-manifold samples cannot dominate. Lower is better."]
            if "pixels" in spaces:
                notes.append(f"FID pixels, KID pixels: the same distances in a second, independent space, "
                             f"{spaces['pixels']['description']} ({spaces['pixels']['dim']}-d)."
                             + "".join(f" Rank agreement of {a['metric'].upper()} between the two spaces: Kendall's "
                                       f"tau {a['kendall_tau']:.2f} over {a['n_models']} models (p = {a['p']:.2g})."
                                       for a in comparisons.get("rank_agreement") or [] if a["spaces"][1] == "pixels"))
            for space in extra_spaces:
                notes.append(f"FID {space}: {spaces[space]['description']} ({spaces[space]['dim']}-d)."
                             + "".join(f" Kendall's tau of {a['metric'].upper()} with the evaluator space: "
                                       f"{a['kendall_tau']:.2f} over {a['n_models']} models (p = {a['p']:.2g})."
                                       for a in comparisons.get("rank_agreement") or [] if a["spaces"][1] == space))
        else:
            notes = [*interval_notes(rows),
                     f"Fréchet distance between generated images and the reference split in the {fmt(feature_dim)}-d "
                     f"feature space of the {features} network (weights sha256 {short_hash(sha)}). Lower is better."]
        notes += resolvable_notes(comparisons, {"fid": "FID", "kid": "KID", "cas": "CAS"})
        section_warnings = []
        if first:
            notes.append(f"Reference row (not ranked): {real['description']}; its intervals resample those images "
                         "and the reference split as the models' do.")
        elif matches_evaluator and evaluator.get("reference_fid"):
            # A real-data row gives the scale: the FID two real samples of the data reach. Not ranked.
            reference = evaluator["reference_fid"]
            cell = fmt(reference.get("value"))
            if reference.get("low") is not None and reference.get("high") is not None:
                cell += f" [{fmt(reference['low'])}, {fmt(reference['high'])}]"
            row = {"model": "real data (reference)", "FID ↓": cell}
            table = pd.concat([pd.DataFrame([row]), table], ignore_index=True).fillna("")
            if reference.get("method"):
                notes.append(f"Reference row interval: {reference['method']}.")
            sizes = (f" ({fmt(reference['n_generated'])} images against {fmt(reference['n_reference'])} of the "
                     f"{reference.get('reference_split', '?')} split)" if reference.get("n_generated") else "")
            notes.append(f"Reference row (not ranked): {reference.get('description', 'FID between real-data splits')}"
                         f"{sizes}.")
        if matches_evaluator and evaluator.get("test_accuracy") is not None:
            notes.append(f"The feature network classifies the test split with accuracy {fmt(evaluator['test_accuracy'])}.")
        if evaluator is not None and not matches_evaluator:
            section_warnings.append(
                f"These FIDs used feature network {short_hash(sha)}, not the current evaluator "
                f"({short_hash(evaluator.get('sha256'))}): rerun the model's stage before comparing.")
        if sha != reference_sha:
            section_warnings.append(
                f"{', '.join(r['model'] for r in group)}: {FEATURE_METRICS} on feature network {short_hash(sha)} are "
                "left out of leaderboard.csv (empty cells), of the tied-best marks and of the best-FID line: "
                "numbers from two feature networks are never ranked together.")
        floor = max(2 * int(feature_dim), 1000) if feature_dim else 1000
        small = [r for r in group if (r["fid"].get("n_generated") or 0) < floor]
        if small:
            listed = ", ".join(f"{r['model']} (n = {fmt(r['fid'].get('n_generated'))})" for r in small)
            section_warnings.append(f"FID is biased upward at small sample counts: {listed} used fewer than "
                                    f"{floor} generated images (max of 1000 and 2 × feature dim); compare FIDs only at equal n.")
        if has["prdc"]:
            ks = sorted({(r.get("prdc") or {}).get("k") for r in group if r.get("prdc")} - {None})
            notes.append("Precision, recall, density and coverage (Naeem et al. 2020) in the same feature space"
                         + (f", k = {'/'.join(map(fmt, ks))} nearest neighbours" if ks else "") + "; higher is better.")
        if has["copying"]:
            notes.append("Copying C_T: " + (comparisons or {}).get("copying", {}).get("method", "") + ". Under "
                         "'as far as new data' C_T is about N(0, s^2) with s <= 1: below about -3 is evidence of "
                         "copying; above 0 only says farther, which the distances above already measure.")
        if has["cas"]:
            notes.append("CAS: test accuracy of the evaluator's architecture trained on a model's class-conditional "
                         "samples only; its reference (\"CAS real\") is the same classifier, recipe and number of steps "
                         "trained on as many real training images with the same class counts, per seed, so the gap "
                         "measures the samples, not the size of the training set.")
        title = "Sample quality" + (f": {features} features" if len(groups) > 1 else "")
        if len(groups) > 1 and sum(key[0] == features for key in groups) > 1:
            title += f" ({short_hash(sha)})"
        sections.append(Section(title, table, notes, section_warnings))
    if sections:
        sections[0].warnings[:0] = warnings or []
        sections[-1].notes += absent_note(records, "fid", "FID")
    return sections


SCALE = 1e3  # display factor of the bounded-space FID and of KIDs
KID_COLUMN, KID_PIXELS_COLUMN = "KID ×10³ ↓", "KID pixels ×10³ ↓"


def _scaled(value: Any, factor: float) -> Any:
    if not isinstance(value, Est) or factor == 1.0:
        return value
    times = lambda v: None if v is None else v * factor  # noqa: E731
    return Est(value.mean * factor, times(value.low), times(value.high), value.n_seeds, value.method, value.tied)


def _verdict_est(comparisons: dict | None, metric: str, model: str) -> Est | None:
    entry = (((comparisons or {}).get("metrics") or {}).get(metric) or {}).get("groups", {}).get("all", {}) \
        .get("models", {}).get(model)
    if not entry:
        return None
    return Est(entry["value"], entry["low"], entry["high"], entry.get("n_seeds"),
               "percentile bootstrap over seeds and generated samples drawn together", bool(entry["tied"]))


def _real_est(entry: dict, factor: float = 1.0) -> Est:
    """A real-data reference cell (one draw of real images, percentile bootstrap over images)."""
    scaled = lambda v: None if v is None else v * factor  # noqa: E731
    return Est(entry["value"] * factor, scaled(entry.get("low")), scaled(entry.get("high")), 1,
               "percentile bootstrap over images", False)


def _cell(entry: dict, factor: float = 1.0) -> str:
    text = fmt(entry["value"] * factor if entry.get("value") is not None else None)
    return text + (f" [{fmt(entry['low'] * factor)}, {fmt(entry['high'] * factor)}]" if entry.get("low") is not None else "")


def resolvable_notes(comparisons: dict | None, metrics: dict[str, str]) -> list[str]:
    """Per ranked metric: how large a difference from the best the paired comparison could resolve."""
    parts = []
    for metric, label in metrics.items():
        for group, verdict in (((comparisons or {}).get("metrics") or {}).get(metric, {}).get("groups") or {}).items():
            size = verdict.get("resolvable_median")
            if size is not None:
                parts.append(f"{label}{'' if group == 'all' else f' ({group})'} {fmt(size)}")
    if not parts:
        return []
    return ["Resolvable difference (median over the models compared): the difference from the best that the paired "
            "comparison detects 80% of the time at the 5% level before the Holm correction, 2.8 bootstrap "
            "standard errors of the difference: " + "; ".join(parts) + ". Smaller differences are not resolved by "
            "these seeds and test images."]


def _class_order(key: str) -> tuple:
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def anomaly(records: list[dict], ties: set = frozenset(), comparisons: dict | None = None) -> list[Section]:
    measured = [r for r in records if r.get("anomaly")]
    if not measured:
        return []
    classes = sorted({k for r in measured for k in (r["anomaly"].get("auroc_per_class") or {})}, key=_class_order)
    rows = []
    for r in measured:
        a = r["anomaly"]
        per_class = a.get("auroc_per_class") or {}
        rows.append({"model": r["model"], "kind": r.get("kind"),
                     "mean AUROC ↑": est(r, "anomaly.auroc_mean", "anomaly_auroc", ties),
                     **{f"AUROC {c}": per_class.get(c) for c in classes}, "score": a.get("score")})
    protocols = sorted({r["anomaly"].get("protocol") for r in measured} - {None})
    notes = [*interval_notes(rows)] + [f"Protocol: {p}" for p in protocols] + [
        "Column 'AUROC c': class c is the normal class (training data), the other classes are the anomalies; "
        "AUROC is in [0, 1], 0.5 is chance, higher is better. Per-class AUROCs are means over seeds (their "
        "intervals, where measured, are in the metrics records).",
        *resolvable_notes(comparisons, {"anomaly_auroc": "mean AUROC"}),
        *absent_note(records, "anomaly", "anomaly detection"),
    ]
    return [Section("Anomaly detection", ranked_table(rows, "mean AUROC ↑", ascending=False), notes)]


def representation(records: list[dict], ties: set = frozenset(), comparisons: dict | None = None) -> list[Section]:
    from genbench.comparisons import RAW_PIXELS

    measured = [r for r in records if r.get("linear_probe")]
    if not measured:
        return []
    rows = [{"model": r["model"], "kind": r.get("kind"),
             "linear-probe accuracy ↑": est(r, "linear_probe.accuracy", "linear_probe_accuracy", ties),
             "feature dim": r["linear_probe"].get("feature_dim"), "n train": r["linear_probe"].get("n_train"),
             "n test": r["linear_probe"].get("n")} for r in measured]
    probe = (((comparisons or {}).get("metrics") or {}).get("linear_probe_accuracy") or {}).get("groups", {}).get("all")
    pixels = (probe or {}).get("models", {}).get(RAW_PIXELS)
    if pixels:  # the reference row: the probe on the pixels themselves, compared like a model
        rows.append({"model": f"{RAW_PIXELS} (reference)", "kind": "none",
                     "linear-probe accuracy ↑": Est(pixels["value"], pixels["low"], pixels["high"], 1,
                                                    "percentile bootstrap over test images", bool(pixels["tied"])),
                     "feature dim": None,
                     "n train": measured[0]["linear_probe"].get("n_train"), "n test": measured[0]["linear_probe"].get("n")})
    classifiers = sorted({r["linear_probe"].get("classifier") for r in measured} - {None})
    notes = [*interval_notes(rows)] + [
        f"Linear probe: {c}, trained on encode(train split), accuracy on encode(test split)." for c in classifiers]
    if pixels:
        notes.append(f"'{RAW_PIXELS} (reference)': the same probe on the pixels themselves (one deterministic fit), "
                     "compared with the models like a model: a representation is useful for this probe only where it "
                     "beats it.")
    notes += resolvable_notes(comparisons, {"linear_probe_accuracy": "linear-probe accuracy"})
    return [Section("Representations (linear probe)", ranked_table(rows, "linear-probe accuracy ↑", ascending=False), notes)]


def other_metrics(records: list[dict]) -> list[Section]:
    """Model-specific metrics from `extra_metrics` (e.g. CycleGAN translation error)."""
    sections = []
    for r in records:
        extra = r.get("extra") or {}
        if not extra:
            continue
        rows = [{"metric": name,
                 "value": est(r, f"extra.{name}.value") if isinstance(v, dict) else est(r, f"extra.{name}"),
                 "unit": v.get("unit", "") if isinstance(v, dict) else "",
                 "description": v.get("description", "") if isinstance(v, dict) else ""} for name, v in extra.items()]
        domain = (r.get("fid") or {}).get("reference_domain")
        title = f"Other metrics: {r['model']}"
        if domain:  # a translation model: its samples are judged against the data mapped into their domain
            title = f"Translation: {r['model']} (not ranked with the unconditional generators)"
            rows.append({"metric": "fid_samples_vs_domain", "value": est(r, "fid.value"), "unit": "",
                         "description": f"FID (evaluator features) of its {fmt(r['fid'].get('n_generated'))} samples "
                                        f"against the {r['fid'].get('reference_split')} split mapped into {domain}"})
        notes = interval_notes(rows)
        sections.append(Section(title, pd.DataFrame(rows).map(fmt), notes))  # mixed units: 4 s.f.
    return sections


def _seed_sum(records: list[dict], key: str) -> float:
    """Seconds of `cost.<key>` summed over every seed of every record."""
    return sum(((s.get("cost") or {}).get(key) or 0.0) for r in records for s in r.get("per_seed") or [])


def cost(records: list[dict], evaluator: dict | None = None) -> list[Section]:
    rows = []
    for r in records:
        c = r.get("cost") or {}
        rows.append({"model": r["model"], "kind": r.get("kind"), "fit (s)": est(r, "cost.fit_seconds"),
                     "evaluate (s)": est(r, "cost.evaluate_seconds"), "anomaly (s)": est(r, "cost.anomaly_seconds"),
                     "total per seed (s)": est(r, "cost.total_seconds"), "seeds": r.get("n_seeds"),
                     "stage wall (s)": r.get("stage_seconds"), "workers": r.get("workers"), "device": c.get("device")})
    notes = [*interval_notes(rows),
             "Wall-clock seconds on the machine that ran them; times from different devices are not comparable. "
             "fit, evaluate, anomaly and total: one seed's work, mean over seeds. stage wall: the whole per-model "
             "stage, all seeds; the engine runs the seeds in parallel on its worker processes (column 'workers'), so the "
             "stage can take less than seeds × total per seed (and more where other stages shared the workers)."]
    if records:
        stage = sum(r.get("stage_seconds") or 0.0 for r in records)
        evaluator_seconds = (evaluator or {}).get("seconds")
        notes.append(f"All {len(records)} models together: {stage:.0f} s of stage wall time; summed over seeds, "
                     f"{_seed_sum(records, 'total_seconds'):.0f} s of per-seed work (fit "
                     f"{_seed_sum(records, 'fit_seconds'):.0f} s, evaluate {_seed_sum(records, 'evaluate_seconds'):.0f} s, "
                     f"anomaly {_seed_sum(records, 'anomaly_seconds'):.0f} s)"
                     + (f", plus {evaluator_seconds:.0f} s to train the evaluator network" if evaluator_seconds else "")
                     + ". A whole `dvc repro` also spends time in DVC itself and in starting each stage's process, "
                       "which these records do not include.")
    return [Section("Cost", ranked_table(rows, "stage wall (s)", ascending=True), notes)]


def metric_sections(records: list[dict], evaluator: dict | None, ties: set = frozenset(),
                    reference_sha: str | None = None, fid_warnings: list[str] | None = None,
                    comparisons: dict | None = None) -> list[Section]:
    """Every metric family's sections; `ties` = {(model, leaderboard column)} of tied-best cells;
    `comparisons`: the compare stage's results (genbench.comparisons), for its reference rows and notes."""
    sections = [*classification(records, ties, comparisons), *likelihood(records, ties, comparisons),
                *sample_quality(records, evaluator, ties, reference_sha, fid_warnings, comparisons),
                *anomaly(records, ties, comparisons), *representation(records, ties, comparisons),
                *other_metrics(records), *cost(records, evaluator)]
    for section in sections:
        drop_constant_columns(section)
    return sections

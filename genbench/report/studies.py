"""The report's study sections, from studies/<dataset>/<study>/<model>.json (genbench.studies):
learning curves of every classifier, where the generative and discriminative curves cross, and the
accuracy gain of training the augmentation classifier on generated images too.

Differences between two curves are paired: for one seed both fits saw the same training subset, and both
are scored on the same test images, so a difference's 95% interval combines the Student t interval of
the per-seed differences with a bootstrap over test images of the per-image differences (genbench.stats).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from genbench.io import read_json
from genbench.params import Paths
from genbench.report.figures import line_panels
from genbench.report.sections import Est, Section, column_decimals, fmt_fixed

STUDIES = ("learning_curve", "augmentation")  # genbench.studies.STUDIES (not imported: it imports the models)
REAL_ONLY = "real_only"
# Ng & Jordan (2002) compare naive Bayes with logistic regression: Gaussian NB for continuous inputs
# (digits' intensities), Bernoulli NB for binary ones.
# tab20's dark shades, then its light ones: 13 classifiers get 13 distinguishable colours
MODEL_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5"]
NG_JORDAN_PAIRS = (("gaussian_nb", "logistic_regression"), ("bernoulli_nb", "logistic_regression"))


def study_selection(root: Path, dataset: str) -> dict[str, list[str]] | None:
    """study -> models, read off the stage names of pipelines/<dataset>/dvc.yaml (None without one)."""
    path = root / "pipelines" / dataset / "dvc.yaml"
    if not path.exists():
        return None
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    return {study: [name.split("-", 1)[1] for name in stages if name.startswith(f"{study}-")] for study in STUDIES}


def load_studies(root: Path, dataset: str, selection: dict[str, list[str]] | None) -> dict[str, dict[str, dict]]:
    """study -> {model: record}. With `selection`, a selected model without its file is an error naming
    the stage; without, whatever files exist are read."""
    out: dict[str, dict[str, dict]] = {}
    for study in STUDIES:
        names = selection.get(study, []) if selection is not None else \
            sorted(p.parent.name for p in Paths(root).results(dataset).glob(f"*/{study}.json"))
        records = {}
        for name in names:
            path = Paths(root).study(dataset, study, name)
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `uv run dvc repro pipelines/{dataset}/dvc.yaml:"
                                        f"{study}-{name}`")
            records[name] = _with_intervals(read_json(path))
        out[study] = records
    return out


def _with_intervals(record: dict) -> dict:
    """Each point's mean accuracy with its 95% interval, from the seeds' per-image correctness."""
    from genbench.summary import accuracy_interval

    for point in record.get("points") or []:
        for p in (point, point.get("same_total")):
            if p is not None:
                p["accuracy"] = accuracy_interval(p["per_seed"])
    return record


# --- paired differences and crossings -----------------------------------------------------------------


def _fitted(results: list[dict]) -> bool:
    return bool(results) and all("correct" in r for r in results)


def paired_difference(a: list[dict], b: list[dict]) -> dict | None:
    """Accuracy of a minus accuracy of b, seed by seed and test image by test image: the mean difference
    with its 95% interval ({"mean", "low", "high", "n_seeds", "method"}); None if either was not fitted."""
    from genbench.io import correct_from_bits
    from genbench.stats import summarise

    if not (_fitted(a) and _fitted(b)):
        return None
    by_seed = {r["seed"]: r for r in b}
    if set(by_seed) != {r["seed"] for r in a}:
        raise ValueError(f"paired difference over different seeds: {[r['seed'] for r in a]} and {sorted(by_seed)}")
    diffs = [r["accuracy"] - by_seed[r["seed"]]["accuracy"] for r in a]
    per_image = np.stack([correct_from_bits(r["correct"]).astype(np.float64) -
                          correct_from_bits(by_seed[r["seed"]]["correct"]) for r in a])
    return summarise(diffs, per_image, kind="mean")


def crossings(sizes: list[int], difference: list[float | None]) -> list[tuple[int, int, int]]:
    """Where a difference curve (b − a at each size; None where one was not fitted) changes sign:
    [(size before, size after, +1 if b overtakes a else -1)]. Zero differences are skipped over."""
    signed = [(n, np.sign(d)) for n, d in zip(sizes, difference) if d is not None and d != 0]
    return [(n0, n1, int(s1)) for (n0, s0), (n1, s1) in zip(signed, signed[1:]) if s0 != s1]


def crossing_text(sizes: list[int], difference: list[float | None], a: str, b: str) -> str:
    """One line: where b's curve crosses a's, or which stays ahead."""
    known = [d for d in difference if d is not None]
    if not known:
        return "not fitted"
    found = crossings(sizes, difference)
    if not found:
        if all(d == 0 for d in known):
            return "equal at every size"
        return f"{b if max(known) > 0 else a} ahead at every size"
    return "; ".join(f"{b if s > 0 else a} overtakes between n = {n0} and {n1}" for n0, n1, s in found)


def segments(sizes: list[int], differences: list[dict | None], a: str, b: str) -> str:
    """Where b − a is resolved, size by size: b ahead (its 95% interval above 0), a ahead (below 0) or tied
    (the interval contains 0), as runs of consecutive sizes, e.g. "tied at n = 10–66; b ahead at n = 130–1293"."""
    states = []
    for n, d in zip(sizes, differences):
        state = "not fitted" if d is None else f"{b} ahead" if d["low"] > 0 else f"{a} ahead" if d["high"] < 0 else "tied"
        if states and states[-1][0] == state:
            states[-1][2] = n
        else:
            states.append([state, n, n])
    return "; ".join(f"{state} at n = {first}" + (f"–{last}" if last != first else "") for state, first, last in states)


def _est(interval: dict | None) -> Est | None:
    return None if interval is None else Est(interval["mean"], interval.get("low"), interval.get("high"))


def _cells(values: list[Est | None], na: str = "not fitted") -> list[str]:
    present = [v for v in values if v is not None]
    decimals = column_decimals([v.mean for v in present],
                               [(v.high - v.low) / 2 for v in present if v.low is not None and v.high is not None])
    return [fmt_fixed(v, decimals) if v is not None else na for v in values]


def _size_label(point: dict, full: int) -> str:
    return f"n = {point['n_train']} ({100 * point['fraction']:g}%)" if point["fraction"] < 1 else f"n = {full} (100%)"


# --- learning curves ----------------------------------------------------------------------------------


def learning_curve_sections(out: Path, dataset: str, records: dict[str, dict]) -> list[Section]:
    """The learning-curve figure and table, the crossing matrix and the Ng & Jordan pairs, with a reading."""
    if not records:
        return []
    first = next(iter(records.values()))
    full, seeds, config = first["n_train_full"], first["seeds"], first["settings"]
    points = first["points"]
    sizes = [p["n_train"] for p in points]
    generative = [m for m, r in records.items() if r["kind"] == "generative"]
    discriminative = [m for m, r in records.items() if r["kind"] != "generative"]

    colors = {m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(records)}  # one colour per model

    def line(model: str) -> dict:
        ps = [p for p in records[model]["points"] if p["accuracy"] is not None]
        return {"label": model, "x": [p["n_train"] for p in ps], "mean": [p["accuracy"]["mean"] for p in ps],
                "low": [p["accuracy"]["low"] for p in ps], "high": [p["accuracy"]["high"] for p in ps],
                "style": "-" if records[model]["kind"] == "generative" else "--", "color": colors[model]}

    envelope = _envelopes(records, generative, discriminative)
    panels = [("generative classifiers (Bayes' rule on p(x | y) p(y))", [line(m) for m in generative]),
              ("discriminative classifiers (p(y | x))", [line(m) for m in discriminative])]
    pair_models = list(dict.fromkeys(m for pair in NG_JORDAN_PAIRS if set(pair) <= set(records) for m in pair))
    panels.append(("Ng & Jordan's pairs: naive Bayes and logistic regression", [line(m) for m in pair_models]))
    panels = [{"title": title, "lines": lines} for title, lines in panels if lines]
    figure = "figures/learning-curves.svg"
    line_panels(panels, out / figure, xlabel="training images n (stratified subset; log scale)",
                ylabel="test accuracy (mean over seeds, 95% band)",
                title=f"{dataset}: test accuracy against training-set size ({len(seeds)} seeds)")

    table = pd.DataFrame({"model": list(records), "kind": [records[m]["kind"] for m in records]})
    for i, point in enumerate(points):
        table[_size_label(point, full)] = _cells([_est(records[m]["points"][i]["accuracy"]) for m in records])
    table = table.assign(_order=table["kind"] != "generative").sort_values(["_order", "model"], kind="stable") \
        .drop(columns="_order").reset_index(drop=True)

    adjusted = []  # an example of the longer training at the smallest size, per model that has one
    for m, record in records.items():
        smallest = record["points"][0]["per_seed"][0]
        if smallest.get("adjusted"):
            settings = ", ".join(f"{k} {v}" for k, v in smallest["adjusted"].items())
            configured = ", ".join(f"{k} {record['hyperparameters'][k]}" for k in smallest["adjusted"])
            adjusted.append(f"{m} {settings} at n = {record['points'][0]['n_train']} (params.yaml: {configured})")
    failures = [f"{m} at n = {p['n_train']}: {p['not_fitted']}" for m, r in records.items() for p in r["points"]
                if p.get("not_fitted")]
    protocol = (f"Each classifier is fitted on stratified subsets of the {full}-image training split "
                f"(per class max({config['min_per_class']}, round(f n_c)) images; a seed's smaller subsets lie inside its "
                f"larger ones, and every model sees the same subsets), once per seed ({', '.join(map(str, seeds))}), and "
                f"scored on the {first['n_test']} test images; 100% is the benchmark's own fit (the leaderboard's "
                "accuracy). Band and brackets: the 95% interval over seeds and test images, as on the leaderboard. "
                "Solid lines: generative classifiers; dashed: discriminative.")
    steps = ("Training length: models trained by epochs over mini-batches get as many epochs as give about the "
             "optimiser steps of the full-data fit (`studies.learning_curve.equal_steps`): " + "; ".join(adjusted) +
             ". The others fit as params.yaml says." if config["equal_steps"] and adjusted else
             "Training length: params.yaml's, whatever the subset size.")
    curves = Section("Learning curves", table, notes=[protocol, steps, _reading(records, envelope, sizes, full)])
    curves.images = [(f"test accuracy against training-set size, {len(seeds)} seeds", figure)]
    if failures:
        curves.warnings = ["Not fitted (the subset is too small for the model's settings): " + "; ".join(failures)]

    rows = []
    for g in generative:
        for d in discriminative:
            paired = envelope["paired"][(g, d)]
            rows.append({"generative": g, "discriminative": d,
                         "means cross": crossing_text(sizes, envelope["diff"][(g, d)], g, d),
                         "resolved (95% interval of the paired difference)": segments(sizes, paired, g, d)})
    crossing = Section("Where the curves cross", pd.DataFrame(rows) if rows else None, notes=[
        "Each row compares one generative and one discriminative classifier size by size. Means cross: where one "
        "mean curve overtakes the other. Resolved: where the paired difference (same subsets, same test images) has "
        "its 95% interval above or below 0; tied where it contains 0. The next table gives the differences for Ng & "
        "Jordan's pairs and for the best model of each kind."])
    sections = [curves, crossing]
    detail = _pair_table(records, envelope, points, full)
    if detail is not None:
        sections.append(Section("Paired differences along the curves", detail, notes=[
            "Accuracy of the discriminative minus the generative classifier at each size, paired by seed (the same "
            "subset) and test image; brackets: 95% interval. Positive: the discriminative classifier is ahead."]))
    return sections


def _envelopes(records: dict[str, dict], generative: list[str], discriminative: list[str]) -> dict:
    """Per size the best generative and best discriminative model by mean; mean differences d − g of every pair."""
    n_points = len(next(iter(records.values()))["points"])

    def mean(model: str, i: int) -> float | None:
        a = records[model]["points"][i]["accuracy"]
        return None if a is None else a["mean"]

    best = {}
    for kind, models in (("generative", generative), ("discriminative", discriminative)):
        best[kind] = []
        for i in range(n_points):
            fitted = [(mean(m, i), m) for m in models if mean(m, i) is not None]
            best[kind].append(max(fitted)[1] if fitted else None)
    diff = {(g, d): [None if mean(g, i) is None or mean(d, i) is None else mean(d, i) - mean(g, i)
                     for i in range(n_points)] for g in generative for d in discriminative}
    # d − g paired by seed and test image, computed once for every table and sentence that reads it
    paired = {(g, d): [paired_difference(records[d]["points"][i]["per_seed"], records[g]["points"][i]["per_seed"])
                       for i in range(n_points)] for g in generative for d in discriminative}
    return {"best": best, "diff": diff, "paired": paired}


def _pair_table(records: dict[str, dict], envelope: dict, points: list[dict], full: int) -> pd.DataFrame | None:
    rows = [(f"{d} − {g}", g, d, [i for i in range(len(points))]) for g, d in NG_JORDAN_PAIRS
            if g in records and d in records]
    bests = envelope["best"]
    if any(bests["generative"]) and any(bests["discriminative"]):
        rows.append(("best discriminative − best generative", None, None, list(range(len(points)))))
    if not rows:
        return None
    table = {"difference in test accuracy": []}
    columns = [_size_label(p, full) for p in points]
    for c in columns:
        table[c] = []
    for label, g, d, idx in rows:
        values = []
        for i in idx:
            gi = g or bests["generative"][i]
            di = d or bests["discriminative"][i]
            if gi is None or di is None:
                values.append(None)
                continue
            values.append(_est(envelope["paired"][(gi, di)][i]))
        cells = _cells(values)
        if g is None:
            cells = [f"{c} ({bests['discriminative'][i]} − {bests['generative'][i]})" for i, c in enumerate(cells)]
        table["difference in test accuracy"].append(label)
        for c, cell in zip(columns, cells):
            table[c].append(cell)
    return pd.DataFrame(table)


def _reading(records: dict[str, dict], envelope: dict, sizes: list[int], full: int) -> str:
    """The paragraph that says what the curves show, from their numbers."""
    best = envelope["best"]

    def acc(model: str, i: int) -> str:
        a = records[model]["points"][i]["accuracy"]
        return f"{model} {a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"

    parts = []
    first, last = 0, len(sizes) - 1
    if best["generative"][first] and best["discriminative"][first]:
        parts.append(f"With n = {sizes[first]} training images the best generative classifier is "
                     f"{acc(best['generative'][first], first)} and the best discriminative one "
                     f"{acc(best['discriminative'][first], first)}; on the full split (n = {full}) they are "
                     f"{acc(best['generative'][last], last)} and {acc(best['discriminative'][last], last)}.")
        g_curve = [records[best["generative"][i]]["points"][i]["accuracy"]["mean"] if best["generative"][i] else None
                   for i in range(len(sizes))]
        d_curve = [records[best["discriminative"][i]]["points"][i]["accuracy"]["mean"] if best["discriminative"][i]
                   else None for i in range(len(sizes))]
        diff = [None if g is None or d is None else d - g for g, d in zip(g_curve, d_curve)]
        paired = [None if not (best["generative"][i] and best["discriminative"][i]) else
                  envelope["paired"][(best["generative"][i], best["discriminative"][i])][i] for i in range(len(sizes))]
        parts.append("The best-of-kind mean curves: " + crossing_text(sizes, diff, "generative", "discriminative") +
                     "; paired differences: " + segments(sizes, paired, "the best generative", "the best discriminative")
                     + ".")
    for g, d in NG_JORDAN_PAIRS:
        if g in records and d in records:
            paired = envelope["paired"][(g, d)]
            at = [paired[first], paired[last]]
            text = crossing_text(sizes, envelope["diff"][(g, d)], g, d)
            ends = "; ".join(f"{d} − {g} at n = {n}: {x['mean']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]"
                             for n, x in zip((sizes[first], full), at) if x is not None)
            parts.append(f"Ng & Jordan's pair {g} / {d}: the means: {text}; resolved: {segments(sizes, paired, g, d)} "
                         f"({ends}).")
    parts.append("Where a difference's interval contains 0, the two curves are not told apart at this many seeds "
                 "and test images.")
    return " ".join(parts)


# --- augmentation -------------------------------------------------------------------------------------


def augmentation_sections(out: Path, dataset: str, records: dict[str, dict]) -> list[Section]:
    """Accuracy of the classifier on real + generated images against real-only baselines, and the gains."""
    baseline = records.get(REAL_ONLY)
    generators = [m for m in records if m != REAL_ONLY]
    if baseline is None or not generators:
        return []
    classifier, seeds, config = baseline["classifier"]["model"], baseline["seeds"], baseline["settings"]
    points = baseline["points"]
    reals = [p["n_train"] for p in points]
    columns = [f"{n} real" for n in reals]
    ratio = config["generated_per_real"]
    times = "" if ratio == 1 else f"{ratio:g} "  # "n generated", "0.5 n generated"

    gains, vs_total = {}, {}
    for g in generators:
        gains[g] = [paired_difference(gp["per_seed"], bp["per_seed"]) for gp, bp in zip(records[g]["points"], points)]
        vs_total[g] = [paired_difference(gp["per_seed"], bp["same_total"]["per_seed"])
                       for gp, bp in zip(records[g]["points"], points)]
    more_real = [paired_difference(bp["same_total"]["per_seed"], bp["per_seed"]) for bp in points]

    acc_rows = [("n real", [p["accuracy"] for p in points]),
                (f"{1 + ratio:g} n real (the same total size)", [p["same_total"]["accuracy"] for p in points])]
    acc_rows += [(f"n real + {times}n generated by {g}", [p["accuracy"] for p in records[g]["points"]])
                 for g in generators]
    accuracy = pd.DataFrame({f"{classifier} trained on": [r[0] for r in acc_rows]})
    gain = pd.DataFrame({"generator": [*generators, f"({times}n more real images instead)"]})
    for i, c in enumerate(columns):
        accuracy[c] = _cells([_est(r[1][i]) for r in acc_rows])
        gain[f"{c}: gain over real only"] = _cells([_est(gains[g][i]) for g in generators] + [_est(more_real[i])])
        gain[f"{c}: vs same total real"] = _cells([_est(vs_total[g][i]) for g in generators] + [None], na="")

    colors = {g: MODEL_COLORS[i % len(MODEL_COLORS)] for i, g in enumerate(generators)}  # the same in both panels

    def line(label: str, xs: list[int], values: list[dict | None], style: str = "-", color: str | None = None) -> dict:
        kept = [(x, v) for x, v in zip(xs, values) if v is not None]
        return {"label": label, "x": [x for x, _ in kept], "mean": [v["mean"] for _, v in kept],
                "low": [v["low"] for _, v in kept], "high": [v["high"] for _, v in kept], "style": style, "color": color}

    figure = "figures/augmentation.svg"
    line_panels([
        {"title": "test accuracy", "ylabel": f"{classifier} test accuracy (mean over seeds, 95% band)", "lines": [
            line("n real", reals, [p["accuracy"] for p in points], "-", "black"),
            line(f"{1 + ratio:g} n real", reals, [p["same_total"]["accuracy"] for p in points], "--", "black"),
            *(line(f"n real + {times}n from {g}", reals, [p["accuracy"] for p in records[g]["points"]], "-", colors[g])
              for g in generators)]},
        {"title": "gain over the n real images alone", "zero_line": True,
         "ylabel": "difference in test accuracy (paired, 95% band)", "lines": [
             line(f"{times}n more real images", reals, more_real, "--", "black"),
             *(line(g, reals, gains[g], "-", colors[g]) for g in generators)]},
    ], out / figure, xlabel="real training images n (stratified subset; log scale)", ylabel="", sharey=False,
        title=f"{dataset}: {classifier} trained on n real images plus {times}n generated ({len(seeds)} seeds)")

    failures = [f"{g} at n = {p['n_train']}: {p['not_fitted']}" for g in generators for p in records[g]["points"]
                if p.get("not_fitted")]
    protocol = (f"For each real size n (a stratified subset of the {baseline['n_train_full']}-image training split, "
                f"the same subsets as the learning curves) and seed ({', '.join(map(str, seeds))}): each generator is "
                f"trained on those n real images only, draws {times}n images with the real subset's class counts, and "
                f"{classifier} (params.yaml's models.{classifier}) is trained on both and scored on the "
                f"{baseline['n_test']} test images. Baselines: {classifier} on the n real images alone, and on a real "
                f"subset of the same total size ({times}n more real images, containing the n). Differences are "
                "paired by seed and test image; brackets: 95% interval over seeds and test images."
                + (" Training length: equal optimiser steps for every size, as for the learning curves." if
                   config["equal_steps"] else ""))
    sections = [Section("Augmentation with generated images", accuracy, notes=[protocol]),
                Section("Augmentation gains", gain, notes=[
                    "Gain over real only: accuracy with the generated images minus accuracy on the same n real images. "
                    "vs same total real: minus accuracy on as many real images as real + generated (negative: the "
                    "generated images are worth less than real ones).", _augmentation_reading(gains, more_real, reals)])]
    sections[0].images = [(f"{classifier} on real + generated images, {len(seeds)} seeds", figure)]
    if failures:
        sections[0].warnings = ["Not fitted (the subset is too small for the generator's settings): " + "; ".join(failures)]
    return sections


def _augmentation_reading(gains: dict[str, list[dict | None]], more_real: list[dict | None], reals: list[int]) -> str:
    parts = []
    for i, n in enumerate(reals):
        up = [g for g, v in gains.items() if v[i] is not None and v[i]["low"] > 0]
        down = [g for g, v in gains.items() if v[i] is not None and v[i]["high"] < 0]
        best = max(((v[i]["mean"], g) for g, v in gains.items() if v[i] is not None), default=None)
        text = f"n = {n}: "
        text += (f"{', '.join(up)} raise{'s' if len(up) == 1 else ''} accuracy (interval above 0)" if up else
                 "no generator's gain has its interval above 0")
        if down:
            text += f"; {', '.join(down)} lower{'s' if len(down) == 1 else ''} it"
        if best is not None:
            text += f"; largest mean gain {best[1]} {best[0]:+.3f}"
        if more_real[i] is not None:
            text += f", against {more_real[i]['mean']:+.3f} from as many more real images"
        parts.append(text)
    return "Reading: " + ". ".join(parts) + "."

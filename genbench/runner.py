"""The per-(dataset, model) stage: for every seed in params.yaml, fit the model, draw samples, compute
every metric its capabilities allow and run the one-class anomaly protocol; then summarise the seeds
as means with 95% intervals (`genbench.stats`).

One stage per model, seeds inside it, keeps the DVC graph and lock small (dvc_pipelines.py says why).
The work is split into tasks: one per seed (fit, sample, evaluate) and one per (seed, normal class)
of the anomaly protocol. On the CPU, `workers` forked processes run them, each with one thread: one
thread per task makes a seed's numbers independent of the number of workers and cores, and these
small models gain little from a second thread (gan: 17.5 s with one, 17.1 s with two) while two
processes nearly halve the wall time. On a GPU the tasks run one after another in this process, so
nothing ever forks a process that may have initialised CUDA. GENBENCH_WORKERS overrides the count.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import platform
import subprocess
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genbench.config import ConfigError
from genbench.data.prepare import PreparedData
from genbench.io import atomic_directory, atomic_file, write_json, write_text
from genbench.models.base import Model, capabilities
from genbench.pipeline import Paths, build_model, check_selection, dataset_params, device_of, protocol, seeds_of

# Leaves of a record that count things or set the protocol: no interval, no average.
COUNT_KEYS = {"n", "ece_bins", "levels", "dim", "samples", "n_generated", "n_reference", "feature_dim", "seed",
              "k", "n_real", "n_fake", "n_train", "n_test", "n_samples", "n_train_generated", "epochs", "quantile",
              "reference_share", "nll_stderr_nats", "threshold", "real_data_accuracy", "parameters", "cores"}


@dataclass
class Job:
    """What every task reads. Set before the workers fork, so they inherit it instead of unpickling it."""

    params: dict
    dataset: str
    model_name: str
    data: PreparedData
    evaluator: Any  # (network, record)
    device: torch.device
    model_dir: Path  # temporary directories, renamed into place when every task succeeded
    samples_dir: Path
    figure_seed: int  # the seed whose samples become the grid and figures


_JOB: Job | None = None


# --- tasks ------------------------------------------------------------------------------------------


def _seed_task(seed: int) -> dict:
    """Fit with `seed`, save, reload (as a later reader would), sample and evaluate."""
    job = _JOB
    model = build_model(job.params, job.model_name)
    train = job.data.split("train")
    # A fit that takes `val` logs held-out losses per epoch (the validation curve); it never learns from them.
    held_out = {"val": job.data.split("val")} if "val" in inspect.signature(model.fit).parameters else {}
    start = time.perf_counter()
    model.fit(train, seed=seed, **held_out)
    fit_seconds = time.perf_counter() - start
    history = model.history
    size = model_size(model)
    directory = job.model_dir / f"seed-{seed}"
    model.save(directory)
    model = Model.load(directory)
    start = time.perf_counter()
    record, per_image, sample_info = evaluate_seed(job, model, seed)
    record["cost"] = {"fit_seconds": fit_seconds, "evaluate_seconds": time.perf_counter() - start,
                      "device": str(job.device)}
    record["size"] = size
    return {"task": "seed", "seed": seed, "record": record, "per_image": per_image, "history": history,
            "sample_info": sample_info}


def _one_class_task(seed: int, normal: int) -> dict:
    """One-class protocol (Ruff et al. 2018): a fresh model on class `normal` only, scores for the whole test split."""
    from genbench.metrics.likelihood import model_input

    job = _JOB
    start = time.perf_counter()
    train, test = job.data.split("train"), job.data.split("test")
    model = build_model(job.params, job.model_name).fit(train.subset(train.y == normal, name=f"train class {normal}"),
                                                         seed=seed)
    if hasattr(model, "anomaly_score"):
        scores, name = torch.as_tensor(model.anomaly_score(test.x)), "anomaly_score()"
    else:
        scores = -torch.as_tensor(model.log_prob(model_input(model, job.data, "test", seed=seed)))
        name = f"-log_prob() ({model.likelihood_space} space)"
    scores = scores.double().cpu().numpy()
    if not np.isfinite(scores).all():
        raise ValueError(f"{job.model_name}: anomaly scores for normal class {normal}, seed {seed} contain NaN or inf")
    return {"task": "one_class", "seed": seed, "class": normal, "scores": scores, "score": name,
            "seconds": time.perf_counter() - start}


def model_size(model: Any) -> dict:
    """How many numbers a fitted model holds: the elements of its torch modules' parameters, else (numpy
    and scikit-learn models) of the arrays among its fitted attributes (names ending in '_'), so kNN counts
    its stored training images and a random forest its tree arrays."""
    modules = [v for k, v in vars(model).items() if k.endswith("_") and isinstance(v, torch.nn.Module)]
    if modules:
        unique = {id(p): p for m in modules for p in m.parameters()}
        return {"parameters": int(sum(p.numel() for p in unique.values())), "counted": "torch parameters"}
    seen: set[int] = set()

    def count(value: Any, depth: int = 0) -> int:
        if id(value) in seen or depth > 8:
            return 0
        seen.add(id(value))
        if isinstance(value, (np.ndarray, torch.Tensor)) and value.dtype != object:
            return int(value.size if isinstance(value, np.ndarray) else value.numel())
        if isinstance(value, np.ndarray):
            return sum(count(v, depth + 1) for v in value.ravel())
        if isinstance(value, (list, tuple)):
            return sum(count(v, depth + 1) for v in value)
        if isinstance(value, dict):
            return sum(count(v, depth + 1) for v in value.values())
        if type(value).__name__ == "Tree" and hasattr(value, "node_count"):  # sklearn's compiled tree:
            return int(value.value.size) + 4 * int(value.node_count)  # leaf values; feature, threshold, children
        if hasattr(value, "__dict__") and type(value).__module__.split(".")[0] in ("sklearn", "hmmlearn"):
            return sum(count(v, depth + 1) for v in vars(value).values())
        return 0

    total = sum(count(v) for k, v in vars(model).items() if k.endswith("_"))
    return {"parameters": total, "counted": "elements of fitted arrays"}


def provenance(root: str | Path = ".") -> dict:
    """What produced a record: the code's commit (and whether genbench/, stages/ or params.yaml differed
    from it), the time, the machine and the versions of the packages that compute the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "genbench", "stages", "params.yaml")
    packages = {}
    for name in ("torch", "torchvision", "torchmetrics", "scikit-learn", "numpy", "scipy", "hmmlearn", "dvc"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"commit": commit, "code_modified": bool(changed) if changed is not None else None,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "python": platform.python_version(),
            "packages": packages, "machine": _cpu_name(), "cores": len(os.sched_getaffinity(0)),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _run(task: tuple) -> dict:
    return _seed_task(task[1]) if task[0] == "seed" else _one_class_task(task[1], task[2])


def _worker_init() -> None:
    """One thread per worker; die with the stage (a killed stage must not leave workers writing)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    os.environ["GENBENCH_PROGRESS"] = "0"  # interleaved progress bars help nobody
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the stage died before prctl took effect
            os._exit(1)


def model_device(model: Any, configured: torch.device) -> torch.device:
    """Where `model` computes: the configured device for a model with a `device` setting (the torch
    models), else the CPU (scikit-learn and numpy models), whose seeds then run in parallel workers
    even on a GPU machine, and whose cost records say cpu."""
    return configured if "device" in model.get_params() else torch.device("cpu")


def worker_count(device: torch.device, tasks: int) -> int:
    if device.type != "cpu":
        return 1
    requested = os.environ.get("GENBENCH_WORKERS")
    if requested:
        if not requested.isdigit() or int(requested) < 1:
            raise ConfigError(f"GENBENCH_WORKERS must be a positive integer, got {requested!r}")
        return min(int(requested), tasks)
    return max(1, min(len(os.sched_getaffinity(0)), tasks))


def run_tasks(tasks: list[tuple], workers: int, label: str, run: Any = None) -> list[dict]:
    """Every task's result, in the order given; workers > 1 forks that many single-threaded processes.
    `run(task)`: a module-level function (default: this stage's seed and one-class tasks)."""
    run = run or _run
    results: dict[tuple, dict] = {}
    start = time.perf_counter()

    def done(task: tuple, result: dict) -> None:
        results[task] = result
        what = (f"seed {task[1]}" if task[0] == "seed" else f"seed {task[1]}, normal class {task[2]}"
                if task[0] == "one_class" else ", ".join(map(str, task)))
        print(f"{label}: {what} done ({len(results)}/{len(tasks)} tasks, {time.perf_counter() - start:.0f} s)",
              flush=True)

    if workers == 1:
        torch.set_num_threads(1)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            for task in tasks:
                done(task, run(task))
    else:
        import multiprocessing

        if torch.cuda.is_initialized():  # never fork a process with a CUDA context
            raise RuntimeError("CUDA is initialised in this process: refusing to fork workers; set GENBENCH_WORKERS=1")
        # Workers must start with SIGTERM's default action, or Pool.terminate() (on a failed task) waits
        # forever for a worker that swallows it: set it before forking instead of in the initializer (a race).
        handler = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)
        finally:
            signal.signal(signal.SIGTERM, handler)
        with pool:
            for task, result in zip(tasks, pool.imap(run, tasks, chunksize=1)):
                done(task, result)
            pool.close()  # let the workers finish cleanly; __exit__'s terminate() is for the error path
            pool.join()
    return [results[t] for t in tasks]


GRID_PADDING = 1  # pixels between the images of a saved grid

# --- evaluation of one seed ---------------------------------------------------------------------------


def evaluate_seed(job: Job, model: Any, seed: int) -> tuple[dict, dict, dict]:
    """One seed's record (today's per-model record), its per-test-image values for the bootstrap, and
    what it sampled (grid and figures are drawn for `job.figure_seed` only)."""
    from genbench.evaluator import predict
    from genbench.metrics.classification import classification_record
    from genbench.metrics.fid import frechet_distance
    from genbench.metrics.likelihood import log_likelihood_per_image, model_input, nll_record
    from genbench.metrics.representation import linear_probe

    data = job.data
    test = data.split("test")
    caps = capabilities(model)
    record: dict[str, Any] = {"seed": seed}
    per_image: dict[str, np.ndarray] = {}
    if "classify" in caps:
        proba = torch.as_tensor(np.asarray(model.predict_proba(test.x)), dtype=torch.float64)
        record["classification"] = classification_record(proba, test.y, data.num_classes, split="test")
        proba = proba.clamp_min(0)
        proba = proba / proba.sum(1, keepdim=True)
        per_image["classification.accuracy"] = (proba.argmax(1) == test.y).double().numpy()
        true = proba[torch.arange(len(test.y)), test.y].clamp(np.finfo(np.float64).eps, 1.0)
        per_image["classification.log_loss"] = (-true.log()).numpy()
    if "density" in caps:
        x = model_input(model, data, "test", seed=seed)
        common = dict(space=model.likelihood_space, dim=test.dim, levels=data.levels, split="test")
        log_prob = torch.as_tensor(model.log_prob(x))
        record["likelihood"] = nll_record(log_prob, info=model.likelihood_info, **common)
        nll = -log_likelihood_per_image(log_prob, model.likelihood_space, test.dim, data.levels).numpy()
        per_image["likelihood.nll_nats"] = nll
        per_image["likelihood.bits_per_dim"] = nll / (test.dim * math.log(2))
        if callable(getattr(model, "elbo", None)):
            record["likelihood_extra"] = [nll_record(torch.as_tensor(model.elbo(x)), info=model.elbo_info, **common)]
    if "represent" in caps:
        record["linear_probe"] = linear_probe(model, data.split("train"), test, seed=seed)
    net, evaluator = job.evaluator
    sample_info: dict[str, Any] = {"capable": "generate" in caps}
    if "generate" in caps:
        samples, labels, sample_info = draw_samples(job, model, seed)
        record.update(sample_quality(job, model, samples, labels, seed))
    if callable(getattr(model, "extra_metrics", None)):
        def classify(images: torch.Tensor) -> torch.Tensor:
            return predict(net, images).argmax(1)

        def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
            return frechet_distance(net, evaluator["feature_dim"], real, fake)

        record["extra"] = model.extra_metrics(test, classify=classify, fid=fid)
    return record, per_image, sample_info


def draw_samples(job: Job, model: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """protocol.fid_samples samples (class-balanced for conditional models); for the figure seed also
    the sample grid (one row per class when conditional) and the model's own figures."""
    from torchvision.utils import make_grid, save_image

    proto = protocol(job.params)
    n, classes = proto["fid_samples"], job.data.num_classes
    conditional = bool(getattr(model, "conditional", False))
    start = time.perf_counter()
    labels = torch.arange(n) % classes if conditional else None
    generator = torch.Generator().manual_seed(seed)
    samples = model.sample(n, y=labels, generator=generator) if conditional else model.sample(n, generator=generator)
    _check_images(job.model_name, samples, n)
    info = {"capable": True, "n": n, "seed": seed, "sample_seconds": time.perf_counter() - start,
            "conditional": conditional, "image_shape": list(samples.shape[1:])}
    if seed == job.figure_seed:
        out = job.samples_dir
        if conditional:
            per_row = max(1, proto["grid_samples"] // classes)
            y = torch.arange(classes).repeat_interleave(per_row)
            grid, nrow = model.sample(len(y), y=y, generator=torch.Generator().manual_seed(seed)), per_row
            names = job.data.meta.get("class_names") or [str(c) for c in range(classes)]
            grid_labels = {"row_labels": [f"y = {c}: {names[c]}" if names[c] != str(c) else f"y = {c}"
                                          for c in range(classes)]}
        else:
            grid, nrow = samples[: proto["grid_samples"]], int(math.sqrt(proto["grid_samples"]))
            grid_labels = {}
        with atomic_file(out / "grid.png") as tmp:
            save_image(make_grid(grid, nrow=nrow, padding=GRID_PADDING, pad_value=0.5), tmp, format="png")
        # what the report needs to label the grid's rows and columns and upscale it by whole pixels
        info["grid"] = {"file": "grid.png", "per_row": nrow, "n": len(grid), "padding": GRID_PADDING, **grid_labels}
        figures, layouts = {}, {}
        if callable(getattr(model, "figures", None)):
            test = job.data.split("test")
            for name, figure in model.figures(test, generator=torch.Generator().manual_seed(seed)).items():
                images, per_row_fig, figure_labels = (*figure, {})[:3]
                with atomic_file(out / f"figure-{name}.png") as tmp:
                    save_image(make_grid(images.clamp(0, 1), nrow=per_row_fig, padding=GRID_PADDING, pad_value=0.5),
                               tmp, format="png")
                figures[name] = f"figure-{name}.png"
                layouts[name] = {"file": figures[name], "per_row": per_row_fig, "n": len(images),
                                 "padding": GRID_PADDING, **figure_labels}
        info["figures"] = figures
        info["figure_layouts"] = layouts
    return samples, labels, info


def _check_images(model_name: str, images: torch.Tensor, n: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) != n:
        raise ValueError(f"{model_name}.sample({n}) must return an (n, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError(f"{model_name}.sample returned values outside [0, 1] or non-finite")


def sample_quality(job: Job, model: Any, samples: torch.Tensor, labels: torch.Tensor | None, seed: int) -> dict:
    """FID, precision/recall/density/coverage, memorisation, and CAS for conditional samples.

    A model whose samples live in another domain than the data (cyclegan: translated images)
    provides `sample_domain(x)`, mapping real images into that domain; the reference and training
    images are then compared in that domain."""
    from genbench.metrics.fid import frechet_distance
    from genbench.metrics.sample_quality import classification_accuracy_score, evaluator_features, memorisation, prdc

    proto = protocol(job.params)
    net, evaluator = job.evaluator
    data = job.data
    reference = data.split(proto["fid_reference_split"]).x
    train_x, test_x = data.split("train").x, data.split("test").x
    domain = getattr(model, "sample_domain", None)
    reference_domain = None  # the images as they are
    if callable(domain):
        reference, train_x, test_x = domain(reference), domain(train_x), domain(test_x)
        reference_domain = getattr(model, "sample_domain_label", f"{job.model_name}.sample_domain() of the images")
    features = {"features": "evaluator-cnn", "features_sha256": evaluator["sha256"], "feature_dim": evaluator["feature_dim"],
                "reference_split": proto["fid_reference_split"], "seed": seed}
    if reference_domain:
        features["reference_domain"] = reference_domain
    out = {"fid": {"value": frechet_distance(net, evaluator["feature_dim"], reference, samples),
                   "n_generated": len(samples), "n_reference": len(reference), **features}}
    out["prdc"] = {**prdc(evaluator_features(net, reference), evaluator_features(net, samples), k=proto["prdc_k"]),
                   "method": "Kynkäänniemi et al. 2019 (precision, recall); Naeem et al. 2020 (density, coverage)",
                   **features}
    out["memorisation"] = {**memorisation(train_x, test_x, samples), "space": "pixels (L2)", "seed": seed}
    if reference_domain:
        out["memorisation"]["reference_domain"] = reference_domain
    if labels is not None:
        recipe = evaluator.get("recipe") or {}
        cas = classification_accuracy_score(
            samples, labels, data.split("test"), image_shape=tuple(samples.shape[1:]), num_classes=data.num_classes,
            feature_dim=evaluator["feature_dim"], epochs=recipe.get("epochs", 30), batch_size=recipe.get("batch_size", 64),
            lr=recipe.get("lr", 1e-3), seed=seed, device=job.device)
        out["cas"] = {**cas, "real_data_accuracy": evaluator["test_accuracy"], "split": "test",
                      "features_sha256": evaluator["sha256"],
                      "classifier": "the evaluator architecture and training recipe (Ravuri & Vinyals 2019)"}
    return out


# --- summarising the seeds ----------------------------------------------------------------------------


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def mean_record(records: list[dict]) -> dict:
    """Numeric leaves averaged over the seeds' records; other leaves (estimator, method, hashes) must agree."""
    first = records[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in records]
        if key == "seed":
            continue
        if isinstance(value, dict):
            out[key] = mean_record([v if isinstance(v, dict) else {} for v in values])
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out[key] = [mean_record([r[key][i] for r in records]) for i in range(len(value))]
        elif _numeric(value) and key not in COUNT_KEYS and all(_numeric(v) for v in values):
            out[key] = float(np.mean(values))
        else:
            out[key] = value
    return out


def _leaves(record: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in record.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, f"{path}."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(_leaves(item, f"{path}.{i}."))
        elif _numeric(value) and key not in COUNT_KEYS:
            out[path] = value
    return out


# Natural ranges: a t interval of a bounded quantity can cross its bound, which no reader wants to see.
FRACTIONS = {"accuracy", "precision", "recall", "coverage", "share", "auroc_mean", "ece"}


def _clip(path: str, interval: dict) -> dict:
    leaf = path.rsplit(".", 1)[-1]
    low, high = (0.0, 1.0) if leaf in FRACTIONS or path.startswith("anomaly.auroc_per_class") else (None, None)
    if leaf in {"value", "log_loss", "nll_nats", "bits_per_dim", "density"} or leaf.endswith("_seconds"):
        low = 0.0  # FIDs, losses, NLLs of discrete data (a probability <= 1), densities, times
    if low is not None and interval["low"] is not None:
        interval["low"] = max(interval["low"], low)
    if high is not None and interval["high"] is not None:
        interval["high"] = min(interval["high"], high)
    return interval


def intervals(records: list[dict], per_image: list[dict], scores: np.ndarray | None,
              is_anomaly: np.ndarray | None) -> dict[str, dict]:
    """A 95% interval for every metric: across seeds, plus a bootstrap over test images where the
    metric is a mean over images (accuracy, log-loss, NLL, bits/dim) or an AUROC; clipped to the
    metric's range (e.g. [0, 1] for an accuracy)."""
    from genbench.stats import summarise

    leaves = [_leaves(r) for r in records]
    out = {}
    for path in leaves[0]:
        values = [leaf.get(path) for leaf in leaves]
        if not all(_numeric(v) for v in values):
            continue
        if path in per_image[0]:
            out[path] = summarise(values, np.stack([p[path] for p in per_image]), kind="mean")
        elif path == "anomaly.auroc_mean" and scores is not None:
            out[path] = summarise(values, scores, kind="auroc", is_anomaly=is_anomaly)
        else:
            out[path] = summarise(values)
        out[path] = _clip(path, out[path])
    return out


# --- the stage ------------------------------------------------------------------------------------------


def run_model(params: dict[str, Any], dataset: str, model_name: str, root: str | Path = ".") -> dict:
    """Train, sample and evaluate `model_name` on `dataset` once per seed; write its metrics record."""
    global _JOB
    from genbench.evaluator import load_evaluator
    from genbench.metrics import anomaly as anomaly_metrics

    check_selection(params, dataset=dataset, model=model_name)
    params = dataset_params(params, dataset)
    stage_start = time.perf_counter()
    paths = Paths(root)
    seeds = seeds_of(params)
    proto = protocol(params)
    probe = build_model(params, model_name)  # checks the hyperparameters before any work
    device = model_device(probe, device_of(params))
    data = PreparedData(paths.data(dataset))
    evaluator = load_evaluator(paths.evaluator(dataset))
    caps = capabilities(probe)
    normal = proto["anomaly"]["normal_classes"]
    classes = list(range(data.num_classes)) if normal == "all" else normal
    if not isinstance(classes, list) or not all(isinstance(c, int) and 0 <= c < data.num_classes for c in classes):
        raise ConfigError(f"params.yaml: 'protocol.anomaly.normal_classes' must be 'all' or a list of class indices "
                          f"in 0..{data.num_classes - 1}")
    not_applicable = {}
    if "classify" not in caps:
        not_applicable["classification"] = "no predict_proba()"
    if "density" not in caps:
        not_applicable["likelihood"] = "no log_prob()"
    if "generate" not in caps:
        for key in ("fid", "prdc", "memorisation"):
            not_applicable[key] = f"{model_name} has no sample() method"
    if probe.kind == "discriminative":
        not_applicable["anomaly"] = "a classifier needs two or more classes to train; the one-class protocol gives it one"
    elif "detect" not in caps and "density" not in caps:
        not_applicable["anomaly"] = f"{model_name} has neither anomaly_score() nor log_prob()"
    elif model_name in proto["anomaly"]["skip_models"]:
        not_applicable["anomaly"] = f"not run on {dataset}: listed in protocol.anomaly.skip_models (params.yaml says why)"
    one_class = "anomaly" not in not_applicable

    # longest first: the seeds' full fits, then the one-class fits
    tasks = [("seed", s) for s in seeds] + ([("one_class", s, c) for s in seeds for c in classes] if one_class else [])
    workers = worker_count(device, len(tasks))
    label = f"{dataset}/{model_name}"
    with atomic_directory(paths.model(dataset, model_name)) as model_dir, \
            atomic_directory(paths.samples(dataset, model_name)) as samples_dir:
        _JOB = Job(params, dataset, model_name, data, evaluator, device, Path(model_dir), Path(samples_dir), seeds[0])
        try:
            results = run_tasks(tasks, workers, label)
        finally:
            _JOB = None
        by_seed = {r["seed"]: r for r in results if r["task"] == "seed"}
        sample_info = by_seed[seeds[0]]["sample_info"]
        if not sample_info["capable"]:
            sample_info["reason"] = f"{model_name} has no sample() method"
        write_json(Path(samples_dir) / "info.json", sample_info)

    test_y = data.split("test").y.numpy()
    records, per_image = [], []
    scores = np.zeros((len(seeds), len(classes), len(test_y))) if one_class else None
    is_anomaly = np.stack([test_y != c for c in classes]) if one_class else None
    for i, seed in enumerate(seeds):
        record = by_seed[seed]["record"]
        if one_class:
            fits = {r["class"]: r for r in results if r["task"] == "one_class" and r["seed"] == seed}
            per_class = {}
            for j, c in enumerate(classes):
                scores[i, j] = fits[c]["scores"]
                per_class[str(c)] = anomaly_metrics.auroc(torch.from_numpy(fits[c]["scores"]), torch.from_numpy(test_y != c))
            record["anomaly"] = {"auroc_mean": float(np.mean(list(per_class.values()))), "auroc_per_class": per_class,
                                 "normal_classes": classes, "protocol": anomaly_metrics.PROTOCOL,
                                 "score": fits[classes[0]]["score"], "split": "test", "n": len(test_y)}
            record["cost"]["anomaly_seconds"] = sum(f["seconds"] for f in fits.values())
        cost = record["cost"]
        cost["total_seconds"] = sum(v for k, v in cost.items() if k.endswith("_seconds"))
        records.append(record)
        per_image.append(by_seed[seed]["per_image"])

    record = {
        "dataset": dataset, "model": model_name, "kind": probe.kind, "capabilities": caps,
        "hyperparameters": probe.get_params(), "seeds": seeds, "not_applicable": not_applicable,
        "summary": mean_record(records),
        "intervals": intervals(records, per_image, scores, is_anomaly),
        "per_seed": records,
        "stage_seconds": time.perf_counter() - stage_start,
        "workers": workers,
        "device": str(device),
        "provenance": provenance(root),
    }
    _write_curves(paths.curve(dataset, model_name), [(s, by_seed[s]["history"]) for s in seeds])
    write_json(paths.metrics(dataset, model_name), record)
    return record


def _write_curves(path: Path, histories: list[tuple[int, list[dict]]]) -> None:
    rows = [{"seed": seed, **row} for seed, history in histories for row in history]
    names = sorted({k for row in rows for k in row} - {"seed", "epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["seed", "epoch", *(names or ["loss"])])
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())

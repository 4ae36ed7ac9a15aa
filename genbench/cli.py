"""`genbench` command line: one subcommand per pipeline stage (the generated DVC stages call these),
`pipelines` to regenerate the dvc.yaml files, and `list`. Expected failures (bad params, missing data,
a diverged loss) print one clear line.

The stage functions are named by strings (STAGES) and imported only when run, so that a stage imports
only its own code: genbench.dvc_pipelines derives each stage's DVC deps from those imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from genbench.config import ConfigError, load_params

# subcommand -> (module, function, positional arguments)
STAGES = {
    "check": ("genbench.dvc_pipelines", "run_check", ()),
    "prepare": ("genbench.data.prepare", "run_prepare", ("dataset",)),
    "evaluator": ("genbench.pinned_evaluator", "run_evaluator", ("dataset",)),
    "model": ("genbench.runner", "run_model", ("dataset", "model")),
    "summary": ("genbench.summary", "run_summary", ("dataset", "model")),
    "compare": ("genbench.comparisons", "run_compare", ("dataset",)),
    "learning_curve": ("genbench.studies", "run_learning_curve", ("dataset", "model")),
    "augmentation": ("genbench.studies", "run_augmentation", ("dataset", "model")),
    "report": ("genbench.report", "run_report", ("dataset",)),
    "index": ("genbench.report", "run_index", ()),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genbench", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="repository root where outputs go (default: .)")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {
        "check": "check that params.yaml names registered datasets and models and that the pipelines are current",
        "prepare": "cut the fixed splits of a dataset",
        "evaluator": "check the pinned FID feature network of a dataset (train one if there is none)",
        "model": "train, sample and evaluate a model on a dataset, once per seed; store its raw outputs",
        "summary": "a model's means over seeds and 95% intervals, from its stored raw outputs",
        "compare": "paired verdicts: every model against the best one per ranked metric, from the raw outputs",
        "learning_curve": "fit a classifier on stratified subsets of the training split, once per seed",
        "augmentation": "fit the augmentation classifier on a real subset plus a generator's samples "
                        "(model real_only: on real images only)",
        "report": "write reports/<dataset>/",
        "index": "write reports/index.html",
    }
    for name, (_, _, positional) in STAGES.items():
        p = sub.add_parser(name, help=helps[name])
        for argument in positional:
            p.add_argument(argument)
    sub.choices["evaluator"].add_argument(
        "--retrain", action="store_true",
        help="train the feature network anew and overwrite the pinned weights (then rerun and commit)")
    p = sub.add_parser("pipelines", help="regenerate dvc.yaml and pipelines/<dataset>/dvc.yaml from params.yaml")
    p.add_argument("--check", action="store_true", help="only say whether they are current (exit 1 if not)")
    for name, verb in (("enable", "on: `dvc repro` builds it"), ("disable", "off: `dvc repro` leaves it alone")):
        p = sub.add_parser(name, help=f"turn a dataset under datasets: {verb} (its committed results stay "
                                      "browsable either way); sets its `enabled` in params.yaml and regenerates the pipelines")
        p.add_argument("dataset")
    sub.add_parser("list", help="list registered datasets and models")
    p = sub.add_parser("select", help="fit a model once per candidate setting and score it on the validation split "
                                      "only (benchmarks/selection/<dataset>-<model>.json)")
    p.add_argument("dataset")
    p.add_argument("model")
    p.add_argument("grid", nargs="*", help="key=value[,value...] per hyperparameter, e.g. epochs=50,200")
    p.add_argument("--seeds", default="0", help="comma-separated seeds per candidate (default: 0)")
    args = parser.parse_args(argv)

    try:
        if args.command == "list":
            from genbench.data import dataset_names
            from genbench.models import model_names

            print("datasets:", ", ".join(dataset_names()))
            print("models:  ", ", ".join(model_names()))
            return 0
        params = load_params(args.params)
        if args.command == "pipelines":
            return _pipelines(params, args.check, args.root)
        if args.command in ("enable", "disable"):
            return _switch(args.params, args.dataset, args.command == "enable", args.root)
        if args.command == "select":
            from genbench.selection import parse_grid, run_selection

            seeds = [int(s) for s in args.seeds.split(",")]
            run_selection(params, args.dataset, args.model, parse_grid(args.grid), seeds, root=args.root)
            return 0
        module, function, positional = STAGES[args.command]
        run = getattr(importlib.import_module(module), function)
        options = {"retrain": True} if getattr(args, "retrain", False) else {}
        with _in_process_engine(args.command):
            run(params, *[getattr(args, k) for k in positional], root=args.root, **options)

        from genbench.dvc_pipelines import check_declared

        check_declared(args.command, getattr(args, "dataset", None), getattr(args, "model", None), root=args.root)
    except (ConfigError, FileNotFoundError, RuntimeError) as error:
        # by name, so that the CLI imports no stage's code (a stage's imports are its DVC deps)
        if isinstance(error, RuntimeError) and type(error).__name__ not in EXPECTED_ERRORS:
            raise
        print(f"genbench {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _in_process_engine(command: str):
    """`genbench <stage>` by hand computes here: a Dask cluster of one single-threaded worker in this
    process (no port), so the check below sees every module the stage imported. `dvc repro` runs the stage
    scripts instead, which use the shared engine (genbench.engine)."""
    from contextlib import nullcontext

    from genbench.engine import TASKLESS, in_process

    return nullcontext() if command in TASKLESS else in_process()


# genbench.training.TrainingDiverged (a NaN loss), genbench.data.torchvision_datasets.DatasetUnavailable,
# genbench.engine.EngineError
EXPECTED_ERRORS = ("TrainingDiverged", "DatasetUnavailable", "EngineError")


def _pipelines(params: dict, check: bool, root: str) -> int:
    from genbench.dvc_pipelines import stale_files, write_pipelines

    if check:
        stale = stale_files(params, root)
        for path in stale:
            print(f"{path} is not current: run `uv run genbench pipelines`")
        return 1 if stale else 0
    changed = write_pipelines(params, root)
    print("\n".join(f"wrote {path}" if (Path(root) / path).exists() else
                    f"removed {path} (its dataset is turned off or not under datasets:; its dvc.lock and results stay)"
                    for path in changed) or "the pipelines are current")
    return 0


def _switch(params_path: str, dataset: str, enabled: bool, root: str) -> int:
    """`genbench enable|disable <dataset>`: the one edit to params.yaml (comments and layout kept), then the
    pipelines written anew. `enabled` is no data setting, so what was current stays current."""
    import io

    import yaml
    from ruamel.yaml import YAML

    from genbench.dvc_pipelines import expected_files, write_pipelines
    from genbench.io import write_text

    editor = YAML()
    editor.width = 4096
    editor.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    document = editor.load(Path(params_path).read_text())
    datasets = document.get("datasets") or {}
    if dataset not in datasets:
        raise ConfigError(f"dataset '{dataset}' is not under 'datasets:' in {params_path} "
                          f"({', '.join(datasets) or 'none'}): add its settings there first (README: Datasets)")
    if datasets[dataset] is None:
        datasets[dataset] = {}
    datasets[dataset]["enabled"] = enabled
    text = io.StringIO()
    editor.dump(document, text)
    params = yaml.safe_load(text.getvalue())
    expected_files(params, root)  # names and settings checked before anything is written
    mode = Path(params_path).stat().st_mode
    write_text(Path(params_path), text.getvalue())
    Path(params_path).chmod(mode)  # the atomic write's temporary file was private
    write_pipelines(params, root)
    state = ("on: `uv run dvc repro` builds it" if enabled else
             "off: `uv run dvc repro` leaves it alone; its committed results stay linked from reports/index.html")
    print(f"{dataset} is {state} (datasets.{dataset}.enabled: {str(enabled).lower()} in {params_path}; "
          "pipelines regenerated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`genbench` command line: one subcommand per pipeline stage (the DVC stages call these), plus
listings. Expected failures (bad params, missing data, a diverged loss) print one clear line."""

from __future__ import annotations

import argparse
import sys

from genbench import pipeline
from genbench.config import ConfigError, load_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genbench", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    parser.add_argument("--root", default=".", help="repository root where outputs go (default: .)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("prepare", "evaluator"):
        sub.add_parser(name, help=f"the {name} stage").add_argument("dataset")
    for name in ("train", "sample", "anomaly", "evaluate"):
        p = sub.add_parser(name, help=f"the {name} stage")
        p.add_argument("dataset")
        p.add_argument("model")
    sub.add_parser("report", help="the report stage")
    sub.add_parser("list", help="list registered datasets and models")
    args = parser.parse_args(argv)

    from genbench.training import TrainingDiverged

    try:
        if args.command == "list":
            from genbench.data import dataset_names
            from genbench.models import model_names

            print("datasets:", ", ".join(dataset_names()))
            print("models:  ", ", ".join(model_names()))
            return 0
        params = load_params(args.params)
        run = getattr(pipeline, f"run_{args.command}")
        keys = [k for k in ("dataset", "model") if hasattr(args, k)]
        run(params, *[getattr(args, k) for k in keys], root=args.root)
    except (ConfigError, TrainingDiverged, FileNotFoundError) as error:
        print(f"genbench {args.command}: error: {error}", file=sys.stderr)
        return 1
    except RuntimeError as error:
        if type(error).__name__ == "DatasetUnavailable":
            print(f"genbench {args.command}: error: {error}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

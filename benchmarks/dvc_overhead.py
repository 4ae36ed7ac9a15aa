"""DVC's own cost per stage, as a function of the stage layout (issue 8: choose a layout that scales).

Builds a throwaway git+DVC repository whose stages do no work (`cmd` writes one small file) but have
the dependency shape of genbench's per-(dataset, model) stages: ~20 shared code files, the model's own
file, its params section, the dataset directory. Then times a full `dvc repro`, a no-op `dvc repro`
and `dvc status`. Layouts:

  single       one dvc.yaml: matrix over datasets x models (what genbench uses)
  per-dataset  one dvc.yaml + dvc.lock per dataset (pipelines/<dataset>/dvc.yaml), same stages

    uv run python benchmarks/dvc_overhead.py --datasets 1 4 --models 26 --layout single per-dataset
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SHARED_FILES = int(os.environ.get("SHARED_FILES", 20))


def build(root: Path, datasets: list[str], models: list[str], layout: str) -> None:
    (root / "code").mkdir(parents=True)
    for i in range(SHARED_FILES):
        (root / "code" / f"shared{i}.py").write_text(f"# shared {i}\n" * 50)
    for m in models:
        (root / "code" / f"{m}.py").write_text(f"# model {m}\n" * 50)
    params = {"seeds": [0, 1, 2], "datasets": {d: {"x": 1} for d in datasets},
              "models": {m: {"epochs": 10, "lr": 0.001, "width": 32} for m in models}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shared = [f"code/shared{i}.py" for i in range(SHARED_FILES)]

    def stages(dataset_expr: str, matrix: dict) -> dict:
        write = "mkdir -p {o} && echo done > {o}/result.json"
        return {
            "prepare": {**({"matrix": matrix["prepare"]} if matrix.get("prepare") else {}),
                        "cmd": write.format(o=f"data/{dataset_expr}"), "deps": shared[:3],
                        "params": [f"datasets.{dataset_expr}"], "outs": [f"data/{dataset_expr}"]},
            "run": {"matrix": matrix["run"], "cmd": write.format(o=f"results/{dataset_expr}/${{item.model}}"),
                    "deps": shared + ["code/${item.model}.py", f"data/{dataset_expr}"],
                    "params": ["seeds", "models.${item.model}"],
                    "outs": [{f"results/{dataset_expr}/${{item.model}}": {"cache": False}}]},
        }

    if layout == "single":
        body = stages("${item.dataset}", {"prepare": {"dataset": "${datasets}"},
                                          "run": {"dataset": "${datasets}", "model": "${models}"}})
        (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": body}, sort_keys=False))
    else:
        for d in datasets:
            body = stages(d, {"run": {"model": "${models}"}})
            for stage in body.values():
                stage["wdir"] = "../.."
            (root / "pipelines" / d).mkdir(parents=True)
            (root / "pipelines" / d / "dvc.yaml").write_text(
                yaml.safe_dump({"vars": ["../../params.yaml"], "stages": body}, sort_keys=False))
        # `dvc repro` at the root runs the report, and with it every upstream per-dataset stage
        report = {"cmd": "mkdir -p reports && echo done > reports/index.html", "deps": ["results"],
                  "outs": [{"reports": {"cache": False}}]}
        (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"report": report}}, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")


def dvc(root: Path, *args: str) -> float:
    start = time.perf_counter()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"dvc {' '.join(args)} failed in {root}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--models", type=int, default=26)
    parser.add_argument("--layout", nargs="+", default=["single", "per-dataset"], choices=["single", "per-dataset"])
    args = parser.parse_args()
    print("| layout | datasets | stages | full repro (s) | s per stage | lock kB | no-op repro (s) | status (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for layout in args.layout:
        for n in args.datasets:
            datasets = [f"ds{i}" for i in range(n)]
            models = [f"model{i:02d}" for i in range(args.models)]
            root = Path(tempfile.mkdtemp(prefix="dvc-overhead-"))
            try:
                build(root, datasets, models, layout)
                stages = n * (len(models) + 1) + (layout == "per-dataset")
                full = dvc(root, "repro")
                locks = sum(p.stat().st_size for p in root.rglob("dvc.lock"))
                noop = dvc(root, "repro")
                status = dvc(root, "status")
                print(f"| {layout} | {n} | {stages} | {full:.1f} | {full / stages:.2f} | {locks / 1024:.0f} | "
                      f"{noop:.1f} | {status:.1f} |", flush=True)
            finally:
                shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

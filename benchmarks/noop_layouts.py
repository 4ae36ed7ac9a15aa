"""What a no-op `dvc repro` would cost with fewer dependency entries per stage (issue 18, item 6: at most 3 s).

A cProfile of today's no-op on digits (79 stages) spends about a quarter of its time parsing params.yaml
with ruamel's round-trip loader, once per stage that has params (53 times), and most of the rest looking up
the stages' 1,607 dependency entries (each model stage lists the ~20 genbench files it imports). This
script measures two ways out, on a copy of a finished workspace (never this repository: it rewrites the
copy's pipeline and records it with `dvc commit -f`, which would record results the stages did not compute):

  manifest  each stage depends on one file, pipelines/<dataset>/code/<stage>.sha256, listing the sha256
            of the code files it lists today (the `check` stage would write them: it already depends on
            every genbench file and runs first), instead of on those files themselves
  json      each stage reads its params from pipelines/<dataset>/params.json, params.yaml as JSON
            (DVC parses JSON with the standard library; the keys and values are the same)

    uv run python benchmarks/noop_layouts.py /path/to/finished/clone /tmp/layouts digits
    # then, for each variant printed, e.g.:  cd /tmp/layouts/manifest+json && <venv>/bin/dvc repro

It prints the copies it made; time them against the unchanged copy side by side (the README's rule).

The generated pipelines have since taken the manifest+json layout (genbench.dvc_pipelines, one manifest per
distinct stage code under pipelines/code/, written by `check`): run this on a workspace of a commit before
that (b144ead) to compare the layouts again; on a current one, `baseline` is already manifest+json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("baseline", "manifest", "json", "manifest+json")


def rewrite(copy: Path, dataset: str, variant: str) -> None:
    path = copy / "pipelines" / dataset / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    params = yaml.safe_load((copy / "params.yaml").read_text())
    if "json" in variant:
        (copy / "pipelines" / dataset / "params.json").write_text(json.dumps(params, sort_keys=True))
    if "manifest" in variant:
        (copy / "pipelines" / dataset / "code").mkdir(exist_ok=True)
    for name, stage in pipeline["stages"].items():
        if "manifest" in variant:
            deps = stage.get("deps", [])
            code = [d for d in deps if isinstance(d, str) and d.startswith(("genbench/", "stages/")) and (copy / d).is_file()]
            manifest = Path("pipelines") / dataset / "code" / f"{name}.sha256"
            (copy / manifest).write_text("".join(f"{hashlib.sha256((copy / c).read_bytes()).hexdigest()}  {c}\n"
                                                 for c in code))
            stage["deps"] = [str(manifest)] + [d for d in deps if d not in code]
        if "json" in variant and stage.get("params"):
            stage["params"] = [{f"pipelines/{dataset}/params.json": stage["params"]}]
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, help="a clone where `dvc repro` has finished (dvc status clean)")
    parser.add_argument("out", type=Path, help="where the copies go (one folder per variant)")
    parser.add_argument("dataset", nargs="?", default="digits")
    args = parser.parse_args()
    workspace, out = args.workspace.resolve(), args.out.resolve()
    if REPO_ROOT in (workspace, out) or REPO_ROOT in out.parents:
        sys.exit(f"{workspace if workspace == REPO_ROOT else out}: use a copy, never this repository")
    dvc = shutil.which("dvc") or sys.exit("dvc is not on PATH: run this with `uv run`")
    for variant in VARIANTS:
        copy = out / variant
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(workspace, copy, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
        if variant != "baseline":
            rewrite(copy, args.dataset, variant)
            subprocess.run([dvc, "commit", "--force", "--quiet"], cwd=copy, check=True)
        status = subprocess.run([dvc, "status", "--json"], cwd=copy, check=True, capture_output=True, text=True).stdout
        if status.strip() != "{}":
            sys.exit(f"{copy}: dvc status is not clean after the rewrite: {status[:500]}")
        lock = copy / "pipelines" / args.dataset / "dvc.lock"
        entries = lock.read_text().count("- path:")
        print(f"{variant}: {copy} ({entries} dependency and output entries in its dvc.lock)")


if __name__ == "__main__":
    main()

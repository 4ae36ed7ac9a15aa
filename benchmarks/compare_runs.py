"""Are two runs' numbers the same? Timings, provenance and machine details excluded; everything else compared
exactly (floats as written, no tolerance).

    # every committed result file (JSON, CSV) of a dataset at a git revision against a workspace's, leaf by leaf;
    # --per-seed: only the summaries' per-seed records (what a rerun must reproduce), model by model
    uv run python benchmarks/compare_runs.py committed b144ead /path/to/workspace digits [--per-seed]
    # two workspaces' stored raw outputs of some models: every .npy byte for byte, stage.json leaf by leaf
    uv run python benchmarks/compare_runs.py raw /path/to/a /path/to/b digits gmm cnn vae

Used to check a full rerun against the committed results (README: Results on digits, Provenance).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
from pathlib import Path

# keys whose values depend on the machine or the moment, not on the computation
VOLATILE = re.compile(r"seconds|provenance|workers|^device$|time|host|machine|commit|packages|cost|peak|memory|rss")


def leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            if not VOLATILE.search(str(key)):
                yield from leaves(item, path + (str(key),))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, path + (str(index),))
    else:
        yield path, value


def records(text: str, name: str) -> dict:
    if name.endswith(".json"):
        return dict(leaves(json.loads(text)))
    return {(str(i), key): value for i, row in enumerate(csv.DictReader(io.StringIO(text)))
            for key, value in row.items() if not VOLATILE.search(key)}


def differences(a: dict, b: dict) -> list:
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


def committed(revision: str, workspace: Path, dataset: str, per_seed: bool) -> int:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout

    files = [f for f in git("ls-tree", "-r", "--name-only", revision, f"results/{dataset}").split()
             if f.endswith((".json", ".csv")) and (not per_seed or f.endswith("/summary.json"))]
    total = differing = 0
    for name in files:
        new = workspace / name
        if not new.exists():
            print(f"{name}: missing in {workspace}")
            differing += 1
            continue
        old, now = records(git("show", f"{revision}:{name}"), name), records(new.read_text(), name)
        if per_seed:
            old = {k: v for k, v in old.items() if k[0] == "per_seed"}
            now = {k: v for k, v in now.items() if k[0] == "per_seed"}
        bad = differences(old, now)
        total += len(old)
        differing += len(bad)
        if bad:
            fields = sorted({k[2] if per_seed and len(k) > 2 else k[0] for k, _, _ in bad})
            print(f"{name}: {len(bad)} of {len(old)} differ ({', '.join(fields)}); first: {bad[0]}")
    print(f"{len(files)} files, {total} leaves, {differing} differ")
    return differing


def raw(a: Path, b: Path, dataset: str, models: list[str]) -> int:
    differing = 0
    for model in models:
        ra, rb = (root / "results" / dataset / model / "raw" for root in (a, b))
        files = sorted(f.relative_to(ra) for f in ra.rglob("*") if f.is_file())
        if not files:
            raise SystemExit(f"{ra} holds no raw outputs: run the model's stage there first")
        bad = [f for f in files if not (rb / f).exists() or (
            differences(records((ra / f).read_text(), ".json"), records((rb / f).read_text(), ".json"))
            if f.suffix == ".json" else (ra / f).read_bytes() != (rb / f).read_bytes())]
        differing += len(bad)
        print(f"{model}: {len(files) - len(bad)} of {len(files)} raw files identical" +
              (f"; differ: {[str(f) for f in bad[:5]]}" if bad else ""))
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("committed", help="a git revision's committed results against a workspace's")
    c.add_argument("revision")
    c.add_argument("workspace", type=Path)
    c.add_argument("dataset")
    c.add_argument("--per-seed", action="store_true", help="only the summaries' per-seed records")
    r = sub.add_parser("raw", help="two workspaces' raw outputs")
    r.add_argument("a", type=Path)
    r.add_argument("b", type=Path)
    r.add_argument("dataset")
    r.add_argument("models", nargs="+")
    args = parser.parse_args()
    differing = (committed(args.revision, args.workspace, args.dataset, args.per_seed) if args.command == "committed"
                 else raw(args.a, args.b, args.dataset, args.models))
    raise SystemExit(1 if differing else 0)


if __name__ == "__main__":
    main()

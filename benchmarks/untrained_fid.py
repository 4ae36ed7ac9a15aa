"""FID of each trained deep generative model next to the same model untrained.

The issue's bar for a trained model is "FID far below an untrained model's". An untrained model
here is the params.yaml model fitted for one epoch with learning rate 0: the weights stay at their
seeded initialisation (the autoencoder still fits its code mixture, on untrained codes). Its 1000
samples are scored exactly as the evaluate stage scores the trained model's (same evaluator
features, same reference split, same `sample_domain` mapping for cyclegan).

Run after `uv run dvc repro` (it reads evaluators/, data/ and metrics/):

    uv run python benchmarks/untrained_fid.py --dataset digits

and it writes benchmarks/results/untrained_fid_<dataset>.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from genbench.config import load_params
from genbench.data.prepare import PreparedData
from genbench.io import read_json
from genbench.metrics.fid import frechet_distance
from genbench.evaluator import load_evaluator
from genbench.params import Paths, build_model, protocol, seeds_of

DEEP_MODELS = ("autoencoder", "vae", "gan", "dcgan", "cgan", "cyclegan", "ddpm")


def untrained(params: dict, name: str):
    hyper = dict(params["models"][name], epochs=1, lr=0.0)
    return build_model(params | {"models": params["models"] | {name: hyper}}, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    params, paths = load_params(Path(args.root) / "params.yaml"), Paths(args.root)
    proto, seed = protocol(params), seeds_of(params)[0]
    data = PreparedData(paths.data(args.dataset))
    train, reference = data.split("train"), data.split(proto["fid_reference_split"])
    net, evaluator = load_evaluator(paths.evaluator(args.dataset))
    rows = []
    for name in [m for m in DEEP_MODELS if m in params["models"]]:
        start = time.perf_counter()
        model = untrained(params, name).fit(train, seed=seed)
        n = proto["fid_samples"]
        generator = torch.Generator().manual_seed(seed)
        if getattr(model, "conditional", False):
            samples = model.sample(n, y=torch.arange(n) % data.num_classes, generator=generator)
        else:
            samples = model.sample(n, generator=generator)
        real = model.sample_domain(reference.x) if callable(getattr(model, "sample_domain", None)) else reference.x
        fid_untrained = frechet_distance(net, evaluator["feature_dim"], real, samples)
        trained = read_json(paths.metrics(args.dataset, name))["summary"]["fid"]["value"]  # mean over seeds
        rows.append((name, trained, fid_untrained, time.perf_counter() - start))
        print(f"{name}: trained {trained:.1f}, untrained {fid_untrained:.1f}", flush=True)
    lines = [f"# FID on {args.dataset}: trained vs untrained (1 epoch at lr 0), {proto['fid_samples']} samples, "
             f"reference split '{proto['fid_reference_split']}', evaluator {evaluator['sha256'][:12]}; "
             f"trained = mean over seeds {seeds_of(params)}, untrained = seed {seed}",
             "", f"Command: `uv run python benchmarks/untrained_fid.py --dataset {args.dataset}` after `uv run dvc repro`.", "",
             "| model | FID trained | FID untrained | ratio | seconds (untrained fit + sample + FID) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {n} | {t:.1f} | {u:.1f} | {u / t:.0f}x | {s:.1f} |" for n, t, u, s in rows]
    real_fid = evaluator.get("reference_fid", {}).get("value")
    if real_fid is not None:
        lines += ["", f"Real data (train vs test split) FID: {real_fid:.1f}."]
    out = Path(args.root) / "benchmarks" / "results" / f"untrained_fid_{args.dataset}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()

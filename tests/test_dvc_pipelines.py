"""The generated DVC pipelines: current with params.yaml and with what each stage's code imports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genbench.config import ConfigError, load_params
from genbench.dvc_pipelines import (CODE_DIR, HARNESS, PARAMS_FILE, _imports, check_declared, check_outputs,
                                    code_manifest, expected_files, manifest_paths, module_files, run_check,
                                    stage_code, stage_codes, stale_files, write_pipelines)

ROOT = Path(__file__).resolve().parents[1]


def resolved(stages: dict, codes: dict[str, list[str]]) -> dict:
    """Generated stages with each code manifest replaced by the files it stands for, and params as bare keys."""
    out = {}
    for name, stage in stages.items():
        deps = [f for d in stage["deps"] for f in (codes[d] if d in codes else [d])]
        params = [k for entry in stage.get("params", []) for k in ([entry] if isinstance(entry, str) else
                                                                    [k for keys in entry.values() for k in keys])]
        out[name] = {**stage, "deps": deps, "params": params}
    return out


def test_committed_pipelines_match_params_and_imports():
    """Fails when a model's imports, params.yaml's models/datasets, or the dvc.yaml files changed
    without `uv run genbench pipelines`."""
    assert stale_files(load_params(ROOT / "params.yaml"), ROOT) == []


def test_committed_code_manifests_and_params_copy_are_current():
    """Fails when code or params.yaml changed without `uv run dvc repro` (whose check stage rewrites them): the
    committed results would then not be those of the committed code."""
    expected = check_outputs(load_params(ROOT / "params.yaml"), ROOT)
    stale = sorted(path for path, text in expected.items()
                   if not (ROOT / path).exists() or (ROOT / path).read_text() != text)
    unused = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CODE_DIR).glob("*.sha256")
                    if str(p.relative_to(ROOT)) not in expected)
    assert (stale, unused) == ([], []), "run `uv run dvc repro` (or `uv run dvc repro check`) and commit the result"


@pytest.mark.parametrize("model, needs, not_needed", [
    ("dbn", {"genbench/models/rbm.py", "genbench/models/ais.py"}, {"genbench/models/nets.py"}),
    ("gan", {"genbench/models/adversarial.py", "genbench/models/parzen.py", "genbench/models/nets.py"}, {"genbench/models/ais.py"}),
    ("gmm", {"genbench/models/gmm.py", "genbench/models/base.py"}, {"genbench/models/nets.py", "genbench/models/vae.py"}),
])
def test_model_stage_depends_on_what_its_code_imports(model, needs, not_needed):
    deps = set(stage_code("model", model))
    shared = {"stages/model.py", "genbench/runner.py", "genbench/params.py", "genbench/data/__init__.py",
              "genbench/data/prepare.py", "genbench/evaluator.py", "genbench/training.py",
              "genbench/metrics/fid.py", "genbench/metrics/likelihood.py"}
    assert shared | needs <= deps
    assert not deps & not_needed
    assert not deps & set(HARNESS)
    # statistics are computed downstream from the stored raw outputs: a new one retrains nothing
    assert not deps & {"genbench/stats.py", "genbench/summary.py", "genbench/pinned_evaluator.py"}
    summary = set(stage_code("summary"))
    assert {"genbench/stats.py", "genbench/summary.py"} <= summary
    assert not {f for f in summary if f.startswith("genbench/models/") and f not in
                ("genbench/models/__init__.py", "genbench/models/base.py")}
    assert "genbench/runner.py" not in summary and "genbench/training.py" not in summary


@pytest.mark.parametrize("kind, model", [("prepare", None), ("evaluator", None), ("model", "vae"),
                                         ("learning_curve", "cnn"), ("augmentation", ["cgan", "cnn"]),
                                         ("report", None), ("index", None)])
def test_no_result_depends_on_the_harness(kind, model):
    """The CLI, the engine and the generator compute no number: editing them must rerun nothing (DESIGN.md,
    principle 1). Only the check stage, which runs the generator, depends on them."""
    deps = set(stage_code(kind, model))
    assert HARNESS == ("genbench/cli.py", "genbench/engine.py", "genbench/dvc_pipelines.py")
    assert not deps & set(HARNESS)
    if kind in ("prepare", "evaluator", "model", "report", "index"):
        assert "genbench/studies.py" not in deps  # the studies' stage selection is the generator's business
    if kind in ("report", "index"):
        assert not {f for f in deps if f.startswith("genbench/models/") and f != "genbench/models/__init__.py"
                    and f != "genbench/models/base.py"}  # the report reads records, it fits nothing
    assert {"genbench/dvc_pipelines.py", "genbench/cli.py"} <= set(stage_code("check"))


def test_the_harness_is_no_stage_dependency_in_the_committed_pipelines():
    """Read through the committed code manifests, as DVC hashes them."""
    codes = {str(p.relative_to(ROOT)): manifest_paths(p) for p in (ROOT / CODE_DIR).glob("*.sha256")}
    for path in [ROOT / "dvc.yaml", *ROOT.glob("pipelines/*/dvc.yaml")]:
        for name, stage in resolved(yaml.safe_load(path.read_text())["stages"], codes).items():
            if name != "check":
                assert not set(stage["deps"]) & set(HARNESS), (path, name)
                assert "genbench/models/__init__.py" in stage["deps"], (path, name)  # the manifest was expanded


def test_stages_list_their_code_manifest_and_read_params_from_the_json_copy():
    params = load_params(ROOT / "params.yaml")
    stages = yaml.safe_load(expected_files(params)["pipelines/digits/dvc.yaml"])["stages"]
    codes = stage_codes(params)
    assert stages["gmm"]["deps"][0] == code_manifest("model", "gmm") == "pipelines/code/model-gmm.sha256"
    assert codes[code_manifest("model", "gmm")] == stage_code("model", "gmm")
    assert stages["augmentation-cgan"]["deps"][0] == "pipelines/code/augmentation-cgan-cnn.sha256"
    for name, stage in stages.items():
        assert [d for d in stage["deps"] if d.startswith("genbench/") or d.startswith("stages/")] == [], name
        assert all(set(entry) == {PARAMS_FILE} for entry in stage.get("params", [])), name
    root = yaml.safe_load(expected_files(params)["dvc.yaml"])["stages"]
    # check writes the manifests, so it depends on every file they list and on params.yaml
    assert {f for files in codes.values() for f in files} | {"params.yaml"} <= set(root["check"]["deps"])
    assert "params" not in root["check"]
    assert [next(iter(o)) for o in root["check"]["outs"]] == [CODE_DIR, PARAMS_FILE]


def test_check_writes_the_code_manifests_and_the_params_copy(tmp_path):
    """Every manifest line is what sha256sum prints; params.json holds params.yaml's values; a second check
    rewrites nothing (a rewritten manifest would rerun its stages); a manifest no stage uses goes."""
    import hashlib
    import json
    import shutil

    for name in ("params.yaml", "dvc.yaml", "stages"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "genbench", tmp_path / "genbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines", ignore=shutil.ignore_patterns("*.lock", "code", "*.json"))
    params = load_params(tmp_path / "params.yaml")
    write_pipelines(params, tmp_path)  # the entry page lists no committed report here
    (tmp_path / CODE_DIR).mkdir()
    (tmp_path / CODE_DIR / "model-removed.sha256").write_text("0  genbench/models/removed.py\n")
    run_check(params, tmp_path)
    assert not (tmp_path / CODE_DIR / "model-removed.sha256").exists()
    assert json.loads((tmp_path / PARAMS_FILE).read_text()) == yaml.safe_load((ROOT / "params.yaml").read_text())
    written = sorted((tmp_path / CODE_DIR).glob("*.sha256"))
    assert {str(p.relative_to(tmp_path)) for p in written} == set(stage_codes(params, tmp_path))
    for manifest in written:
        for line in manifest.read_text().splitlines():
            digest, path = line.split("  ")
            assert digest == hashlib.sha256((tmp_path / path).read_bytes()).hexdigest(), line
    report = (tmp_path / CODE_DIR / "report.sha256").read_text()
    assert "genbench/report/templates/" in report  # a folder the stage reads is listed file by file
    stamps = {p: p.stat().st_mtime_ns for p in [*written, tmp_path / PARAMS_FILE]}
    run_check(params, tmp_path)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # an edit to one model's file changes exactly the manifests of the stages that run it
    with open(tmp_path / "genbench" / "models" / "gmm.py", "a") as f:
        f.write("\n# edited\n")
    before = {p.name: p.read_text() for p in written}
    run_check(params, tmp_path)
    changed = sorted(p.name for p in written if p.read_text() != before[p.name])
    assert changed == ["augmentation-gmm-cnn.sha256", "learning_curve-gmm.sha256", "model-gmm.sha256"]
    assert check_outputs(params, tmp_path)[PARAMS_FILE] == (tmp_path / PARAMS_FILE).read_text()


def test_imports_are_found_anywhere_in_a_module(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom genbench.config import check_type\n\n"
                      "def f():\n    from genbench.models import base\n    from . import io\n")
    found = _imports(source, "genbench.m")
    assert {"genbench.config", "genbench.models", "genbench.models.base", "genbench.io"} <= found
    assert "os" not in found


def test_closure_includes_parent_packages():
    files = module_files(["genbench.models.rbm"])
    assert {"genbench/__init__.py", "genbench/models/__init__.py", "genbench/models/rbm.py"} <= set(files)


def test_every_model_and_dataset_of_params_gets_a_stage():
    params = load_params(ROOT / "params.yaml")
    params["datasets"]["fashion_mnist"]["enabled"] = True
    files = expected_files(params)
    assert set(files) == {"dvc.yaml", *(f"pipelines/{d}/dvc.yaml" for d in ("digits", "fashion_mnist"))}
    stages = yaml.safe_load(files["pipelines/digits/dvc.yaml"])["stages"]
    classifiers = ["gmm", "kmeans", "gaussian_nb", "bernoulli_nb", "hmm", "bayes_net", "logistic_regression", "knn",
                   "svm", "random_forest", "mlp", "cnn", "crf"]
    generators = ["gmm", "kmeans", "gaussian_nb", "bernoulli_nb", "hmm", "bayes_net", "cgan"]
    assert set(stages) == {"prepare", "evaluator", "compare", "report", *params["models"],
                           *(f"summary-{m}" for m in params["models"]),
                           *(f"learning_curve-{m}" for m in classifiers),
                           *(f"augmentation-{m}" for m in [*generators, "real_only"])}
    stages = resolved(stages, stage_codes(params))
    for model in params["models"]:
        assert f"models.{model}" in stages[model]["params"] and "seeds" in stages[model]["params"]
    # a study stage depends on its own models' files and params (the CNN classifies the augmented sets)
    augment = stages["augmentation-cgan"]
    assert {"genbench/models/cgan.py", "genbench/models/cnn.py", "genbench/studies.py"} <= set(augment["deps"])
    assert "genbench/models/gmm.py" not in augment["deps"]
    assert {"models.cgan", "models.cnn", "studies.augmentation"} <= set(augment["params"])
    assert "results/digits/cgan/augmentation.json" in stages["report"]["deps"]
    # paired verdicts: from every model's raw outputs, read by the report; no model stage depends on them
    assert {f"results/digits/{m}/raw" for m in params["models"]} <= set(stages["compare"]["deps"])
    assert {"genbench/comparisons.py", "genbench/paired.py"} <= set(stages["compare"]["deps"])
    assert "results/digits/comparisons.json" in stages["report"]["deps"]
    assert not any("comparisons" in d or "paired" in d for m in params["models"] for d in stages[m]["deps"])
    # Fashion-MNIST's CPU profile runs no study
    fashion = resolved(yaml.safe_load(files["pipelines/fashion_mnist/dvc.yaml"])["stages"], stage_codes(params))
    assert not any(name.startswith(("learning_curve-", "augmentation-")) for name in fashion)
    # a model stage stores raw outputs; its summary stage, reading them, writes the metrics record
    assert {"results/digits/gmm/raw": {"persist": True}} in stages["gmm"]["outs"] and "metrics" not in stages["gmm"]
    assert stages["summary-gmm"]["deps"][-1] == "results/digits/gmm/raw"
    assert stages["summary-gmm"]["metrics"] == [{"results/digits/gmm/summary.json": {"cache": False, "persist": True}}]
    # every generated output under results/<dataset>/ (or reports/); the pinned evaluator is an input
    for stage in stages.values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
            assert next(iter(entry)).startswith(("results/digits/", "reports/digits")), entry
    assert "evaluators/digits/evaluator.pt" in stages["gmm"]["deps"] and "evaluators/digits/evaluator.pt" in \
        stages["evaluator"]["deps"]
    # every output persists: a failed rerun keeps the last good results (tests/test_end_to_end.py)
    for path in ("dvc.yaml", "pipelines/digits/dvc.yaml"):
        for stage in yaml.safe_load(files[path])["stages"].values():
            for entry in [*stage.get("outs", []), *stage.get("metrics", []), *stage.get("plots", [])]:
                assert next(iter(entry.values()))["persist"] is True, entry


def test_misspelt_model_names_the_registered_ones():
    params = load_params(ROOT / "params.yaml")
    params["models"]["vea"] = {}
    with pytest.raises(ConfigError, match=r"unknown model name\(s\) \['vea'\].*registered: .*vae"):
        expected_files(params)


def test_a_stage_that_imports_an_undeclared_file_fails(tmp_path):
    (tmp_path / "pipelines" / "digits").mkdir(parents=True)
    stage = {"deps": ["genbench/cli.py"]}  # far fewer files than this test process has imported
    (tmp_path / "pipelines" / "digits" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gmm": stage}}))
    with pytest.raises(ConfigError, match=r"imported \[.*genbench/config.py.*genbench pipelines"):
        check_declared("model", "digits", "gmm", root=tmp_path)
    stage["deps"] = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "genbench").rglob("*.py"))
    (tmp_path / "pipelines" / "digits" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gmm": stage}}))
    check_declared("model", "digits", "gmm", root=tmp_path)
    # the same files listed through a code manifest, as the generated pipelines list them
    manifest = {"deps": [f"{CODE_DIR}/model-gmm.sha256", "results/digits/data"]}
    (tmp_path / "pipelines" / "digits" / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"gmm": manifest}}))
    with pytest.raises(ConfigError, match=r"model-gmm.sha256 is missing: run `uv run dvc repro check`"):
        check_declared("model", "digits", "gmm", root=tmp_path)
    (tmp_path / CODE_DIR).mkdir()
    (tmp_path / CODE_DIR / "model-gmm.sha256").write_text("".join(f"0  {f}\n" for f in stage["deps"][1:]))
    with pytest.raises(ConfigError, match=r"imported \[.*genbench/__init__.py"):  # the first file left out
        check_declared("model", "digits", "gmm", root=tmp_path)
    (tmp_path / CODE_DIR / "model-gmm.sha256").write_text("".join(f"0  {f}\n" for f in stage["deps"]))
    check_declared("model", "digits", "gmm", root=tmp_path)


def _with_overrides(overrides: dict) -> dict:
    params = load_params(ROOT / "params.yaml")
    params["datasets"] = {"digits": params["datasets"]["digits"], "fashion_mnist": {"data_dir": "/nonexistent"}}
    params["overrides"] = overrides
    return params


def test_per_dataset_overrides_merge_and_are_tracked_by_the_stages_that_read_them():
    from genbench.params import dataset_params

    params = _with_overrides({"fashion_mnist": {"models": {"vae": {"epochs": 7}}, "evaluator": {"epochs": 3}}})
    fashion = dataset_params(params, "fashion_mnist")
    assert fashion["models"]["vae"] == {**params["models"]["vae"], "epochs": 7}  # one key replaced, the rest kept
    assert fashion["evaluator"] == {**params["evaluator"], "epochs": 3}
    assert fashion["models"]["gmm"] == params["models"]["gmm"]
    assert dataset_params(params, "digits") == params  # other datasets see params.yaml as it is
    files = expected_files(params)
    fashion_stages = resolved(yaml.safe_load(files["pipelines/fashion_mnist/dvc.yaml"])["stages"], {})
    digits_stages = resolved(yaml.safe_load(files["pipelines/digits/dvc.yaml"])["stages"], {})
    assert "overrides.fashion_mnist.models.vae" in fashion_stages["vae"]["params"]
    assert not any(p.startswith("overrides") for p in fashion_stages["gmm"]["params"])
    assert "overrides.fashion_mnist.evaluator" in fashion_stages["evaluator"]["params"]
    assert not any(p.startswith("overrides") for stage in digits_stages.values() for p in stage.get("params", []))


@pytest.mark.parametrize("overrides, message", [
    ({"cifar10": {"models": {"vae": {}}}}, r"overrides.cifar10.*not under 'datasets:'"),
    ({"fashion_mnist": {"models": {"vea": {}}}}, r"overrides.fashion_mnist.models.vea.*not under 'models:'"),
    ({"fashion_mnist": {"seeds": [0]}}, r"overrides.fashion_mnist' may hold only models, evaluator, protocol, studies"),
    ({"fashion_mnist": {"models": {"vae": 5}}}, r"overrides.fashion_mnist.models.vae' must map"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        expected_files(_with_overrides(overrides))


def test_leaving_a_dataset_out_keeps_its_lock_and_report(tmp_path):
    """A run on a subset of datasets must not damage the others: only the left-out dataset's dvc.yaml goes."""
    from genbench.dvc_pipelines import write_pipelines

    params = _with_overrides({})
    write_pipelines(params, tmp_path)
    (tmp_path / "pipelines" / "digits" / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "reports" / "digits").mkdir(parents=True)
    (tmp_path / "reports" / "digits" / "leaderboard.csv").write_text("model\n")
    del params["datasets"]["digits"]
    assert "pipelines/digits/dvc.yaml" in write_pipelines(params, tmp_path)
    assert not (tmp_path / "pipelines" / "digits" / "dvc.yaml").exists()
    assert (tmp_path / "pipelines" / "digits" / "dvc.lock").exists()
    assert (tmp_path / "reports" / "digits" / "leaderboard.csv").exists()
    assert stale_files(params, tmp_path) == []
    params["datasets"]["digits"] = {}
    assert write_pipelines(params, tmp_path) == ["dvc.yaml", "pipelines/digits/dvc.yaml"]


def test_a_dataset_turned_off_gets_no_pipeline_and_its_committed_report_stays_on_the_entry_page(tmp_path):
    from genbench.dvc_pipelines import write_pipelines
    from genbench.params import enabled_datasets, index_datasets

    params = _with_overrides({})
    params["datasets"]["fashion_mnist"]["enabled"] = False
    params["datasets"]["mnist"] = {"enabled": False}
    assert enabled_datasets(params) == ["digits"]
    write_pipelines(params, tmp_path)
    assert not (tmp_path / "pipelines" / "fashion_mnist" / "dvc.yaml").exists()
    index = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["index"]
    assert "reports/fashion_mnist/summary.json" not in index["deps"]  # no committed report there yet
    (tmp_path / "reports" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "reports" / "fashion_mnist" / "summary.json").write_text("{}")
    assert stale_files(params, tmp_path) == ["dvc.yaml"]  # the entry page now reads the committed report
    write_pipelines(params, tmp_path)
    index = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["index"]
    assert {"reports/digits/summary.json", "reports/fashion_mnist/summary.json"} <= set(index["deps"])
    assert "reports/mnist/summary.json" not in index["deps"]
    assert index_datasets(params, tmp_path / "reports") == ["digits", "fashion_mnist"]


def test_turning_a_dataset_on_changes_no_tracked_data_setting():
    params = _with_overrides({})
    params["datasets"]["fashion_mnist"] = {"enabled": True, "data_dir": "/nonexistent", "max_train": 10}
    prepare = yaml.safe_load(expected_files(params)["pipelines/fashion_mnist/dvc.yaml"])["stages"]["prepare"]
    assert prepare["params"] == [{PARAMS_FILE: ["data_seed", "datasets.fashion_mnist.data_dir",
                                                "datasets.fashion_mnist.max_train"]}]


@pytest.mark.parametrize("value, message", [("yes", r"datasets.fashion_mnist.enabled' must be bool"),
                                            (1, r"datasets.fashion_mnist.enabled' must be bool")])
def test_enabled_must_be_a_bool(value, message):
    params = _with_overrides({})
    params["datasets"]["fashion_mnist"]["enabled"] = value
    with pytest.raises(ConfigError, match=message):
        expected_files(params)


def test_genbench_enable_and_disable_edit_one_line_of_params_yaml(tmp_path, capsys):
    """The one documented step to turn a dataset on: `genbench enable <dataset>` sets its `enabled` (every
    comment and other line of params.yaml kept) and regenerates the pipelines."""
    import shutil

    from genbench.cli import main

    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "pipelines", tmp_path / "pipelines", ignore=shutil.ignore_patterns("*.lock"))
    shutil.copytree(ROOT / "reports", tmp_path / "reports", ignore=lambda d, names: [n for n in names if n != "summary.json"
                                                                                   and not (Path(d) / n).is_dir()])
    before = (tmp_path / "params.yaml").read_text()
    args = ["--params", str(tmp_path / "params.yaml"), "--root", str(tmp_path)]
    assert main([*args, "enable", "fashion_mnist"]) == 0
    after = (tmp_path / "params.yaml").read_text()
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert len(before.splitlines()) == len(after.splitlines())
    assert [b.strip() for _, b in changed] == ["enabled: true"]
    assert (tmp_path / "pipelines" / "fashion_mnist" / "dvc.yaml").exists()
    assert stale_files(load_params(tmp_path / "params.yaml"), tmp_path) == []
    assert main([*args, "disable", "fashion_mnist"]) == 0
    assert (tmp_path / "params.yaml").read_text() == before
    assert (tmp_path / "params.yaml").stat().st_mode == (ROOT / "params.yaml").stat().st_mode
    assert not (tmp_path / "pipelines" / "fashion_mnist" / "dvc.yaml").exists()
    assert main([*args, "enable", "imagenet"]) == 1
    assert "'imagenet' is not under 'datasets:'" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_text() == before

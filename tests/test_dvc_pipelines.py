"""The generated DVC pipelines: current with params.yaml and with what each stage's code imports."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from genbench.config import ConfigError, load_params
from genbench.dvc_pipelines import _imports, check_declared, expected_files, module_files, stage_code, stale_files

ROOT = Path(__file__).resolve().parents[1]


def test_committed_pipelines_match_params_and_imports():
    """Fails when a model's imports, params.yaml's models/datasets, or the dvc.yaml files changed
    without `uv run genbench pipelines`."""
    assert stale_files(load_params(ROOT / "params.yaml"), ROOT) == []


@pytest.mark.parametrize("model, needs, not_needed", [
    ("dbn", {"genbench/models/rbm.py", "genbench/models/ais.py"}, {"genbench/models/nets.py"}),
    ("gan", {"genbench/models/adversarial.py", "genbench/models/parzen.py", "genbench/models/nets.py"}, {"genbench/models/ais.py"}),
    ("gmm", {"genbench/models/gmm.py", "genbench/models/base.py"}, {"genbench/models/nets.py", "genbench/models/vae.py"}),
])
def test_model_stage_depends_on_what_its_code_imports(model, needs, not_needed):
    deps = set(stage_code("model", model))
    shared = {"stages/model.py", "genbench/runner.py", "genbench/pipeline.py", "genbench/data/__init__.py",
              "genbench/data/prepare.py", "genbench/evaluator.py", "genbench/training.py", "genbench/stats.py",
              "genbench/metrics/fid.py", "genbench/metrics/likelihood.py", "genbench/launcher.py", "genbench/cli.py"}
    assert shared | needs <= deps
    assert not deps & not_needed


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
    files = expected_files(params)
    assert set(files) == {"dvc.yaml", *(f"pipelines/{d}/dvc.yaml" for d in params["datasets"])}
    stages = yaml.safe_load(files["pipelines/digits/dvc.yaml"])["stages"]
    classifiers = ["gmm", "kmeans", "gaussian_nb", "bernoulli_nb", "hmm", "bayes_net", "logistic_regression", "knn",
                   "svm", "random_forest", "mlp", "cnn", "crf"]
    generators = ["gmm", "kmeans", "gaussian_nb", "bernoulli_nb", "hmm", "bayes_net", "cgan"]
    assert set(stages) == {"prepare", "evaluator", "report", *params["models"],
                           *(f"learning_curve-{m}" for m in classifiers),
                           *(f"augmentation-{m}" for m in [*generators, "real_only"])}
    for model in params["models"]:
        assert f"models.{model}" in stages[model]["params"] and "seeds" in stages[model]["params"]
    # a study stage depends on its own models' files and params (the CNN classifies the augmented sets)
    augment = stages["augmentation-cgan"]
    assert {"genbench/models/cgan.py", "genbench/models/cnn.py", "genbench/studies.py"} <= set(augment["deps"])
    assert "genbench/models/gmm.py" not in augment["deps"]
    assert {"models.cgan", "models.cnn", "studies.augmentation"} <= set(augment["params"])
    assert "studies/digits/augmentation/cgan.json" in stages["report"]["deps"]
    # Fashion-MNIST's CPU profile runs no study
    fashion = yaml.safe_load(files["pipelines/fashion_mnist/dvc.yaml"])["stages"]
    assert not any("-" in name for name in fashion)


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


def _with_overrides(overrides: dict) -> dict:
    params = load_params(ROOT / "params.yaml")
    params["datasets"]["fashion_mnist"] = {"data_dir": "/nonexistent"}
    params["overrides"] = overrides
    return params


def test_per_dataset_overrides_merge_and_are_tracked_by_the_stages_that_read_them():
    from genbench.pipeline import dataset_params

    params = _with_overrides({"fashion_mnist": {"models": {"vae": {"epochs": 7}}, "evaluator": {"epochs": 3}}})
    fashion = dataset_params(params, "fashion_mnist")
    assert fashion["models"]["vae"] == {**params["models"]["vae"], "epochs": 7}  # one key replaced, the rest kept
    assert fashion["evaluator"] == {**params["evaluator"], "epochs": 3}
    assert fashion["models"]["gmm"] == params["models"]["gmm"]
    assert dataset_params(params, "digits") == params  # other datasets see params.yaml as it is
    files = expected_files(params)
    fashion_stages = yaml.safe_load(files["pipelines/fashion_mnist/dvc.yaml"])["stages"]
    digits_stages = yaml.safe_load(files["pipelines/digits/dvc.yaml"])["stages"]
    assert "overrides.fashion_mnist.models.vae" in fashion_stages["vae"]["params"]
    assert not any(p.startswith("overrides") for p in fashion_stages["gmm"]["params"])
    assert "overrides.fashion_mnist.evaluator" in fashion_stages["evaluator"]["params"]
    assert not any(p.startswith("overrides") for stage in digits_stages.values() for p in stage["params"])


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

"""`dvc repro` on a copy of the repository with a tiny profile (every model of params.yaml, each with
its `fast_params`, two seeds): the leaderboard has every row and every metric the model's capabilities
allow, with intervals; editing one model's params or file reruns only that model and the reports; a
second `dvc repro` with nothing changed runs no stage; every kind of stage, run by hand, imports nothing
its dvc.yaml does not list (genbench.dvc_pipelines.check_declared); a killed `dvc repro` writes no output."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from genbench.models import get_model_class

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {"results", "downloads", "reports", "pipelines", "dvc.lock", "dvc.yaml", ".venv", ".git", ".pytest_cache",
           "__pycache__", ".genbench"}

TINY = {
    "seeds": [0, 1],
    "evaluator": {"epochs": 3},
    "protocol": {"fid_samples": 200, "grid_samples": 16, "anomaly": {"normal_classes": [0, 1]}},
    "studies": {"learning_curve": {"fractions": [0.1, 1.0]}, "augmentation": {"real_fractions": [0.1]}},
}


def _merge(base: dict, update: dict) -> dict:
    for key, value in update.items():
        base[key] = _merge(base.get(key) or {}, value) if isinstance(value, dict) else value
    return base


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GENBENCH_PROGRESS": "0", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([sys.executable, "-m", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(repo, "dvc", *args)


def _ran(output: str) -> set[str]:
    return {line.split("'")[1].split(":")[-1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("genbench") / "repo"
    shutil.copytree(ROOT, repo, ignore=lambda d, names: [n for n in names if n in OUTPUTS and Path(d) == ROOT]
                    + [n for n in names if n in ("cache", "tmp") and Path(d).name == ".dvc"] + ["__pycache__"])
    params = _merge(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    # digits only: the other datasets of params.yaml need files this machine may not have
    params["datasets"] = {"digits": params["datasets"]["digits"]}
    params["overrides"] = {}
    # every model, each with its quick smoke-fit settings
    params["models"] = {k: {**(v or {}), **get_model_class(k).fast_params} for k, v in params["models"].items()}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _run(repo, "genbench.cli", "pipelines")
    # a tiny evaluator is pinned for this profile (the committed one fits the default recipe), as for a new dataset
    _dvc(repo, "repro", "pipelines/digits/dvc.yaml:prepare")
    _run(repo, "genbench.cli", "evaluator", "digits", "--retrain")
    _dvc(repo, "repro")
    return repo


def test_leaderboard_has_every_row_and_allowed_metric(repo):
    board = pd.read_csv(repo / "reports" / "digits" / "leaderboard.csv").set_index("model")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert set(board.index) == set(params["models"])
    filled = board.notna()
    for model in board.index:
        record = json.loads((repo / "results" / "digits" / model / "summary.json").read_text())
        caps = set(record["capabilities"])
        assert record["seeds"] == [0, 1] and len(record["per_seed"]) == 2, model
        assert filled.loc[model, "accuracy"] == ("classify" in caps), model
        assert filled.loc[model, ["nll_nats", "bits_per_dim", "nll_space", "nll_estimator"]].all() == ("density" in caps), model
        sample_columns = ["fid", "kid", "fid_pixels", "kid_pixels", "precision", "recall", "density", "coverage",
                          "copying_ct"]
        translation = bool((record["summary"].get("fid") or {}).get("reference_domain"))  # cyclegan: own table
        assert filled.loc[model, sample_columns].all() == ("generate" in caps and not translation), model
        assert not filled.loc[model, sample_columns].any() or not translation, model
        assert filled.loc[model, "cas"] == ("generate" in caps and "cas" in record["summary"]), model
        assert filled.loc[model, "linear_probe_accuracy"] == ("represent" in caps), model
        one_class = record["kind"] != "discriminative" and bool(caps & {"detect", "density"})
        assert filled.loc[model, "anomaly_auroc"] == one_class, model
        assert board.loc[model, "train_seconds"] > 0, model
        for column in ("accuracy", "nll_nats", "fid", "anomaly_auroc"):
            if filled.loc[model, column]:  # every metric has its interval and seed count
                assert board.loc[model, f"{column}_ci_low"] <= board.loc[model, column] <= board.loc[model, f"{column}_ci_high"]
                assert board.loc[model, f"{column}_n_seeds"] == 2, (model, column)
    assert filled.loc["gmm", "cas"]
    assert board.loc["gmm", "nll_space"] == "discrete"
    assert board.loc["vae", "nll_space"] == "binary"
    per_seed = pd.read_csv(repo / "reports" / "digits" / "per_seed.csv")
    assert set(per_seed["seed"]) == {0, 1} and set(per_seed["model"]) == set(params["models"])
    for page in ("reports/index.html", "reports/digits/index.html", "reports/digits/README.md"):
        assert (repo / page).stat().st_size > 0, page
    assert (repo / "reports" / "digits" / "samples" / "dcgan.svg").exists()


def test_the_studies_ran_for_every_classifier_and_conditional_generator(repo):
    from genbench.models import create_model
    from genbench.studies import is_classifier, is_conditional_generator

    params = yaml.safe_load((repo / "params.yaml").read_text())
    built = {m: create_model(m, h) for m, h in params["models"].items()}
    curves = {p.parent.name for p in (repo / "results" / "digits").glob("*/learning_curve.json")}
    augmented = {p.parent.name for p in (repo / "results" / "digits").glob("*/augmentation.json")}
    assert curves == {m for m, model in built.items() if is_classifier(model)}
    assert augmented == {m for m, model in built.items() if is_conditional_generator(model)} | {"real_only"}
    for model in curves:  # the 100% point is the model stage's fit
        curve = json.loads((repo / "results" / "digits" / model / "learning_curve.json").read_text())
        record = json.loads((repo / "results" / "digits" / model / "summary.json").read_text())
        assert [s["accuracy"] for s in curve["points"][-1]["per_seed"]] == pytest.approx(
            [s["classification"]["accuracy"] for s in record["per_seed"]], abs=1e-6), model
    report = (repo / "reports" / "digits" / "README.md").read_text()
    for heading in ("Learning curves", "Where the curves cross", "Augmentation with generated images", "Augmentation gains"):
        assert f"## {heading}" in report, heading


def test_editing_one_model_reruns_only_that_model_and_the_reports(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["models"]["vae"]["latent_dim"] = 8
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the stages read params.json, which `check` writes from params.yaml: until it has run, only check is stale
    assert {name.split(":")[-1] for name in json.loads(_dvc(repo, "status", "--json").stdout)} == {"check"}
    _dvc(repo, "repro", "check")
    changed = {name.split(":")[-1] for name in json.loads(_dvc(repo, "status", "--json").stdout)}
    assert "vae" in changed and changed <= {"vae", "compare", "report", "index"}, changed
    # check: params.yaml's names, in a second; index: if the summary changed
    assert _ran(_dvc(repo, "repro").stdout) - {"check", "index"} == {"vae", "summary-vae", "compare", "report"}


def test_editing_a_shared_model_module_reruns_the_models_that_import_it(repo):
    rbm = repo / "genbench" / "models" / "rbm.py"
    rbm.write_text(rbm.read_text() + "\n# an edit\n")
    # check (about a second) imports every model file to list the studies' stages
    assert _ran(_dvc(repo, "repro").stdout) - {"index", "check"} == {"rbm", "dbn", "summary-rbm", "summary-dbn",
                                                                       "compare", "report"}


def test_editing_the_harness_reruns_no_result(repo):
    """The CLI, the engine and the pipeline generator compute no number (DESIGN.md, principle 1)."""
    for name in ("cli.py", "engine.py", "dvc_pipelines.py"):
        path = repo / "genbench" / name
        path.write_text(path.read_text() + "\n# an edit\n")
    assert {name.split(":")[-1] for name in json.loads(_dvc(repo, "status", "--json").stdout)} == {"check"}
    assert _ran(_dvc(repo, "repro").stdout) == {"check"}


def test_editing_a_statistic_retrains_nothing(repo):
    """Statistics are computed from the stored raw outputs: an edit to genbench/stats.py reruns the summaries
    (and the evaluator's real-data floor) and the report, and no model or study stage."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    stats = repo / "genbench" / "stats.py"
    stats.write_text(stats.read_text() + "\n# an edit\n")
    ran = _ran(_dvc(repo, "repro").stdout)
    assert {f"summary-{m}" for m in params["models"]} | {"report"} <= ran
    assert ran <= {f"summary-{m}" for m in params["models"]} | {"evaluator", "compare", "report", "index", "check"}, ran


def test_a_failed_rerun_keeps_the_last_good_results(repo):
    """DVC deletes a stage's outputs before running it, unless they persist: a rerun that fails at run time
    must leave the last good model, raw outputs, samples, curves and metrics as they were."""
    outputs = [repo / "results" / "digits" / "gmm"]

    def contents() -> dict:
        return {str(f.relative_to(repo)): f.read_bytes() for path in outputs
                for f in ([path] if path.is_file() else sorted(path.rglob("*"))) if f.is_file()}

    before = contents()
    source = repo / "genbench" / "models" / "gmm.py"
    original = source.read_text()
    # a fit that fails once the stage has started its work (as a NaN loss or a missing GPU would)
    source.write_text(original + "\n\ndef _fail(self, train, *, seed):\n"
                                 "    raise FloatingPointError('simulated: the loss became NaN')\n\n\nGMM.fit = _fail\n")
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        failed = subprocess.run([sys.executable, "-m", "dvc", "repro", "pipelines/digits/dvc.yaml:gmm"], cwd=repo,
                                env=env, capture_output=True, text=True)
        assert failed.returncode != 0 and "simulated: the loss became NaN" in failed.stderr + failed.stdout
        assert contents() == before
    finally:
        source.write_text(original)
    # the last good results are current again (check, upstream of all, had run on the edited file)
    assert _ran(_dvc(repo, "repro").stdout) <= {"check"}


def test_noop_repro_runs_nothing(repo):
    output = _dvc(repo, "repro").stdout
    assert "Running stage" not in output, output


def test_stages_rerun_soon_after_on_the_same_engine_compute_anew(repo):
    """The engine outlives a `dvc repro` (until 120 s idle): a stage computed and installed, then run again
    (outputs removed, or forced) must compute anew, not be handed the finished task's staging folder, which
    its install moved away. Two model stages, so that one of them is submitted by the other's look-ahead."""
    models = ("knn", "logistic_regression")
    for _ in range(2):
        for model in models:
            for output in ("model", "raw", "samples"):
                shutil.rmtree(repo / "results" / "digits" / model / output)
        ran = _ran(_dvc(repo, "repro", "--no-run-cache", *(f"pipelines/digits/dvc.yaml:{m}" for m in models)).stdout)
        assert ran - {"check"} == set(models)
        assert all((repo / "results" / "digits" / m / "raw" / "stage.json").is_file() for m in models)
        _dvc(repo, "repro")  # their summaries (staged by the model tasks), the comparison and the report
    assert not list((repo / ".genbench" / "staging").iterdir()), "staged work left behind"


def test_misspelt_model_gets_genbenchs_message_before_any_work(repo):
    """DVC would stop first with "Parameters 'models.vae' are missing"; the check stage runs before every other."""
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["models"] = {("vea" if k == "vae" else k): v for k, v in params["models"].items()}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode != 0
        assert "unknown model name(s) ['vea']" in result.stderr and "registered: " in result.stderr, result.stderr
        assert "missing from 'params.yaml'" not in result.stdout + result.stderr
        assert _ran(result.stdout) == {"check"}, result.stdout
    finally:
        (repo / "params.yaml").write_text(original)
    assert "Running stage" not in _dvc(repo, "repro").stdout  # the failed check changed nothing


def _session_processes(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid and (entry / "stat").read_text().split()[2] != "Z":
                    pids.append(int(entry.name))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                pass
    return pids


def test_a_killed_repro_writes_no_output_and_its_work_is_reused(repo):
    """kill -9 of `dvc repro` and its stage while the engine trains: nothing of that process group lives on,
    and no output changes (the engine's task writes only into .genbench/staging/); the next `dvc repro`
    takes the staged work whose key still matches, and records it."""
    vae = repo / "results" / "digits" / "vae"

    def contents() -> dict:
        return {str(f.relative_to(repo)): f.read_bytes() for f in sorted(vae.rglob("*")) if f.is_file()}

    _dvc(repo, "repro")
    before = contents()
    original = (repo / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["models"]["vae"]["epochs"] = 40  # long enough to be killed mid-training
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "pipelines/digits/dvc.yaml:vae"], cwd=repo,
                               env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = repo / ".genbench" / "staging"
    deadline = time.time() + 120
    while time.time() < deadline and not list(staging.glob("*.partial/results/digits/vae/.model.*.tmp")):
        time.sleep(0.2)
    assert list(staging.glob("*.partial")), "the stage never started on the engine"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(3)  # the engine's task is still training, into staging
    assert not _session_processes(process.pid), "a process of the killed repro lived on"
    assert contents() == before, "an output changed behind DVC's back"
    ran = _ran(_dvc(repo, "repro").stdout)
    assert {"vae", "summary-vae", "report"} <= ran
    assert "Running stage" not in _dvc(repo, "repro").stdout
    assert not list(staging.iterdir()), "staged work left behind"
    (repo / "params.yaml").write_text(original)


def test_every_kind_of_stage_run_by_hand_imports_only_its_deps(repo):
    """`genbench <stage>` in a fresh process computes in-process and then checks its imports against its
    dvc.yaml deps (genbench.dvc_pipelines.check_declared): the AST-derived deps miss nothing."""
    for stage in (["prepare", "digits"], ["evaluator", "digits"], ["model", "digits", "vae"],
                  ["summary", "digits", "vae"], ["compare", "digits"], ["learning_curve", "digits", "cnn"],
                  ["augmentation", "digits", "cgan"], ["report", "digits"], ["index"]):
        _run(repo, "genbench.cli", *stage)

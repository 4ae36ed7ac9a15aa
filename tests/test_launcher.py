"""The warm stage runner relays output, exit status and working directory, gives the same numbers
as an in-process run, and never holds genbench's own code (so edits are always seen)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from genbench import launcher
from genbench.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_server_preloads_no_genbench_code():
    code = ("import importlib, sys, genbench.launcher as l\n"
            "[importlib.import_module(m) for m in l.PRELOAD]\n"
            "print(sorted(m for m in sys.modules if m.startswith('genbench')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['genbench', 'genbench.launcher']"


@pytest.fixture(scope="module")
def server():
    env = {**os.environ, "GENBENCH_STAGE_SERVER_IDLE": "30"}
    process = subprocess.Popen([sys.executable, "-c", "from genbench.launcher import serve; serve()"], env=env,
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = launcher.socket_path()
    deadline = time.time() + 180
    while time.time() < deadline:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
                break
            except OSError:
                time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("stage server did not start")
    yield process
    process.terminate()


def test_output_and_exit_status_are_relayed(server, capfd):
    assert launcher._run_remote(["list"]) == 0
    out = capfd.readouterr().out
    assert "models:" in out and "gmm" in out


def test_working_directory_is_the_clients(server, tmp_path, monkeypatch, capfd):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"datasets": {"digits": {}}, "models": {"zzz_model": {}}}))
    monkeypatch.chdir(tmp_path)
    assert launcher._run_remote(["train", "digits", "zzz_model"]) == 1
    assert "zzz_model" in capfd.readouterr().err


def test_same_numbers_as_in_process(server, tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["models"] = {"gmm": {"n_components": 1}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for root in ("remote", "local"):
        assert main(["--root", root, "prepare", "digits"]) == 0
    assert launcher._run_remote(["--root", "remote", "train", "digits", "gmm"]) == 0
    assert main(["--root", "local", "train", "digits", "gmm"]) == 0
    from genbench.models.base import Model

    x = torch.rand(5, 1, 8, 8)
    remote, local = Model.load(tmp_path / "remote/models/digits/gmm"), Model.load(tmp_path / "local/models/digits/gmm")
    torch.testing.assert_close(remote.log_prob(x), local.log_prob(x), rtol=0, atol=0)
    assert json.loads((tmp_path / "remote/models/digits/gmm/train.json").read_text())["hyperparameters"] == \
        json.loads((tmp_path / "local/models/digits/gmm/train.json").read_text())["hyperparameters"]


def test_stage_script_runs_its_own_checkouts_code(tmp_path):
    """A copy of the repository run with this venv uses the copy's genbench (the files DVC tracks there)."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "genbench", copy / "genbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "stages", copy / "stages")
    (copy / "genbench" / "models" / "zz_only_in_copy.py").write_text(
        "from genbench.models import register\nfrom genbench.models.base import Model\n\n"
        "@register('zz_only_in_copy')\nclass Marker(Model):\n    pass\n")
    (copy / "params.yaml").write_text(yaml.safe_dump({"datasets": {"digits": {}}, "models": {"zz_only_in_copy": {}}}))
    env = {**os.environ, "GENBENCH_STAGE_SERVER": "0"}
    result = subprocess.run([sys.executable, "stages/train.py", "digits", "zz_only_in_copy"], cwd=copy, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "unknown model" not in result.stderr and "splits.pt is missing" in result.stderr, result.stderr


def test_disabled_server_runs_in_process(monkeypatch, capfd):
    monkeypatch.setenv("GENBENCH_STAGE_SERVER", "0")
    assert launcher.run_stage("list", []) == 0
    assert "datasets:" in capfd.readouterr().out

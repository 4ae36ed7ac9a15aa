"""The warm stage runner relays output, exit status and working directory, gives the same numbers
as an in-process run, and never holds genbench's own code (so edits are always seen). It is safe:
only this user reaches it, a killed client takes its stage down, a server serves only its own
import-time environment, and it never forks with CUDA initialised."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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
    assert launcher._run_remote(["model", "digits", "zzz_model"]) == 1
    assert "zzz_model" in capfd.readouterr().err


def test_same_numbers_as_in_process(server, tmp_path, monkeypatch):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(models={"gmm": {"n_components": 1}}, seeds=[0], overrides={},
                  datasets={"digits": params["datasets"]["digits"]})
    params["evaluator"]["epochs"] = 1
    params["protocol"].update(fid_samples=100, anomaly={"normal_classes": [0]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert main(["--root", "local", "prepare", "digits"]) == 0
    assert main(["--root", "local", "evaluator", "digits"]) == 0
    shutil.copytree(tmp_path / "local", tmp_path / "remote")
    for stage in ("model", "summary"):
        assert launcher._run_remote(["--root", "remote", stage, "digits", "gmm"]) == 0
        assert main(["--root", "local", stage, "digits", "gmm"]) == 0
    from genbench.models.base import Model

    x = torch.rand(5, 1, 8, 8)
    remote, local = (Model.load(tmp_path / root / "models/digits/gmm/seed-0") for root in ("remote", "local"))
    torch.testing.assert_close(remote.log_prob(x), local.log_prob(x), rtol=0, atol=0)

    def numbers(root):  # the metrics record without its timings and provenance (the time it ran)
        def strip(value):
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items()
                        if k not in ("cost", "provenance") and not k.endswith("seconds")}
            return [strip(v) for v in value] if isinstance(value, list) else value
        return strip(json.loads((tmp_path / root / "metrics/digits/gmm.json").read_text()))

    assert numbers("remote") == numbers("local")


def test_stage_script_runs_its_own_checkouts_code(tmp_path):
    """A copy of the repository run with this venv uses the copy's genbench (the files DVC tracks there)."""
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "genbench", copy / "genbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "stages", copy / "stages")
    (copy / "genbench" / "models" / "zz_only_in_copy.py").write_text(
        "from genbench.models import register\nfrom genbench.models.base import Model\n\n"
        "@register('zz_only_in_copy')\nclass Marker(Model):\n    pass\n")
    (copy / "params.yaml").write_text(yaml.safe_dump({"datasets": {"digits": {}}, "models": {"zz_only_in_copy": {}}}))
    env = {**os.environ, "GENBENCH_STAGE_SERVER": "0"}
    result = subprocess.run([sys.executable, "stages/model.py", "digits", "zz_only_in_copy"], cwd=copy, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "unknown model" not in result.stderr and "splits.pt is missing" in result.stderr, result.stderr


def test_disabled_server_runs_in_process(monkeypatch, capfd):
    monkeypatch.setenv("GENBENCH_STAGE_SERVER", "0")
    assert launcher.run_stage("list", []) == 0
    assert "datasets:" in capfd.readouterr().out


# --- Safety. These tests start light servers (no preloading, a fake genbench.cli) in a private runtime
# directory of their own, so they take a fraction of a second each.

FAKE_CLI = '''
import os, signal, sys, time, types

def main(argv):
    if argv[0] == "beat":  # a stage that never ends, with a worker that ignores SIGTERM
        folder = argv[1]
        name = "child"
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            name = "grandchild"
        with open(os.path.join(folder, name + ".pid"), "w") as f:
            f.write(str(os.getpid()))
        while True:
            with open(os.path.join(folder, name + ".beat"), "a") as f:
                f.write(".")
            time.sleep(0.05)
    print("fake stage", *argv)
    return int(argv[0])

cli = types.ModuleType("genbench.cli")
cli.main = main
sys.modules["genbench.cli"] = cli
'''


@pytest.fixture
def runtime(monkeypatch):
    """A fresh XDG_RUNTIME_DIR (short, for the socket path's length limit) for this test only."""
    folder = tempfile.mkdtemp(prefix="gb-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", folder)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def light_server(runtime):
    """start(setup="", preload=()): a server process with the test's environment, once it listens."""
    processes = []

    def start(setup: str = "", preload: tuple = ()) -> subprocess.Popen:
        code = f"{FAKE_CLI}\n{setup}\nfrom genbench.launcher import serve\nserve(preload={preload!r})"
        process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True,
                                   env={**os.environ, "GENBENCH_STAGE_SERVER_IDLE": "30"})
        processes.append(process)
        path = launcher.socket_path()
        deadline = time.time() + 60
        while time.time() < deadline and process.poll() is None:
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(str(path))
                    return process
                except OSError:
                    time.sleep(0.05)
        pytest.fail("light server did not start")

    yield start
    for process in processes:
        process.kill()
        process.wait()


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # reaped between open() and read()
        return False
    return state not in ("Z", "X")


def test_light_server_relays_exit_status(light_server, capfd):
    light_server()
    assert launcher._run_remote(["3", "hello"]) == 3
    assert "fake stage 3 hello" in capfd.readouterr().out


def test_killed_client_takes_its_stage_and_workers_down(light_server, tmp_path):
    light_server()
    client = subprocess.Popen(
        [sys.executable, "-c", "import sys, genbench.launcher as l; sys.exit(l._run_remote(sys.argv[1:]))",
         "beat", str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_files = [tmp_path / "child.pid", tmp_path / "grandchild.pid"]
    pids = []
    try:
        deadline = time.time() + 30
        while not all(f.exists() and f.read_text() for f in pid_files):
            assert time.time() < deadline, "the fake stage did not start"
            time.sleep(0.05)
        pids = [int(f.read_text()) for f in pid_files]
        assert all(_running(pid) for pid in pids)
        client.kill()  # as `kill -9` of the stage, or of dvc repro with its process group
        client.wait()
        deadline = time.time() + 5
        while any(_running(pid) for pid in pids):
            assert time.time() < deadline, "the stage or its worker outlived its client"
            time.sleep(0.05)
        beats = [(tmp_path / f"{name}.beat").stat().st_size for name in ("child", "grandchild")]
        time.sleep(0.3)
        assert beats == [(tmp_path / f"{name}.beat").stat().st_size for name in ("child", "grandchild")]
    finally:
        client.kill()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_runtime_dir_is_private(runtime, monkeypatch):
    assert launcher.socket_path().parent == runtime / "genbench"
    info = os.lstat(runtime / "genbench")
    assert info.st_mode & 0o777 == 0o700 and info.st_uid == os.getuid()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(launcher.tempfile, "tempdir", str(runtime))
    assert launcher.runtime_dir() == runtime / f"genbench-{os.getuid()}"


@pytest.mark.parametrize("unsafe", ["open to others", "symlink"])
def test_unsafe_runtime_dir_is_refused(runtime, monkeypatch, capfd, unsafe):
    if unsafe == "open to others":
        (runtime / "genbench").mkdir()
        os.chmod(runtime / "genbench", 0o755)
    else:
        (runtime / "elsewhere").mkdir(mode=0o700)
        (runtime / "genbench").symlink_to(runtime / "elsewhere")
    with pytest.raises(launcher.Unsafe):
        launcher.socket_path()
    monkeypatch.setattr(launcher, "_start_server", lambda: pytest.fail("started a server in an unsafe directory"))
    assert launcher.run_stage("list", []) == 0  # in-process
    out, err = capfd.readouterr()
    assert "datasets:" in out
    assert err.count("\n") == 1 and "not using the warm stage server" in err and "genbench" in err
    assert os.listdir(runtime / "genbench") == []


def test_peer_credentials(monkeypatch):
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert launcher._peer_uid(left) == os.getuid()
        assert launcher._trusted(left)
        monkeypatch.setattr(os, "getuid", lambda: 12345)
        assert not launcher._trusted(left)


def test_client_refuses_a_server_of_another_user(runtime, monkeypatch, capfd):
    """Nothing (not the environment) goes to a server that runs as someone else; the stage runs in-process."""
    received = []
    with socket.socket(socket.AF_UNIX) as fake:
        fake.bind(str(launcher.socket_path()))
        fake.listen(1)
        fake.settimeout(10)

        def accept():
            connection, _ = fake.accept()
            with connection:
                connection.settimeout(5)
                received.append(connection.recv(1 << 16))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        monkeypatch.setattr(launcher, "_peer_uid", lambda connection: os.getuid() + 1)
        monkeypatch.setattr(launcher, "_start_server", lambda: pytest.fail("started a server"))
        assert launcher.run_stage("list", []) == 0
        thread.join(10)
    assert received == [b""]
    out, err = capfd.readouterr()
    assert "datasets:" in out and "uid" in err


def test_server_drops_clients_of_another_user(light_server):
    light_server(setup="import genbench.launcher as l; l._peer_uid = lambda connection: -1")
    assert launcher._run_remote(["0"]) is None


def test_import_time_environment_names_the_server(light_server, monkeypatch, capfd):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TORCH_TEST_KNOB", raising=False)
    first = launcher.socket_path()
    monkeypatch.setenv("GENBENCH_UNRELATED", "x")
    assert launcher.socket_path() == first
    for name, value in [("OMP_NUM_THREADS", "2"), ("TORCH_TEST_KNOB", "1"), ("CUDA_VISIBLE_DEVICES", ""),
                        ("MKL_CBWR", "COMPATIBLE"), ("OPENBLAS_CORETYPE", "Prescott"), ("ATEN_CPU_CAPABILITY", "default")]:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            assert launcher.socket_path() != first
    light_server()  # started with OMP_NUM_THREADS=1
    assert launcher._run_remote(["0"]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert launcher._run_remote(["0"]) is None  # that server is not for this client


def test_server_refuses_to_fork_with_cuda_initialised(light_server, monkeypatch, capfd):
    fake_torch = ("import sys, types; torch = types.ModuleType('torch')\n"
                  "torch.cuda = types.SimpleNamespace(is_initialized=lambda: True); sys.modules['torch'] = torch")
    server = light_server(setup=fake_torch)
    monkeypatch.setattr(launcher, "_start_server", lambda: None)
    assert launcher.run_stage("list", []) == 0  # refused, so in-process
    out = capfd.readouterr().out
    assert "datasets:" in out and "fake stage" not in out
    assert server.wait(timeout=10) == 0  # the server retired
    assert not launcher.socket_path().exists()


def test_server_tells_torch_to_leave_cuda_alone(light_server, tmp_path):
    seen = tmp_path / "seen"
    (tmp_path / "zz_env_probe.py").write_text(
        f"import os\nopen({str(seen)!r}, 'w').write(os.environ.get('PYTORCH_NVML_BASED_CUDA_CHECK', ''))\n")
    light_server(setup=f"import sys; sys.path.insert(0, {str(tmp_path)!r})", preload=("zz_env_probe",))
    assert seen.read_text() == "1"

"""The engine (genbench.engine): who can reach it, what a dying worker or a source edit does, where its
workers go (GPUs, SLURM), and how a stage's outputs are keyed, staged and installed."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import stat
import sys
from pathlib import Path

import psutil
import pytest

import engine_tasks
from genbench import engine

@pytest.fixture(scope="module")
def shared_engine():
    """The engine `dvc repro` uses for this checkout (started if needed), as a client."""
    with engine.client() as client:
        client.upload_file(engine_tasks.__file__)  # the test's tasks, to the scheduler and every worker
        yield client


def _listening_ports(pid: int) -> set[int]:
    ports = set()
    process = psutil.Process(pid)
    for proc in [process, *process.children(recursive=True)]:
        for connection in proc.net_connections(kind="inet"):
            if connection.status == psutil.CONN_LISTEN:
                assert connection.laddr.ip == "127.0.0.1", connection  # nothing listens beyond this machine
                ports.add(connection.laddr.port)
    return ports


def test_the_engine_answers_only_clients_with_its_certificate(shared_engine):
    directory = engine.private_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    record_path = directory / f"engine-{engine.cluster_key()}.json"
    assert stat.S_IMODE(record_path.stat().st_mode) == 0o600  # the client's key: this user only
    pid = int((directory / f"engine-{engine.cluster_key()}.pid").read_text())
    ports = _listening_ports(pid)
    assert len(ports) >= 1 + len(shared_engine.scheduler_info()["workers"])  # the scheduler, the workers
    record = __import__("json").loads(record_path.read_text())
    for port in ports:
        try:
            plain = socket.create_connection(("127.0.0.1", port), timeout=5)
        except ConnectionRefusedError:
            continue  # closed since it was listed (a restarting worker's HTTP server, stopped by its preload)
        with plain:  # no HTTP, no plain Dask
            plain.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            try:
                assert not plain.recv(100).startswith(b"HTTP"), port
            except (ConnectionResetError, TimeoutError):
                pass
        context = ssl.create_default_context(cadata=record["ca"])
        context.check_hostname = False
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError, EOFError, AssertionError)):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    context.wrap_socket(raw) as tls:  # TLS, with the CA but without a client certificate
                tls.sendall(b"\0" * 16)
                assert tls.recv(16), "the server closed without a word"  # TLS 1.3 refuses after the handshake


def test_a_worker_killed_mid_task_reruns_the_task(shared_engine, tmp_path):
    with shared_engine.as_current():
        pids = engine.map_tasks(engine_tasks.die_once, [(0,)], "test/die-once", marker=str(tmp_path))
    assert len(pids) == 1 and isinstance(pids[0], int)
    assert [p.name for p in tmp_path.iterdir()] == ["0"]  # the task's first worker died


def test_a_task_that_kills_every_worker_fails_its_stage_saying_so(shared_engine):
    with shared_engine.as_current(), pytest.raises(engine.EngineError, match=r"worker died .*test/die.*nothing was recorded"):
        engine.map_tasks(engine_tasks.die_always, [(0,)], "test/die")


def test_a_failing_task_fails_the_map_with_its_error():
    with pytest.raises(ValueError, match="task 1 failed"):  # the tests' in-process engine (conftest.py)
        engine.map_tasks(engine_tasks.fail, [(0,), (1,), (2,)], "test/fail")
    assert engine.map_tasks(engine_tasks.fail, [(2,), (0,)], "test/order") == [2, 0]


def test_a_source_edit_means_another_engine(tmp_path, monkeypatch):
    """Workers import genbench once: an edited file must never meet a worker that imported the old one."""
    shutil.copytree(engine.REPO_ROOT / "genbench", tmp_path / "genbench", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(engine, "REPO_ROOT", tmp_path)
    key, source = engine.cluster_key(), engine.source_hash()
    model = tmp_path / "genbench" / "models" / "gmm.py"
    model.write_text(model.read_text() + "\n# an edit\n")
    assert engine.cluster_key() != key and engine.source_hash() != source
    monkeypatch.setenv("GENBENCH_ENGINE_SOURCE", source)  # as on a worker of the old engine
    with pytest.raises(engine.EngineError, match="source changed since this engine started"):
        engine._same_source()
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # read when the libraries load: another engine too
    assert engine.cluster_key() != key


def test_each_gpu_gets_a_worker_that_sees_only_it():
    template = {"cls": object, "options": {"nthreads": 4, "env": {"A": "1"}}}
    specs = engine.worker_specs(template, 2, ["0", "1"])
    assert sorted(specs) == ["cpu-0", "cpu-1", "gpu-0", "gpu-1"]
    assert all(s["options"]["nthreads"] == 1 for s in specs.values())
    assert specs["gpu-1"]["options"]["env"] == {"A": "1", "CUDA_VISIBLE_DEVICES": "1"}
    assert specs["gpu-1"]["options"]["resources"] == {"GPU": 1} and "resources" not in specs["cpu-0"]["options"]


def test_a_torch_stage_on_a_machine_without_gpu_workers_says_so():
    with pytest.raises(engine.EngineError, match="no GPU worker.*device: cpu"):
        engine.map_tasks(engine_tasks.fail, [(0,)], "test/gpu", gpu=True)


def test_the_slurm_job_script(tmp_path):
    """What dask-jobqueue submits: one single-threaded worker per job, genbench's preload, mutual TLS with
    the certificates in files only this user reads, from this checkout, with the GPUs asked for."""
    from distributed import Security

    settings = engine.engine_settings({"engine": {"cluster": "slurm", "slurm": {
        "queue": "gpu", "account": "lab", "memory": "16GiB", "walltime": "01:00:00", "gpus_per_job": 1}}})
    cluster = engine.slurm_cluster(settings, Security.temporary(), tmp_path)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p gpu", "#SBATCH -A lab", "#SBATCH --gres=gpu:1", "#SBATCH -t 01:00:00",
                 f"cd {engine.REPO_ROOT}", "export OMP_NUM_THREADS=1"):
        assert line in script, line
    command = script.splitlines()[-1]
    assert sys.executable in command and "tls://" in command and "--nthreads 1" in command
    assert "--preload genbench.engine" in command and "--resources GPU=1" in command
    certificates = [part for part in command.split() if part.startswith(str(tmp_path))]
    assert len(certificates) == 3  # CA, worker certificate, worker key: files, not in the script
    for path in certificates:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_engine_settings_are_checked():
    with pytest.raises(engine.EngineError, match="engine.cluster must be 'local' or 'slurm'"):
        engine.engine_settings({"engine": {"cluster": "kubernetes"}})


def _stage_repo(tmp_path: Path, monkeypatch) -> dict:
    monkeypatch.setattr(engine, "REPO_ROOT", tmp_path)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.npy").write_bytes(b"abc")
    return {"name": "m", "cmd": "python stages/model.py d m", "deps": ["code.py", "data"], "params": ["models.m"],
            "outs": [{"results/d/m/model": {"persist": True}}], "metrics": [{"results/d/m/summary.json": {}}]}


def test_a_stage_key_changes_with_its_code_data_and_params(tmp_path, monkeypatch):
    stage = _stage_repo(tmp_path, monkeypatch)
    params = {"models": {"m": {"k": 1}}, "models_other": 2}
    key = engine.stage_key(stage, params)
    assert engine.stage_key(stage, {**params, "models_other": 3}) == key  # a param it does not read
    assert engine.stage_key(stage, {"models": {"m": {"k": 2}}}) != key
    (tmp_path / "data" / "a.npy").write_bytes(b"abd")
    assert engine.stage_key(stage, params) != key
    (tmp_path / "data" / "a.npy").write_bytes(b"abc")
    assert engine.stage_key(stage, params) == key
    (tmp_path / "code.py").write_text("x = 2\n")
    assert engine.stage_key(stage, params) != key


def test_staleness_is_read_off_dvc_lock(tmp_path, monkeypatch):
    stage = _stage_repo(tmp_path, monkeypatch)
    params = {"models": {"m": {"k": 1}}}
    md5 = hashlib.md5(b"x = 1\n").hexdigest()
    for out in engine.outputs(stage):
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text("{}")
    lock = {"stages": {
        "prepare": {"outs": [{"path": "data", "md5": "d1.dir"}]},
        "m": {"deps": [{"path": "code.py", "md5": md5}, {"path": "data", "md5": "d1.dir"}],
              "params": {"params.yaml": {"models.m": {"k": 1}}}}}}
    assert not engine._stale(stage, lock, params)
    assert engine._stale(stage, lock, {"models": {"m": {"k": 2}}})
    lock["stages"]["m"]["params"]["params.yaml"]["models.m"] = {"k": "1e-06"}  # how dvc.lock may spell it
    assert not engine._stale(stage, lock, {"models": {"m": {"k": 1e-06}}})
    lock["stages"]["m"]["params"]["params.yaml"]["models.m"] = {"k": 1}
    lock["stages"]["prepare"]["outs"][0]["md5"] = "d2.dir"  # the data were prepared anew
    assert engine._stale(stage, lock, params)
    lock["stages"]["prepare"]["outs"][0]["md5"] = "d1.dir"
    # a folder that is its producer's second output (a summary reads its model's raw/, not its model/)
    lock["stages"]["prepare"]["outs"].insert(0, {"path": "weights", "md5": "w1.dir"})
    assert not engine._stale(stage, lock, params)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert engine._stale(stage, lock, params)
    assert engine._stale({**stage, "name": "never_ran"}, lock, params)


def test_params_listed_under_the_generated_params_file_count_as_the_same_keys(tmp_path, monkeypatch):
    """The generated stages list their params under pipelines/params.json (genbench.dvc_pipelines): the key
    and the staleness read the same values from params.yaml as for bare keys."""
    stage = _stage_repo(tmp_path, monkeypatch)
    listed = {**stage, "params": [{"pipelines/params.json": ["models.m"]}]}
    params = {"models": {"m": {"k": 1}}}
    assert engine.stage_key(listed, params) == engine.stage_key(stage, params)
    assert engine.stage_key(listed, {"models": {"m": {"k": 2}}}) != engine.stage_key(listed, params)
    for out in engine.outputs(stage):
        (tmp_path / out).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / out).write_text("{}")
    lock = {"stages": {"prepare": {"outs": [{"path": "data", "md5": "d1.dir"}]},
                       "m": {"deps": [{"path": "code.py", "md5": hashlib.md5(b"x = 1\n").hexdigest()},
                                      {"path": "data", "md5": "d1.dir"}],
                             "params": {"pipelines/params.json": {"models.m": {"k": 1}}}}}}
    assert not engine._stale(listed, lock, params)
    assert engine._stale(listed, lock, {"models": {"m": {"k": 2}}})


def test_installing_staged_outputs_replaces_the_old_ones(tmp_path, monkeypatch):
    stage = _stage_repo(tmp_path, monkeypatch)
    old = tmp_path / "results" / "d" / "m" / "model"
    old.mkdir(parents=True)
    (old / "stale.pt").write_text("old")
    staged = tmp_path / ".genbench" / "staging" / "k"
    (staged / "results" / "d" / "m" / "model").mkdir(parents=True)
    (staged / "results" / "d" / "m" / "model" / "seed-0.pt").write_text("new")
    with pytest.raises(engine.EngineError, match="wrote no results/d/m/summary.json.*nothing was installed"):
        engine._install(staged, stage)
    assert sorted(p.name for p in old.iterdir()) == ["stale.pt"]
    (staged / "results" / "d" / "m" / "summary.json").write_text("{}")
    engine._install(staged, stage)
    assert sorted(p.name for p in old.iterdir()) == ["seed-0.pt"]
    assert (tmp_path / "results" / "d" / "m" / "summary.json").read_text() == "{}"
    assert not staged.exists() and not list((tmp_path / "results" / "d" / "m").glob(".*old*"))


def test_workers_are_spawned_never_forked():
    """A forked child of a process that initialised CUDA crashes or corrupts it: the nannies spawn."""
    import dask
    import distributed  # noqa: F401  (loads Dask's distributed settings)

    assert dask.config.get("distributed.worker.multiprocessing-method") == "spawn"


def _on_every_worker(client, function, *args, attempts: int = 10) -> dict:
    """client.run on every worker, once the workers the tests above killed are replaced: the scheduler may still
    list a dead one for a moment after wait_for_workers returns (seen once on a slow machine: CommClosedError)."""
    import time

    for attempt in range(attempts):
        client.wait_for_workers(engine._cpu_workers(), timeout=120)
        try:
            return client.run(function, *args)
        except OSError:  # distributed's CommClosedError is one
            if attempt == attempts - 1:
                raise
            time.sleep(3)


def test_workers_compute_single_threaded_with_glibc_s_default_trimming(shared_engine):
    """One thread for the numeric libraries; Dask's MALLOC_TRIM_THRESHOLD_=65536 made torch 1.8x slower."""
    for name, expected in (("OMP_NUM_THREADS", "1"), ("OPENBLAS_NUM_THREADS", "1"), ("MALLOC_TRIM_THRESHOLD_", None)):
        assert set(_on_every_worker(shared_engine, os.getenv, name).values()) == {expected}, name

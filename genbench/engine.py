"""Where stages compute: as tasks of a Dask distributed cluster whose long-lived workers import torch,
scikit-learn and the rest once (Dask: https://distributed.dask.org).

`dvc repro` starts every stage as `python stages/<stage>.py ...`. `check` runs in that process. Every other
stage is one task on the cluster, and its seeds and one-class fits are tasks of their own (`map_tasks`); the
stage process only waits, then moves the stage's outputs into place. So:

- One cluster per interpreter, import-time environment and genbench source (`cluster_key`): its workers
  import the whole of genbench when they start, and a source edit means another key, so another cluster.
  Workers never run stale code; an idle cluster exits after GENBENCH_ENGINE_IDLE seconds (120).
- Independent stale stages run concurrently. When a model or study stage runs, the other stale model and
  study stages of its dataset (they read only the prepared data, the pinned evaluator, params and code)
  are submitted too. Each task writes into `.genbench/staging/<stage key>/`, where the key hashes the
  stage's command, the content of its deps and its params values; when DVC reaches a stage, its process
  takes the staged outputs whose key matches the deps as they are then, else computes anew. Outputs are
  only ever moved into place by the stage's own process, while DVC runs it: a killed `dvc repro` leaves
  work in staging, never in an output. A model's task also stages its summary (FOLLOWERS), which DVC
  then finds ready.
- Safe: the scheduler, nannies and workers listen on 127.0.0.1 with mutual TLS (Security.temporary:
  a certificate authority made for this cluster), its certificates in a mode-0700 directory of this
  user; the HTTP servers (dashboard, /health) are stopped. A worker that dies mid-task: Dask reruns the
  task on another worker (twice at most), else the stage fails saying so. Workers are spawned (never forked) and
  run one single-threaded task at a time, so a seed's numbers do not depend on the number of workers.
- Where: GENBENCH_WORKERS CPU workers (default: one per core) plus one worker per GPU
  (CUDA_VISIBLE_DEVICES set to it; torch models' tasks need its GPU resource); on SLURM, dask-jobqueue
  jobs (`engine: {cluster: slurm, ...}` in params.yaml; README: Running on more machines).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
# Stages that run in the stage's own process (no engine round trip), and stages that submit no tasks.
LOCAL_STAGES = ("check",)
TASKLESS = ("check", "summary")
# Stages that read only the prepared data, the pinned evaluator, params and code: independent of each other.
PREFETCHED = ("model", "learning_curve", "augmentation")
# A stage computed from one other stage's outputs alone: staged by that stage's task as soon as it is done,
# under the key it will have once those outputs are installed (the staged bytes are the bytes DVC will find).
# So `dvc repro` finds a model's summary ready when it reaches it, and no summary waits for its own process.
FOLLOWERS = {"model": "summary"}
IMPORT_TIME_ENV = ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHASHSEED", "PYTHONPATH")
# Thread counts and kernel choices of the BLAS and OpenMP runtimes, fixed when the libraries load.
IMPORT_TIME_PREFIXES = ("PYTORCH_", "TORCH_", "CUBLAS_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "ATEN_", "GENBENCH_")
PRELOAD = ("numpy", "scipy.stats", "pandas", "torch", "torchvision", "torchmetrics", "sklearn", "hmmlearn.hmm",
           "matplotlib.figure")


class EngineError(RuntimeError):
    """The engine cannot run a stage; the message says why and what to do."""


# --- the cluster: one per interpreter, environment and source -----------------------------------------------


def private_dir() -> Path:
    """$XDG_RUNTIME_DIR/genbench or <tmp>/genbench-<uid>, mode 0700; refused unless it is ours alone."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    path = (Path(xdg) / "genbench" if xdg and os.path.isdir(xdg) and os.stat(xdg).st_uid == os.getuid()
            else Path(tempfile.gettempdir()) / f"genbench-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise EngineError(f"{path} must be a directory of uid {os.getuid()} with mode 0700 (it holds the engine's "
                          f"certificates): remove it, or set XDG_RUNTIME_DIR to a private directory")
    return path


def source_hash() -> str:
    """sha256 of every genbench source file (paths and bytes)."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "genbench").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cluster_key() -> str:
    imported = sorted((k, v) for k, v in os.environ.items() if k in IMPORT_TIME_ENV or k.startswith(IMPORT_TIME_PREFIXES))
    identity = [sys.executable, sys.version, str(REPO_ROOT), imported, source_hash()]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]


def engine_settings(params: dict | None = None) -> dict:
    """params.yaml's `engine:` (plain data): where the cluster runs. No stage reads it: results do not
    depend on where they were computed."""
    if params is None:
        import yaml

        path = REPO_ROOT / "params.yaml"
        params = yaml.safe_load(path.read_text()) if path.exists() else {}
    settings = {"cluster": "local", "idle_seconds": 120, "slurm": {}, **((params or {}).get("engine") or {})}
    if settings["cluster"] not in ("local", "slurm"):
        raise EngineError(f"params.yaml: engine.cluster must be 'local' or 'slurm', got {settings['cluster']!r}")
    return settings


def _cpu_workers() -> int:
    requested = os.environ.get("GENBENCH_WORKERS")
    if requested:
        if not requested.isdigit() or int(requested) < 1:
            raise EngineError(f"GENBENCH_WORKERS must be a positive integer, got {requested!r}")
        return int(requested)
    return len(os.sched_getaffinity(0))


def _gpus() -> list[str]:
    """The GPUs' indices, from nvidia-smi (no CUDA initialised here); GENBENCH_GPUS='' for none."""
    if "GENBENCH_GPUS" in os.environ:
        return [g for g in os.environ["GENBENCH_GPUS"].split(",") if g.strip()]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def worker_specs(template: dict, cpus: int, gpus: list[str]) -> dict:
    """`cpus` single-threaded CPU workers, and one per GPU that sees only its GPU and offers the GPU resource."""
    specs = {}
    for i in range(cpus):
        specs[f"cpu-{i}"] = {"cls": template["cls"], "options": {**template["options"], "nthreads": 1}}
    for gpu in gpus:
        options = {**template["options"], "nthreads": 1, "resources": {"GPU": 1},
                   "env": {**template["options"].get("env", {}), "CUDA_VISIBLE_DEVICES": gpu}}
        specs[f"gpu-{gpu}"] = {"cls": template["cls"], "options": options}
    return specs


def slurm_cluster(settings: dict, security: Any, shared_dir: Path) -> Any:
    """A dask-jobqueue SLURMCluster: each job one single-threaded worker (so numbers match the local engine)."""
    from dask_jobqueue import SLURMCluster

    slurm = dict(settings.get("slurm") or {})
    gpus = int(slurm.pop("gpus_per_job", 0))
    directives = list(slurm.pop("job_extra_directives", [])) + ([f"--gres=gpu:{gpus}"] if gpus else [])
    return SLURMCluster(
        cores=1, processes=1, memory=slurm.pop("memory", "8GiB"), walltime=slurm.pop("walltime", "04:00:00"),
        queue=slurm.pop("queue", None), account=slurm.pop("account", None), job_extra_directives=directives,
        worker_extra_args=["--preload", "genbench.engine", *(["--resources", "GPU=1"] if gpus else [])],
        job_script_prologue=[f"cd {REPO_ROOT}", "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1"],
        security=security, protocol="tls", shared_temp_directory=str(shared_dir),
        scheduler_options={"dashboard_address": None, "dashboard": False, "idle_timeout": settings["idle_seconds"]},
        python=sys.executable, **slurm)


def serve(key: str) -> None:
    """The cluster's process (started by `client()`): start the scheduler and workers, publish the address
    and the client's certificates to our private directory, and live until the scheduler is idle."""
    from distributed import LocalCluster, Nanny, Security

    if cluster_key() != key:
        return  # the source changed while starting: a later client starts the right cluster
    os.environ["GENBENCH_ENGINE_SOURCE"] = source_hash()  # the workers' code, checked by every stage task
    dask_config().__enter__()  # for the life of this process (the spawned workers inherit it)
    settings = engine_settings()
    directory = private_dir()
    security = Security.temporary()
    if settings["cluster"] == "slurm":
        shared = REPO_ROOT / ".genbench" / "engine"
        shared.mkdir(parents=True, exist_ok=True, mode=0o700)
        shared.chmod(0o700)
        cluster = slurm_cluster(settings, security, shared)
        cluster.scale(jobs=int((settings.get("slurm") or {}).get("jobs", 4)))
    else:
        cluster = LocalCluster(n_workers=0, threads_per_worker=1, processes=True, protocol="tls", host="127.0.0.1",
                               security=security, dashboard_address=None, worker_dashboard_address=None,
                               scheduler_kwargs={"dashboard": False, "idle_timeout": settings["idle_seconds"]})
        template = next(iter(cluster.new_worker_spec().values()))
        template = {"cls": Nanny, "options": {**template["options"], "preload": ["genbench.engine"]}}
        cluster.worker_spec.update(worker_specs(template, _cpu_workers(), _gpus()))
        cluster.sync(cluster._correct_state)
    cluster.scheduler.http_server.stop()  # the dashboard and /health: plain HTTP, no authentication
    if settings["cluster"] == "local":
        cluster.wait_for_workers(len(cluster.worker_spec))
    record = {"address": cluster.scheduler_address, "pid": os.getpid(), "ca": security.tls_ca_file,
              "cert": security.tls_client_cert, "key": security.tls_client_key}
    target = directory / f"engine-{key}.json"
    fd = os.open(directory / f".engine-{key}.{os.getpid()}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    os.replace(directory / f".engine-{key}.{os.getpid()}", target)
    missing: dict[str, float] = {}  # worker name -> since when it is gone
    try:
        while cluster.scheduler.status.name == "running":
            time.sleep(1)
            if settings["cluster"] == "local":
                _replace_lost_workers(cluster, missing)
    finally:
        target.unlink(missing_ok=True)
        (directory / f"engine-{key}.pid").unlink(missing_ok=True)
        cluster.close()


def _replace_lost_workers(cluster: Any, missing: dict[str, float], grace: float = 45) -> None:
    """A worker whose process died is restarted by its nanny; one not back within `grace` seconds (seen
    after workers died several times in a row) gets a new nanny, so the cluster keeps its size."""
    alive = {str(ws.name) for ws in cluster.scheduler.workers.values()}
    now = time.monotonic()
    for name in list(cluster.worker_spec):
        if name in alive:
            missing.pop(name, None)
        elif now - missing.setdefault(name, now) > grace:
            missing.pop(name)
            cluster.worker_spec[f"{name.split('+')[0]}+{int(now)}"] = cluster.worker_spec.pop(name)
            cluster.sync(cluster._correct_state)
            print(f"worker {name} did not come back: replaced", flush=True)


def dask_setup(worker: Any) -> None:
    """A worker's preload (Dask calls it as the worker starts): one thread, genbench imported whole and
    checked against the cluster's source, no HTTP server."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    single_threaded()
    os.environ["GENBENCH_PROGRESS"] = "0"  # interleaved progress bars help nobody
    for path in sorted((REPO_ROOT / "genbench").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    if worker.http_server is not None:
        worker.http_server.stop()


def single_threaded() -> None:
    """One thread for torch and the BLAS/OpenMP pools: a task's numbers then do not depend on the machine's cores."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


def in_process() -> Any:
    """A context with a Dask cluster of one single-threaded worker in this process (no port; tasks see this
    process's modules): `genbench <stage>` by hand, and the tests."""
    from contextlib import ExitStack

    from distributed import Client, LocalCluster

    single_threaded()
    stack = ExitStack()
    stack.enter_context(dask_config())
    cluster = stack.enter_context(LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                               dashboard_address=None, worker_dashboard_address=None))
    for server in [cluster.scheduler, *cluster.workers.values()]:
        server.http_server.stop()  # Dask always starts one: plain HTTP, no authentication
    stack.enter_context(Client(cluster))
    return stack


def dask_config() -> Any:
    """Dask settings of the engine: no HTTP routes (its servers are stopped once started; nothing is served
    before), one thread for the numeric libraries, and a task whose worker dies is rerun, twice at most (two tasks on workers that die together
    each count both deaths), then its stage fails (KilledWorker)."""
    import dask

    return dask.config.set({"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": [],
                            "distributed.scheduler.allowed-failures": 2,
                            "distributed.worker.profile.enabled": False,  # its sampling thread takes the GIL
                            # Dask's default also sets MALLOC_TRIM_THRESHOLD_=65536, which made torch training
                            # 1.8x slower here (cnn on digits: 2.93 s against 1.59 s a fit, one thread)
                            "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1,
                                                                    "OPENBLAS_NUM_THREADS": 1}})


def _security(record: dict) -> Any:
    from distributed import Security

    return Security(tls_ca_file=record["ca"], tls_client_cert=record["cert"], tls_client_key=record["key"],
                    require_encryption=True)


def client(timeout: float = 180) -> Any:
    """A client of this source's cluster, started in the background if there is none."""
    from distributed import Client

    key = cluster_key()
    directory = private_dir()
    record_path, pid_path = directory / f"engine-{key}.json", directory / f"engine-{key}.pid"
    deadline = time.monotonic() + timeout
    started = False
    while True:
        if record_path.exists():
            record = json.loads(record_path.read_text())
            try:
                return Client(record["address"], security=_security(record), timeout=10, set_as_default=False)
            except OSError:
                record_path.unlink(missing_ok=True)  # a cluster that died without cleaning up
        if not started:
            started = True
            try:
                fd = os.open(pid_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                try:
                    os.kill(int(pid_path.read_text() or 0), 0)  # another client is starting it
                except (ValueError, ProcessLookupError):
                    pid_path.unlink(missing_ok=True)
                    started = False
                    continue
            else:
                code = f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from genbench.engine import serve; serve({key!r})"
                log = open(directory / f"engine-{key}.log", "w")
                process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, start_new_session=True,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)
                os.write(fd, str(process.pid).encode())
                os.close(fd)
        if time.monotonic() > deadline:
            raise EngineError(f"the engine did not start within {timeout:.0f} s: see {directory / f'engine-{key}.log'}")
        time.sleep(0.2)


# --- tasks inside a stage ------------------------------------------------------------------------------------


def _reporter() -> Callable[[str], None]:
    """Where a stage's progress lines go: printed here, or, on a worker, sent to the stage's process."""
    from distributed import get_worker

    try:
        worker = get_worker()
    except ValueError:
        return lambda message: print(message, flush=True)
    topic = f"genbench-{worker.get_current_task()}"
    return lambda message: worker.log_event(topic, message)


def map_tasks(function: Callable, tasks: list[tuple], label: str, gpu: bool = False, **shared: Any) -> list:
    """`function(task, **shared)` for every task, as tasks of the engine; the results in the order given.
    From a stage running on the engine, its tasks join the same cluster; elsewhere (a test, a notebook),
    the default Dask client runs them. `gpu`: the tasks need a GPU worker."""
    from contextlib import nullcontext

    from distributed import KilledWorker, get_client, get_worker, wait, worker_client

    try:
        get_worker()
        context = worker_client()
    except ValueError:  # not on a worker: the default client (genbench.cli runs one in-process)
        try:
            context = nullcontext(get_client())
        except ValueError:
            context = client()
    report, start, done = _reporter(), time.perf_counter(), []
    with context as dask:
        if gpu and not any("GPU" in w.get("resources", {}) for w in dask.scheduler_info()["workers"].values()):
            raise EngineError(f"{label}: params.yaml asks for a GPU, and the engine has no GPU worker "
                              "(nvidia-smi lists none, or GENBENCH_GPUS is empty): set device: cpu")
        futures = dask.map(function, tasks, pure=False, resources={"GPU": 1} if gpu else None,
                           key=[f"{label}/{'-'.join(map(str, t))}-{os.urandom(4).hex()}" for t in tasks], **shared)
        for task, future in zip(tasks, futures):
            def finished(future: Any, task: tuple = task) -> None:
                done.append(task)
                report(f"{label}: {', '.join(map(str, task))} {'done' if future.status == 'finished' else future.status} "
                       f"({len(done)}/{len(tasks)} tasks, {time.perf_counter() - start:.0f} s)")
            future.add_done_callback(finished)
        try:
            # Blocks on an event (as_completed would wake this thread ten times a second: with a few dozen
            # stages waiting on a worker, that took the GIL from its running task often enough to halve its speed)
            pending = set(futures)
            while pending:
                pending = wait(pending, return_when="FIRST_COMPLETED").not_done
                for future in futures:
                    if future.status == "error":
                        future.result()  # raises the task's error
            return dask.gather(futures)
        except KilledWorker as error:
            dask.cancel(futures)
            raise EngineError(_killed(error)) from None
        except BaseException:
            dask.cancel(futures)
            raise


def _killed(error: Exception) -> str:
    return (f"a worker died twice running {getattr(error, 'task', error)} (killed, or out of memory): nothing was "
            "recorded; rerun `uv run dvc repro`, with fewer GENBENCH_WORKERS if memory ran out")


def cluster_size() -> int:
    """How many workers the engine has (a cost record: results do not depend on it)."""
    from distributed import get_client

    try:
        return len(get_client().scheduler_info()["workers"])
    except ValueError:
        return 0  # no engine: the stage ran no tasks


# --- a stage: staged on the engine, installed by the stage's process ---------------------------------------------


def _pipeline_stages() -> dict[str, tuple[Path, dict]]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    found = {}
    for path in [REPO_ROOT / "dvc.yaml", *sorted((REPO_ROOT / "pipelines").glob("*/dvc.yaml"))]:
        if path.exists():
            for name, stage in (yaml.load(path.read_text(), Loader=loader).get("stages") or {}).items():
                found[stage["cmd"]] = (path, {"name": name, **stage})
    return found


def _lookup(params: dict, dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(item.relative_to(path)).encode() + b"\0" + hashlib.sha256(item.read_bytes()).digest())
    elif path.exists():
        digest.update(path.read_bytes())
    else:
        digest.update(b"missing")
    return digest.hexdigest()


def _param_keys(stage: dict) -> list[str]:
    """A stage's params keys: listed bare (params.yaml) or under the file DVC reads them from (params.json,
    a copy of params.yaml's values that the `check` stage writes)."""
    keys: list[str] = []
    for entry in stage.get("params", []):
        keys += [entry] if isinstance(entry, str) else [k for listed in entry.values() for k in listed]
    return keys


def stage_key(stage: dict, params: dict, root: Path = REPO_ROOT) -> str:
    """What a stage's outputs are a function of: its command, its deps' content, its params' values.
    `root`: a staging folder whose outputs stand in for the installed ones (a follower's key)."""
    def located(dep: str) -> Path:
        return root / dep if (root / dep).exists() else REPO_ROOT / dep

    identity = [stage["cmd"], [(d, _content_hash(located(d))) for d in stage.get("deps", [])],
                [(p, _lookup(params, p)) for p in _param_keys(stage)]]
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]


def outputs(stage: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o
            for kind in ("outs", "metrics", "plots") for o in stage.get(kind, [])]


def staging_dir() -> Path:
    return REPO_ROOT / ".genbench" / "staging"


def run_staged(stage: str, args: list[str], key: str, root: Path = REPO_ROOT) -> str:
    """On a worker: run the stage with its outputs under staging/<key>/ (done once per key), reading its
    inputs under `root`; then stage its follower (FOLLOWERS) from these outputs."""
    import importlib

    from genbench.cli import STAGES
    from genbench.config import load_params

    staged = staging_dir() / key
    if staged.exists():
        return str(staged)
    _same_source()
    partial = staging_dir() / f"{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # a worker that died here before
    partial.mkdir(parents=True)
    module, function, positional = STAGES[stage]
    run = getattr(importlib.import_module(module), function)
    params = load_params(REPO_ROOT / "params.yaml")
    try:
        run(params, *args[: len(positional)], root=root, out=partial)
        _same_source()  # a module first imported while the source was being edited
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if stage in FOLLOWERS:  # before this stage's outputs show: whoever installs them finds the follower staged
        _stage_follower(FOLLOWERS[stage], args, partial, params)
    os.replace(partial, staged)
    return str(staged)


def _stage_follower(stage: str, args: list[str], inputs: Path, params: dict) -> None:
    """Stage `stage` from the staged outputs `inputs` of the stage it follows. A failure here is left for the
    follower's own run to report (it computes anew, and DVC shows its error)."""
    found = _pipeline_stages().get(" ".join(["python", f"stages/{stage}.py", *args]))
    if found is None:
        return
    try:
        run_staged(stage, args, stage_key(found[1], params, root=inputs), root=inputs)
    except Exception as error:  # noqa: BLE001 - reported by the follower's own run
        _reporter()(f"{stage} {' '.join(args)}: not staged ({type(error).__name__}: {error}); its stage computes it")


def _same_source() -> None:
    expected = os.environ.get("GENBENCH_ENGINE_SOURCE")
    if expected is not None and source_hash() != expected:
        raise EngineError("genbench's source changed since this engine started, so its workers run older code: "
                          "rerun `uv run dvc repro` (a new engine starts for the new source)")


def _stale(stage: dict, lock: dict, params: dict) -> bool:
    """Whether DVC will rerun `stage`, from its dvc.lock entry (a cheap check: prefetching only)."""
    entry = (lock.get("stages") or {}).get(stage["name"])
    if entry is None or any(not (REPO_ROOT / o).exists() for o in outputs(stage)):
        return True
    for dep in entry.get("deps", []):
        path = REPO_ROOT / dep["path"]
        if path.is_dir():  # the md5 its producer's lock entry records for that output (DVC hashes no dir here)
            produced = [o for e in (lock.get("stages") or {}).values() for o in e.get("outs", [])
                        if o["path"] == dep["path"]]
            if not produced or produced[0].get("md5") != dep.get("md5"):
                return True
        elif not path.exists() or hashlib.md5(path.read_bytes()).hexdigest() != dep.get("md5"):
            return True
    recorded = {k: v for values in (entry.get("params") or {}).values() for k, v in values.items()}
    return any(_plain(recorded.get(p)) != _plain(_lookup(params, p)) for p in _param_keys(stage))


def _plain(value: Any) -> Any:
    """A params value as either YAML reader gives it: DVC's lock keeps `1e-06` as a string, PyYAML reads it
    as one too, params.yaml may hold the float."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _prefetch(dask: Any, pipeline: Path, current: str, params: dict) -> None:
    """Submit the other stale model and study stages of this pipeline (they depend on none of each other)."""
    import yaml

    lock_path = pipeline.with_name("dvc.lock")
    lock = yaml.load(lock_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) \
        if lock_path.exists() else {}
    published = set(dask.list_datasets())
    stages = _pipeline_stages()
    for cmd, (path, stage) in stages.items():
        parts = cmd.split()
        kind = Path(parts[1]).stem
        if path != pipeline or cmd == current or kind not in (*PREFETCHED, *FOLLOWERS.values()) or \
                not _stale(stage, lock or {}, params):
            continue
        leader = next((k for k, v in FOLLOWERS.items() if v == kind), None)
        if leader and _stale(stages[" ".join(["python", f"stages/{leader}.py", *parts[2:]])][1], lock or {}, params):
            continue  # staged by its leader's task, once the leader is computed
        key = stage_key(stage, params)
        if f"genbench-{key}" in published or (staging_dir() / key).exists():
            continue
        _publish(dask, kind, parts[2:], key)


def _publish(dask: Any, stage: str, args: list[str], key: str, **options: Any) -> Any:
    """Submit the stage's task and publish it under the stage's key, for whichever process installs it.
    The task gets a key of its own: for a key it still holds, the scheduler would hand back the finished
    task's result (a staging folder installed and gone) instead of computing anew."""
    future = dask.submit(run_staged, stage, args, key, key=f"stage-{key}-{uuid.uuid4().hex[:12]}", pure=False,
                         **options)
    dask.publish_dataset(future, name=f"genbench-{key}")
    return future


def _install(staged: Path, stage: dict) -> None:
    """Move the staged outputs into place, each replacing the last one (persist: DVC left it there)."""
    missing = [out for out in outputs(stage) if not (staged / out).exists()]
    if missing:
        raise EngineError(f"the stage wrote no {', '.join(missing)}: a bug in its code (nothing was installed)")
    for out in outputs(stage):
        source, target = staged / out, REPO_ROOT / out
        target.parent.mkdir(parents=True, exist_ok=True)
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(source, target)
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    shutil.rmtree(staged)
    week = time.time() - 7 * 24 * 3600
    for entry in staging_dir().iterdir():  # staged for deps that changed before their stage ran
        if entry.stat().st_mtime < week:
            shutil.rmtree(entry, ignore_errors=True)


EXPECTED_ERRORS = ("ConfigError", "FileNotFoundError", "TrainingDiverged", "DatasetUnavailable", "EngineError")


def run_stage(stage: str, args: list[str]) -> int:
    """A stage script's entry: `check` here, any other on the engine (its outputs staged, then installed)."""
    from genbench.cli import main

    if stage in LOCAL_STAGES:
        return main([stage, *args])
    from genbench.config import ConfigError, load_params

    try:
        params = load_params(REPO_ROOT / "params.yaml")
        cmd = " ".join(["python", f"stages/{stage}.py", *args])
        found = _pipeline_stages().get(cmd)
        if found is None:
            raise ConfigError(f"no stage in dvc.yaml or pipelines/*/dvc.yaml runs `{cmd}`: "
                              "run `uv run genbench pipelines`, then `uv run dvc repro`")
        pipeline, definition = found
        key = stage_key(definition, params)
        staged = staging_dir() / key
        if not staged.exists():
            _compute(stage, args, key, pipeline, cmd, params)
        _install(staged, definition)
    except Exception as error:
        if type(error).__name__ not in EXPECTED_ERRORS:
            raise
        print(f"genbench {stage}: error: {error}", file=sys.stderr)
        return 1
    return 0


def _compute(stage: str, args: list[str], key: str, pipeline: Path, cmd: str, params: dict) -> None:
    from concurrent.futures import CancelledError

    from distributed import KilledWorker

    with client() as dask:
        dask.subscribe_topic(f"genbench-stage-{key}", lambda event: print(event[1], flush=True))
        name = f"genbench-{key}"
        # Submitted by another stage's look-ahead, or by a run killed before it could install: wait for that.
        future = dask.get_dataset(name) if name in dask.list_datasets() else None
        if future is None:  # ahead of the look-ahead's stages: `dvc repro` is waiting for this one
            future = _publish(dask, stage, args, key, priority=1)
        if stage in (*PREFETCHED, *FOLLOWERS.values()) and os.environ.get("GENBENCH_PREFETCH", "1") != "0":
            _prefetch(dask, pipeline, cmd, params)
        try:
            future.result()
            if not (staging_dir() / key).exists():  # that task's outputs were installed before, by a run in
                dask.unpublish_dataset(name)        # this engine's lifetime (forced, or outputs removed): anew
                _publish(dask, stage, args, key, priority=1).result()
        except KilledWorker as error:
            raise EngineError(_killed(error)) from None
        except (CancelledError, OSError) as error:
            raise EngineError(f"the engine stopped while the stage ran ({type(error).__name__}): rerun `uv run dvc "
                              f"repro`; its log: {private_dir() / f'engine-{cluster_key()}.log'}") from None
        finally:
            dask.unpublish_dataset(name)

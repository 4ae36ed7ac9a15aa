"""Where a stage's tasks run: in this process, or in `workers` forked single-threaded processes on the CPU.

One thread per task makes a seed's numbers independent of the number of workers and cores; on a GPU the
tasks run one after another in this process, so nothing ever forks a process that may have initialised
CUDA. GENBENCH_WORKERS overrides the count."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import torch

from genbench.config import ConfigError


def _worker_init() -> None:
    """One thread per worker; die with the stage (a killed stage must not leave workers writing)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)
    os.environ["GENBENCH_PROGRESS"] = "0"  # interleaved progress bars help nobody
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the stage died before prctl took effect
            os._exit(1)


def model_device(model: Any, configured: torch.device) -> torch.device:
    """Where `model` computes: the configured device for a model with a `device` setting (the torch
    models), else the CPU (scikit-learn and numpy models), whose seeds then run in parallel workers
    even on a GPU machine, and whose cost records say cpu."""
    return configured if "device" in model.get_params() else torch.device("cpu")


def worker_count(device: torch.device, tasks: int) -> int:
    if device.type != "cpu":
        return 1
    requested = os.environ.get("GENBENCH_WORKERS")
    if requested:
        if not requested.isdigit() or int(requested) < 1:
            raise ConfigError(f"GENBENCH_WORKERS must be a positive integer, got {requested!r}")
        return min(int(requested), tasks)
    return max(1, min(len(os.sched_getaffinity(0)), tasks))


def run_tasks(tasks: list[tuple], workers: int, label: str, run: Any) -> list[dict]:
    """Every task's result, in the order given; workers > 1 forks that many single-threaded processes.
    `run(task)`: a module-level function (the stage's job is inherited through the fork)."""
    results: dict[tuple, dict] = {}
    start = time.perf_counter()

    def done(task: tuple, result: dict) -> None:
        results[task] = result
        what = (f"seed {task[1]}" if task[0] == "seed" else f"seed {task[1]}, normal class {task[2]}"
                if task[0] == "one_class" else ", ".join(map(str, task)))
        print(f"{label}: {what} done ({len(results)}/{len(tasks)} tasks, {time.perf_counter() - start:.0f} s)",
              flush=True)

    if workers == 1:
        torch.set_num_threads(1)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            for task in tasks:
                done(task, run(task))
    else:
        import multiprocessing

        if torch.cuda.is_initialized():  # never fork a process with a CUDA context
            raise RuntimeError("CUDA is initialised in this process: refusing to fork workers; set GENBENCH_WORKERS=1")
        # Workers must start with SIGTERM's default action, or Pool.terminate() (on a failed task) waits
        # forever for a worker that swallows it: set it before forking instead of in the initializer (a race).
        handler = signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)
        finally:
            signal.signal(signal.SIGTERM, handler)
        with pool:
            for task, result in zip(tasks, pool.imap(run, tasks, chunksize=1)):
                done(task, result)
            pool.close()  # let the workers finish cleanly; __exit__'s terminate() is for the error path
            pool.join()
    return [results[t] for t in tasks]

"""Tasks for tests/test_engine.py, in a module of their own: the engine's scheduler and workers import it
(Client.upload_file), as they import genbench's own task functions."""

from __future__ import annotations

import os
from pathlib import Path


def die_once(task: tuple, marker: str) -> int:
    flag = Path(marker) / f"{task[0]}"
    if not flag.exists():
        flag.touch()
        os._exit(1)  # as the kernel's OOM killer or a kill -9 would end the worker
    return os.getpid()


def die_always(task: tuple) -> int:
    os._exit(1)


def fail(task: tuple) -> int:
    if task[0] == 1:
        raise ValueError("task 1 failed")
    return task[0]

"""Warm stage runner: why a stage costs its own work and not its imports.

DVC starts every stage as a fresh `python stages/<stage>.py` process, and importing torch,
torchvision, scikit-learn and torchmetrics takes 5-10 s on a small CPU: with a hundred stages that
is more than the work itself. So the first stage of a run starts a server in the background that
imports those third-party libraries once, then forks one child per stage. The child imports
genbench's own code fresh from disk (edits are always seen), takes over the client's stdin, stdout,
stderr (passed over a Unix socket), working directory and environment, runs the stage, and its exit
status goes back to the client, which DVC sees as the stage's process.

Without a running server (the first stage), or with GENBENCH_STAGE_SERVER=0, a stage runs
in-process exactly as before. The server exits after GENBENCH_STAGE_SERVER_IDLE seconds (120) with
no request. Only the standard library is imported here, so a client starts in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

PRELOAD = (
    "numpy", "scipy.special", "scipy.stats", "scipy.linalg", "pandas", "yaml", "tqdm.auto",
    "torch", "torch.nn", "torch.nn.functional", "torch.optim",
    "torchvision", "torchvision.utils", "torchvision.datasets",
    "torchmetrics", "torchmetrics.functional.classification", "torchmetrics.image.fid",
    "sklearn.model_selection", "sklearn.datasets", "sklearn.metrics", "sklearn.mixture", "sklearn.linear_model",
    "sklearn.naive_bayes", "sklearn.neighbors", "sklearn.svm", "sklearn.ensemble", "sklearn.neural_network",
    "sklearn.cluster", "sklearn.calibration", "sklearn.preprocessing", "hmmlearn.hmm",
    "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg",
)
_MESSAGE_LIMIT = 1 << 20


def socket_path() -> Path:
    """One server per interpreter and checkout: a server never serves another environment."""
    here = Path(__file__).resolve().parent
    key = hashlib.sha256(f"{sys.executable}\0{here}\0{sys.version}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"genbench-{os.getuid()}-{key}.sock"


def run_stage(stage: str, args: list[str]) -> int:
    """Run `genbench <stage> <args>` through the warm server when there is one, else in-process."""
    argv = [stage, *args]
    if os.environ.get("GENBENCH_STAGE_SERVER", "1") != "0":
        code = _run_remote(argv)
        if code is not None:
            return code
        _start_server()
    from genbench.cli import main

    return main(argv)


def _run_remote(argv: list[str]) -> int | None:
    path = socket_path()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(str(path))
    except OSError:
        client.close()
        return None
    with client:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
        socket.send_fds(client, [request[:1]], [0, 1, 2])  # the descriptors ride on the first byte
        client.sendall(request[1:])
        reader = client.makefile("r")
        started = reader.readline()
        if not started:
            return None  # the server went away before forking: run in-process instead
        child = json.loads(started)["pid"]

        def forward(signum, _frame):  # Ctrl-C or DVC stopping the stage reaches the child
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, forward)
        finished = reader.readline()
        return json.loads(finished)["exit"] if finished else 1


def _start_server() -> None:
    """Start the server unless one is already starting (its pid file exists and it is alive)."""
    pid_file = socket_path().with_suffix(".pid")
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
        return  # starting up: this stage runs in-process, the next ones will find it
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        pid_file.unlink(missing_ok=True)
    try:
        fd = os.open(pid_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    # Started from this checkout's root, so that the server computes the same socket path and its
    # children import this checkout's genbench, whatever the working directory.
    root = Path(__file__).resolve().parents[1]
    code = f"import sys; sys.path.insert(0, {str(root)!r}); from genbench.launcher import serve; serve()"
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.write(fd, str(process.pid).encode())
    os.close(fd)


def serve() -> None:
    import importlib

    os.environ.setdefault("MPLBACKEND", "Agg")
    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - an optional library missing only makes its stages slower
            pass
    path = socket_path()
    pid_file = path.with_suffix(".pid")
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    server.settimeout(float(os.environ.get("GENBENCH_STAGE_SERVER_IDLE", "120")))
    running = _Counter()
    try:
        while True:
            try:
                connection, _ = server.accept()
            except socket.timeout:
                if running.value == 0:
                    break
                continue
            try:
                request, fds = _receive(connection)
            except (OSError, ValueError):  # a probe or a broken client: drop it, keep serving
                connection.close()
                continue
            running.add(1)
            _handle(server, connection, request, fds, running)
    finally:
        path.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        server.close()


class _Counter:
    """Stages in flight: the server only idles out when none is running."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self.value += delta


def _receive(connection: socket.socket) -> tuple[dict, list[int]]:
    """One request: a JSON line, with the client's stdin, stdout and stderr on its first byte."""
    connection.settimeout(10)
    message, fds, _flags, _addr = socket.recv_fds(connection, _MESSAGE_LIMIT, 3)
    try:
        if len(fds) != 3:
            raise ValueError("a request must carry stdin, stdout and stderr")
        while not message.endswith(b"\n"):
            chunk = connection.recv(_MESSAGE_LIMIT)
            if not chunk or len(message) > _MESSAGE_LIMIT:
                raise ValueError("incomplete request")
            message += chunk
        connection.settimeout(None)
        return json.loads(message), fds
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise


def _handle(server: socket.socket, connection: socket.socket, request: dict, fds: list[int],
            running: _Counter) -> None:
    pid = os.fork()
    if pid == 0:  # the stage
        server.close()
        connection.close()
        code = 1
        try:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.setsid()
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            sys.argv = ["genbench", *request["argv"]]
            from genbench.cli import main

            code = main(request["argv"])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:  # noqa: BLE001 - report like an uncaught exception would
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    connection.sendall((json.dumps({"pid": pid}) + "\n").encode())

    def wait() -> None:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        try:
            connection.sendall((json.dumps({"exit": code if code >= 0 else 128 - code}) + "\n").encode())
        except OSError:
            pass  # the client was killed; nothing to tell
        connection.close()
        running.add(-1)

    threading.Thread(target=wait, daemon=True).start()


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()

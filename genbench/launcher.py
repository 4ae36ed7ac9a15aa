"""Warm stage runner: why a stage costs its own work and not its imports.

DVC starts every stage as a fresh `python stages/<stage>.py` process, and importing torch,
torchvision, scikit-learn and torchmetrics takes 5-10 s on a small CPU: with a hundred stages that
is more than the work itself. So the first stage of a run starts a server in the background that
imports those third-party libraries once, then forks one child per stage. The child imports
genbench's own code fresh from disk (edits are always seen), takes over the client's stdin, stdout,
stderr (passed over a Unix socket), working directory and environment, runs the stage, and its exit
status goes back to the client, which DVC sees as the stage's process.

Why it is safe:
- Only this user reaches it: the socket lives in a directory that must be ours alone (mode 0700,
  not a symlink), and each end checks the other's uid (SO_PEERCRED) before anything is sent.
- Nothing outlives its client: if the client dies first (kill -9 of it, or of `dvc repro` with its
  process group), the server kills the stage's process group, the stage's own workers included.
- A server serves only clients whose import-time variables (thread counts, CUDA_VISIBLE_DEVICES,
  PYTORCH_*, LD_*, PYTHONPATH, ...) equal those it imported under: they are part of its name.
- No CUDA in a process that forks: the server only imports (torch.cuda.is_available() is told to
  ask NVML), and should CUDA ever be initialised in it, it refuses to fork and exits.
Whenever the server cannot be used, the stage runs in-process (with one line on stderr if unsafe).

Without a running server (the first stage), or with GENBENCH_STAGE_SERVER=0, a stage runs
in-process exactly as before. The server exits after GENBENCH_STAGE_SERVER_IDLE seconds (120) with
no request. Only the standard library is imported here, so a client starts in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
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
# Read by the preloaded libraries when they are imported, so a server only serves clients that agree.
IMPORT_TIME_ENV = ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHASHSEED", "PYTHONPATH")
# Thread counts and kernel choices of the BLAS and OpenMP runtimes (MKL_CBWR, OPENBLAS_CORETYPE,
# ATEN_CPU_CAPABILITY, ...) are fixed when the libraries load, and they change the arithmetic. Not KMP_*:
# torch and scikit-learn set KMP_DUPLICATE_LIB_OK and KMP_INIT_AT_FORK themselves when imported.
IMPORT_TIME_PREFIXES = ("PYTORCH_", "TORCH_", "CUBLAS_", "NVIDIA_", "OMP_", "MKL_", "OPENBLAS_", "ATEN_")
_MESSAGE_LIMIT = 1 << 20
_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for an orphaned stage


class Unsafe(Exception):
    """The server cannot be used safely; the message says why."""


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/genbench when that is our directory, else <tmp>/genbench-<uid>."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.stat(xdg).st_uid == os.getuid():
        return Path(xdg) / "genbench"
    return Path(tempfile.gettempdir()) / f"genbench-{os.getuid()}"


def _private_dir() -> Path:
    """runtime_dir(), created with mode 0700; Unsafe unless it is a real directory that is ours alone."""
    path = runtime_dir()
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as error:
        raise Unsafe(f"cannot create {path}: {error}") from None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise Unsafe(f"{path} is not a directory")
    if info.st_uid != os.getuid():
        raise Unsafe(f"{path} belongs to uid {info.st_uid}")
    if info.st_mode & 0o077:
        raise Unsafe(f"{path} is open to other users (mode {info.st_mode & 0o777:o})")
    return path


def socket_path() -> Path:
    """One server per interpreter, checkout and import-time environment: it never serves another."""
    here = Path(__file__).resolve().parent
    imported = sorted((name, value) for name, value in os.environ.items()
                      if name in IMPORT_TIME_ENV or name.startswith(IMPORT_TIME_PREFIXES))
    key = hashlib.sha256(json.dumps([sys.executable, str(here), sys.version, imported]).encode()).hexdigest()[:16]
    return _private_dir() / f"stage-{key}.sock"


def _peer_uid(connection: socket.socket) -> int:
    creds = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]  # pid, uid, gid


def _trusted(connection: socket.socket) -> bool:
    """Whether the process at the other end of the connection runs as this user."""
    return _peer_uid(connection) == os.getuid()


def run_stage(stage: str, args: list[str]) -> int:
    """Run `genbench <stage> <args>` through the warm server when there is one, else in-process."""
    argv = [stage, *args]
    if os.environ.get("GENBENCH_STAGE_SERVER", "1") != "0":
        try:
            code = _run_remote(argv)
            if code is not None:
                return code
            _start_server()
        except Unsafe as reason:
            print(f"genbench: not using the warm stage server: {reason}", file=sys.stderr)
    from genbench.cli import main

    return main(argv)


def _run_remote(argv: list[str]) -> int | None:
    """The stage's exit status from a child of the server, or None when no server took the request."""
    path = socket_path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        try:
            client.connect(str(path))
        except OSError:
            return None
        if not _trusted(client):
            raise Unsafe(f"{path} is served by uid {_peer_uid(client)}, not by this user")
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
        reader = client.makefile("r")
        try:
            socket.send_fds(client, [request[:1]], [0, 1, 2])  # the descriptors ride on the first byte
            client.sendall(request[1:])
            started = reader.readline()
        except OSError:
            return None
        if not started:
            return None  # the server went away or refused before forking: run in-process instead
        child = json.loads(started)["pid"]

        def forward(signum, _frame):  # Ctrl-C or DVC stopping the stage reaches the child
            try:
                os.kill(child, signum)
            except ProcessLookupError:
                pass

        previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            finished = reader.readline()
        except OSError:
            finished = ""
        finally:  # a handler left behind would be inherited by forked workers, which then ignore SIGTERM
            for signum, handler in previous.items():
                signal.signal(signum, handler)
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


def serve(preload: tuple[str, ...] = PRELOAD) -> None:
    """The server: import `preload`, then fork a stage per request until idle."""
    import importlib

    try:
        path = socket_path()  # named after the environment as the client left it
    except Unsafe:
        return
    pid_file = path.with_suffix(".pid")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # so torch.cuda.is_available() leaves CUDA alone
    os.environ.setdefault("MPLBACKEND", "Agg")
    for module in preload:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - an optional library missing only makes its stages slower
            pass
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stages: list[threading.Thread] = []
    try:
        path.unlink(missing_ok=True)
        server.bind(str(path))
        server.listen(8)
        server.settimeout(float(os.environ.get("GENBENCH_STAGE_SERVER_IDLE", "120")))
        while True:
            try:
                connection, _ = server.accept()
            except socket.timeout:
                stages = [stage for stage in stages if stage.is_alive()]
                if not stages:
                    break
                continue
            try:
                if not _trusted(connection):
                    raise PermissionError("another user")
                request, fds = _receive(connection)
            except (OSError, ValueError):  # another user, a probe or a broken client: drop it unread
                connection.close()
                continue
            if _cuda_initialized():  # a forked child would inherit a broken CUDA: refuse, and retire
                for fd in fds:
                    os.close(fd)
                connection.close()
                break
            stages.append(_start_stage(server, connection, request, fds))
    finally:
        path.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
        server.close()
        for stage in stages:  # stages in flight still finish and report
            stage.join()


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


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


def _start_stage(server: socket.socket, connection: socket.socket, request: dict, fds: list[int]) -> threading.Thread:
    """Fork the stage, and a thread that reports its exit status to the client."""
    pid = os.fork()
    if pid == 0:  # the stage
        code = 1
        try:
            os.setsid()  # its own process group: killed as a whole if the client dies
            server.close()
            connection.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
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

    def report() -> None:
        with connection:
            try:
                connection.sendall((json.dumps({"pid": pid}) + "\n").encode())
            except OSError:
                pass  # the client is already gone: _wait sees that too
            code = _wait(pid, connection)
            try:
                connection.sendall((json.dumps({"exit": code if code >= 0 else 128 - code}) + "\n").encode())
            except OSError:
                pass

    thread = threading.Thread(target=report, daemon=True)
    thread.start()
    return thread


def _wait(pid: int, connection: socket.socket) -> int:
    """The stage's exit code. If the client's connection closes first (the client was killed), the
    stage's process group is killed: nothing may go on writing outputs behind DVC's back."""
    try:
        pidfd = os.pidfd_open(pid)  # readable once the stage has exited
    except (AttributeError, OSError):
        pidfd = None  # an old kernel: look every 0.1 s
    try:
        while not _exited(pid):
            watched = [connection] if pidfd is None else [connection, pidfd]
            ready, _, _ = select.select(watched, [], [], 0.1 if pidfd is None else None)
            if connection in ready and _closed(connection):
                _kill_group(pid)
                break
    finally:
        if pidfd is not None:
            os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _closed(connection: socket.socket) -> bool:
    """Whether the client hung up (it sends nothing after its request)."""
    try:
        return not connection.recv(1)
    except OSError:
        return True


def _exited(pid: int) -> bool:
    """Whether the stage has exited, without reaping it: its pid and process group id stay ours."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _kill_group(pid: int) -> None:
    """SIGTERM the stage's process group, then SIGKILL it (workers included) after a grace period."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:  # forked but not yet in its own session: no workers yet
            os.kill(pid, signum)
        deadline = time.monotonic() + _GRACE
        while signum == signal.SIGTERM and not _exited(pid) and time.monotonic() < deadline:
            time.sleep(0.05)


if __name__ == "__main__" and sys.argv[1:] == ["serve"]:
    serve()

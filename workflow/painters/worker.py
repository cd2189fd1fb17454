"""A resident evaluation worker: one loaded model serving many small `painters evaluate --worker` calls.

Why: the workflow runs one job per (model, plan, benchmark), which gives the
finest caching, but a fresh process pays ~5 s of imports plus model loading and
task building before a tiny model does under a second of work. With --worker,
the job's process is a thin client: it starts (or finds) a worker for its model
and asks it to score the plans. The worker loads the model and builds each task
once, and stays up until it has been idle for `idle_seconds`.

Guarantees kept:
- The worker writes each result to a hidden temporary file beside its final
  path; the client renames it into place. A killed client (a killed job) never
  publishes anything, so Snakemake's view of finished outputs stays true.
- Requests are served one at a time; concurrent clients wait their turn.
- A worker is private to one model spec, one user, one Python, one version of
  this package's code, and one Slurm job (SLURM_JOB_ID), so a Slurm allocation
  never serves another allocation's jobs.

Protocol: JSON lines over a unix socket. Client -> worker: one request.
Worker -> client: {"log": str} ..., {"publish": [tmp, final]} ..., then
{"done": true} or {"error": str, "kind": "ValueError" | "FileNotFoundError" | "RuntimeError"}.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from painters.evaluate import ModelSpec, Request

# the package's modules a worker executes (its code identity)
_WORKER_MODULES = ("__init__.py", "benchmarks.py", "evaluate.py", "plan.py", "results.py", "surgery.py", "worker.py")
ERROR_KINDS = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError}


class WorkerError(RuntimeError):
    """The worker failed in a way that is not the user's input: its log has the details."""


def worker_dir() -> Path:
    path = Path(os.environ.get("PAINTERS_WORKER_DIR") or Path(tempfile.gettempdir()) / f"painters-workers-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _code_stamp() -> str:
    """Changes whenever a module the worker runs changes, so edited code gets a fresh worker."""
    package = Path(__file__).parent
    return ";".join(f"{name}:{(package / name).stat().st_mtime_ns}" for name in _WORKER_MODULES)


def worker_key(spec: ModelSpec) -> str:
    identity = {
        "spec": spec.to_json(),
        "python": sys.executable,
        "code": _code_stamp(),
        "slurm_job": os.environ.get("SLURM_JOB_ID", ""),
        "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


# ---------------------------------------------------------------- client side


def submit(spec: ModelSpec, request: Request, idle_seconds: float = 120.0, attempts: int = 3) -> None:
    """Have the worker for `spec` run `request`, printing its log; publish each finished file."""
    key = worker_key(spec)
    folder = worker_dir()
    for _ in range(attempts):
        connection = _connect_or_start(spec, folder / f"{key}.sock", folder / f"{key}.log", idle_seconds)
        with connection:
            if _converse(connection, request, folder / f"{key}.log"):
                return
        # the worker closed without a word: it was exiting on idle as we connected; start a new one
    raise WorkerError(f"the worker did not answer after {attempts} attempts; see {folder / f'{key}.log'}")


def _converse(connection: socket.socket, request: Request, log_path: Path) -> bool:
    """Send the request and follow the answer. False if the worker said nothing at all."""
    connection.sendall((json.dumps(asdict(request)) + "\n").encode())
    answered = False
    for message in _messages(connection):
        answered = True
        if "log" in message:
            print(message["log"], flush=True)
        elif "publish" in message:
            tmp, final = message["publish"]
            os.replace(tmp, final)
        elif "done" in message:
            return True
        elif "error" in message:
            kind = ERROR_KINDS.get(message.get("kind"), WorkerError)
            raise kind(message["error"])
    if answered:
        raise WorkerError(f"the worker stopped in the middle of a request; see {log_path}")
    return False


def _messages(connection: socket.socket):
    with connection.makefile("r", encoding="utf-8") as lines:
        for line in lines:
            yield json.loads(line)


def _try_connect(path: Path) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
        return connection
    except (FileNotFoundError, ConnectionRefusedError):
        connection.close()
        return None


def _connect_or_start(spec: ModelSpec, sock: Path, log: Path, idle_seconds: float) -> socket.socket:
    connection = _try_connect(sock)
    if connection:
        return connection
    # one client starts the worker; the others wait on the lock, then connect
    with open(sock.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        connection = _try_connect(sock)
        if connection:
            return connection
        sock.unlink(missing_ok=True)  # left by a worker that was killed
        with open(log, "a") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "painters.worker", json.dumps(spec.to_json()), str(sock), str(idle_seconds)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this job's process group; exits on its own when idle
            )
        while True:
            connection = _try_connect(sock)
            if connection:
                return connection
            if process.poll() is not None:
                failure = _startup_error_path(sock)
                if failure.exists():  # a user error while loading (e.g. the model): report it as such
                    error = json.loads(failure.read_text())
                    failure.unlink()
                    raise ERROR_KINDS[error["kind"]](error["error"])
                tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
                raise WorkerError(f"the worker exited while starting (status {process.returncode}); log {log}:\n{tail}")
            time.sleep(0.05)


# ---------------------------------------------------------------- worker side


def _startup_error_path(sock: Path) -> Path:
    return sock.with_suffix(".error")


def serve(spec: ModelSpec, sock: Path, idle_seconds: float) -> None:
    from painters.evaluate import Session

    try:
        session = Session(spec, log=lambda line: print(line, flush=True))
    except (ValueError, FileNotFoundError) as error:
        print(f"{type(error).__name__}: {error}", flush=True)
        _startup_error_path(sock).write_text(json.dumps({"kind": type(error).__name__, "error": str(error)}))
        sys.exit(2)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp_sock = sock.with_name(f".{sock.name}.{os.getpid()}")
    server.bind(str(tmp_sock))
    server.listen(64)
    os.replace(tmp_sock, sock)  # clients see the socket only once it listens
    our_socket = os.stat(sock).st_ino
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.settimeout(idle_seconds)
    print(f"worker {os.getpid()} serving on {sock}", flush=True)
    try:
        while True:
            try:
                connection, _ = server.accept()
            except socket.timeout:
                print(f"idle for {idle_seconds:.0f} s: exiting", flush=True)
                return
            with connection:
                connection.settimeout(None)
                _handle(session, connection)
    finally:
        server.close()
        try:  # remove the socket only if it is still ours (a newer worker may have taken the name)
            if os.stat(sock).st_ino == our_socket:
                sock.unlink()
        except FileNotFoundError:
            pass


def _handle(session, connection: socket.socket) -> None:
    def send(message: dict) -> None:
        connection.sendall((json.dumps(message) + "\n").encode())

    try:
        with connection.makefile("r", encoding="utf-8") as lines:
            request = Request(**json.loads(lines.readline()))
        request = Request(**{**asdict(request), "plans": tuple(request.plans), "benchmarks": tuple(request.benchmarks)})
    except (ValueError, TypeError) as error:
        print(f"bad request: {error}", flush=True)
        return

    def log(line: str) -> None:
        print(line, flush=True)
        send({"log": line})

    session.log = log
    try:
        session.run(request, publish=lambda tmp, final: send({"publish": [str(tmp), str(final)]}))
        send({"done": True})
    except (BrokenPipeError, ConnectionResetError):
        print("client went away; its unpublished files are left as hidden temporaries", flush=True)
    except (ValueError, FileNotFoundError) as error:
        _send_quietly(send, {"error": str(error), "kind": type(error).__name__})
    except Exception:
        text = traceback.format_exc()
        print(text, flush=True)
        _send_quietly(send, {"error": text, "kind": "RuntimeError"})


def _send_quietly(send, message: dict) -> None:
    try:
        send(message)
    except OSError:
        pass


if __name__ == "__main__":
    spec_json, socket_path, idle = sys.argv[1:4]
    serve(ModelSpec.from_json(json.loads(spec_json)), Path(socket_path), float(idle))

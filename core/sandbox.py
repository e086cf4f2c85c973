"""Run untrusted parsing in a child process, so that a crash cannot take the app or the service down.

Some readers abort the whole process on hostile files (the Rust readers do on a few tiny ones), and an
abort cannot be caught; a file can also make a reader allocate or spin without end. `run_isolated` runs a
top-level function in a fresh Python process (`python -c`, importing the function by its module path, so
the child never depends on the parent's `__main__` — under Streamlit that is app/Home.py), with an
address-space limit (RLIMIT_AS), a CPU-time limit (RLIMIT_CPU), no core files and a wall-clock timeout.

- The function's return value comes back (pickled through a private temporary file).
- A `WorkbenchError` it raises comes back as the same class, key and parameters.
- Any other exception becomes `ReaderFailed` (a `ValidationError`) naming it.
- A child killed by a signal, out of memory, past its CPU time or its timeout becomes a `ValidationError`
  that says the reader stopped and why.

Standby children (`Spares`): a long-running process (the app, the service) keeps one child per listed
module started ahead, its libraries already imported, waiting for one request on stdin. A call with
`spares=` hands its request to that child instead of starting one, which skips the child's start and its
imports (a third of a second for the .xlsx import's libraries); the limits, the result and the errors
are exactly those of a fresh child. A standby serves one call and exits, like any child (one file per
process), and the next one starts after the call. An idle standby whose owner dies reads end-of-file and
exits; one started before the project's modules changed is not used.

Memory: `memory_mb` is the room the child gets for the work, on top of the address space it already
uses once the function's module is imported (interpreter, libraries, thread pools reserve virtual memory
up front; counting those against the limit would make it meaningless from one machine to the next).
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from core.errors import ValidationError, WorkbenchError

_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = (
    "import pickle, sys\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    request = pickle.load(f)\n"
    "sys.path[:0] = request['path']\n"
    "from core.sandbox import _child_main, _exit_now\n"
    "_child_main(request, sys.argv[2])\n"
    "_exit_now()\n"
)
_STANDBY_BOOT = (
    "import sys\n"
    "sys.path[:0] = sys.argv[2:]\n"
    "from core.sandbox import _standby_main\n"
    "_standby_main(sys.argv[1])\n"
)
_CPU_GRACE = 5  # seconds between SIGXCPU (soft CPU limit) and SIGKILL (hard limit)
_STDERR_TAIL = 2000


class ReaderFailed(ValidationError):
    """The isolated function raised an exception that is not a WorkbenchError."""

    key = "sandbox.error.failed"

    def __init__(self, key: str | None = None, /, child_traceback: str = "", **params: Any) -> None:
        super().__init__(key, **params)
        self.child_traceback = child_traceback


def run_isolated(func: Callable[..., Any], *args: Any, memory_mb: int = 1024, cpu_seconds: int = 120,
                 timeout_seconds: float = 180, spares: Spares | None = None, **kwargs: Any) -> Any:
    """`func(*args, **kwargs)` in a fresh, resource-limited process (the standby one of `spares` when it
    has one for the function's module); see the module docstring."""
    module, qualname = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname:
        raise TypeError(f"run_isolated needs a top-level function importable by module path, not {func!r}")
    request = {"path": [_ROOT, *[p for p in sys.path if p]], "module": module, "qualname": qualname,
               "args": args, "kwargs": kwargs, "memory_mb": int(memory_mb), "cpu_seconds": max(1, int(cpu_seconds))}
    standby = spares.take(module) if spares is not None else None
    try:
        return _run(request, timeout_seconds, standby)
    finally:
        if spares is not None:
            spares.refill(module)


def _run(request: dict[str, Any], timeout_seconds: float, standby: Standby | None) -> Any:
    tmp = standby.folder if standby is not None else tempfile.mkdtemp(prefix="wb-sandbox-")
    try:
        request_path, result_path, err_path = (os.path.join(tmp, n) for n in ("request", "result", "stderr"))
        with open(request_path, "wb") as f:
            pickle.dump(request, f, protocol=pickle.HIGHEST_PROTOCOL)
        proc = standby.hand(request_path, result_path) if standby is not None else None
        if proc is None:  # no standby, or it is gone: a fresh child
            with open(err_path, "wb") as err:
                proc = subprocess.Popen([sys.executable, "-c", _BOOT, request_path, result_path],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp,
                                        start_new_session=True, close_fds=True, env=child_environment())
        try:
            code = proc.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise ValidationError("sandbox.error.time", seconds=_num(timeout_seconds)) from None
        except BaseException:  # KeyboardInterrupt, a Streamlit rerun: never leave the child behind
            _kill(proc)
            raise
        outcome = None
        if os.path.exists(result_path):
            try:
                with open(result_path, "rb") as f:
                    outcome = pickle.load(f)
            except Exception:
                outcome = None
        stderr_tail = Path(err_path).read_bytes()[-_STDERR_TAIL:].decode("utf-8", errors="replace")
    finally:
        if standby is not None:  # done with it whatever happened (not handed over: stopped now)
            standby.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if code == 0 and outcome is not None:
        return _unwrap(outcome)
    raise _stopped(code, request["memory_mb"], request["cpu_seconds"], stderr_tail)


class Standby:
    """One child started ahead: it imports `module`, says so on stdout, then waits for one request."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.code = _code_stamp()
        self.folder = tempfile.mkdtemp(prefix="wb-sandbox-")
        self._imported = False
        try:
            with open(os.path.join(self.folder, "stderr"), "wb") as err:
                self.proc = subprocess.Popen([sys.executable, "-c", _STANDBY_BOOT, module, _ROOT,
                                              *[p for p in sys.path if p]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=err, cwd=self.folder, start_new_session=True, close_fds=True,
                                             env=child_environment())
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60) -> bool:
        """Block until the child has imported its module (True), or it died or `timeout` passed."""
        import select

        deadline, fd, seen = time.monotonic() + timeout, self.proc.stdout.fileno(), b""
        while not self._imported:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 4096)
            if not chunk:  # it died
                return False
            seen = (seen + chunk)[-64:]
            self._imported = seen.endswith(b"ready\n")  # after whatever the libraries printed
        return True

    def hand(self, request_path: str, result_path: str) -> subprocess.Popen | None:
        """Give the child its request; None when it is gone (the caller starts a fresh child)."""
        try:
            self.proc.stdin.write((json.dumps([request_path, result_path]) + "\n").encode("utf-8"))
            self.proc.stdin.close()
        except OSError:  # a broken pipe: the standby died
            _kill(self.proc)
            return None
        return self.proc

    def close(self) -> None:
        """Stop an unused standby and remove its folder."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        _kill(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


class Spares:
    """Standby children for a long-running process, one per module of `modules` (see the module
    docstring). Thread-safe; `close` stops them (a process that ends without it leaves none behind
    either: they read end-of-file and exit)."""

    def __init__(self, modules: tuple[str, ...] | list[str]) -> None:
        self.modules = tuple(modules)
        self._ready: dict[str, Standby] = {}
        self._lock = threading.Lock()
        self._closed = False

    def warm(self) -> None:
        """Start the standby children now rather than after the first call."""
        for module in self.modules:
            self.refill(module)

    def take(self, module: str) -> Standby | None:
        with self._lock:
            standby = self._ready.pop(module, None)
        if standby is not None and (not standby.alive() or standby.code != _code_stamp()):
            standby.close()  # dead, or started before the project's code changed (an upgrade, an edit)
            return None
        return standby

    def refill(self, module: str) -> None:
        if module not in self.modules:
            return
        with self._lock:
            current = self._ready.get(module)
            if self._closed or (current is not None and current.alive()):
                return
            if current is not None:
                current.close()
                del self._ready[module]
            try:
                self._ready[module] = Standby(module)
            except (OSError, subprocess.SubprocessError) as exc:  # no process to be had now: calls start fresh ones
                logging.getLogger(__name__).warning("no standby child for %s: %s", module, exc)

    def standby(self, module: str) -> Standby | None:
        """The waiting child for `module` (for tests and the benchmark, which wait for it to be ready)."""
        with self._lock:
            return self._ready.get(module)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waiting, self._ready = list(self._ready.values()), {}
        for standby in waiting:
            standby.close()


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


def child_environment() -> dict[str, str]:
    """The parent's environment without anything that looks like a secret (provider keys, the store's
    key, passwords): a child parses files nobody vouched for, so a parser bug must find nothing to leak."""
    return {name: value for name, value in os.environ.items() if not _SECRET_NAME.search(name)}


def _code_stamp() -> int:
    """The newest modification time of the modules a child runs (`core/`): a standby started before it
    runs old code, so it is not used (a fresh child imports the new code)."""
    try:
        with os.scandir(os.path.join(_ROOT, "core")) as entries:
            return max((e.stat().st_mtime_ns for e in entries if e.name.endswith(".py")), default=0)
    except OSError:
        return 0


def _num(x: float) -> str:
    return f"{x:g}"


def _kill(proc: subprocess.Popen) -> None:
    if proc.returncode is not None:  # reaped already: its pid may be another process's by now
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and anything it started
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _stopped(code: int, memory_mb: int, cpu_seconds: int, stderr_tail: str) -> ValidationError:
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and "MemoryError" not in stderr_tail:
        # SIGXCPU at the soft CPU limit, SIGKILL at the hard one (the kernel's OOM killer also uses SIGKILL)
        if code == -signal.SIGXCPU:
            return ValidationError("sandbox.error.time", seconds=_num(cpu_seconds))
        return ValidationError("sandbox.error.memory", memory_mb=memory_mb)
    if "MemoryError" in stderr_tail or "memory allocation of" in stderr_tail:  # Python, Rust's alloc failure
        return ValidationError("sandbox.error.memory", memory_mb=memory_mb)
    if code < 0:
        try:
            detail = signal.Signals(-code).name
        except ValueError:
            detail = f"signal {-code}"
    else:
        detail = f"exit status {code}"
    return ValidationError("sandbox.error.crashed", detail=detail)


def _unwrap(outcome: dict[str, Any]) -> Any:
    if outcome["kind"] == "value":
        return outcome["value"]
    if outcome["kind"] == "memory":
        raise ValidationError("sandbox.error.memory", memory_mb=outcome["memory_mb"])
    if outcome["kind"] == "workbench_error":
        raise _rebuild_error(outcome)
    raise ReaderFailed(error=outcome["error"], child_traceback=outcome.get("traceback", ""))


def _rebuild_error(outcome: dict[str, Any]) -> WorkbenchError:
    """The same class, key and parameters as the child's error (WorkbenchError does not pickle by args)."""
    try:
        cls = getattr(importlib.import_module(outcome["module"]), outcome["qualname"])
        if not (isinstance(cls, type) and issubclass(cls, WorkbenchError)):
            cls = WorkbenchError
    except Exception:
        cls = WorkbenchError
    error = cls.__new__(cls)
    error.key, error.params = outcome["key"], outcome["params"]
    Exception.__init__(error, outcome["text"])
    return error


# -- the child --------------------------------------------------------------------------------------
def _limit_child(memory_mb: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + _CPU_GRACE))
    if memory_mb > 0:
        limit = _address_space() + memory_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _address_space() -> int:
    """This process's virtual memory size in bytes (Linux), or 0 when unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _write(result_path: str, outcome: dict[str, Any]) -> None:
    tmp = result_path + ".part"
    with open(tmp, "wb") as f:
        pickle.dump(outcome, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, result_path)


def _exit_now() -> None:
    """End the child once its result is on disk, without the interpreter's teardown: freeing what the
    libraries hold and joining their thread pools takes a tenth of a second after a large import, and
    the kernel reclaims it all at once anyway."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _standby_main(module: str) -> None:
    """A standby child: import `module` (its libraries: the slow part of a start), say so, then run the
    one request that comes on stdin; end-of-file (the owner closed it, or died) ends it unused."""
    importlib.import_module(module)
    try:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
    except OSError:  # the owner handed the request over without waiting for this line
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nobody reads the pipe from now on
    os.close(devnull)
    line = sys.stdin.readline()
    if not line.strip():
        shutil.rmtree(os.getcwd(), ignore_errors=True)  # its folder: nobody else will remove it
        _exit_now()
    request_path, result_path = json.loads(line)
    with open(request_path, "rb") as f:
        request = pickle.load(f)
    _child_main(request, result_path)
    _exit_now()


def _child_main(request: dict[str, Any], result_path: str) -> None:
    memory_mb = request["memory_mb"]
    func = importlib.import_module(request["module"])
    for part in request["qualname"].split("."):
        func = getattr(func, part)
    _limit_child(memory_mb, request["cpu_seconds"])
    try:
        outcome: dict[str, Any] = {"kind": "value", "value": func(*request["args"], **request["kwargs"])}
    except MemoryError:
        outcome = {"kind": "memory", "memory_mb": memory_mb}
    except WorkbenchError as exc:
        outcome = {"kind": "workbench_error", "module": type(exc).__module__, "qualname": type(exc).__qualname__,
                   "key": exc.key, "params": exc.params, "text": str(exc)}
    except Exception as exc:
        outcome = {"kind": "exception", "error": f"{type(exc).__name__}: {exc}"[:500],
                   "traceback": traceback.format_exc()[-5000:]}
    try:
        _write(result_path, outcome)
    except MemoryError:
        _write(result_path, {"kind": "memory", "memory_mb": memory_mb})
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        if outcome["kind"] == "workbench_error":  # parameters that do not pickle: keep their text
            outcome["params"] = {k: str(v) for k, v in outcome["params"].items()}
            _write(result_path, outcome)
        else:
            _write(result_path, {"kind": "exception", "error": f"result cannot be returned: {exc}"[:500]})

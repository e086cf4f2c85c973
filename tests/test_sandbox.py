"""Untrusted parsing runs in a child process: whatever the child does, the parent gets a value or a clear
error and keeps serving. No test asserts on wall-clock time; timeouts are generous upper bounds only."""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from core.errors import NotFound, ValidationError
from core.filesafety import check_upload
from core.sandbox import ReaderFailed, Spares, run_isolated


# -- what the children run (top level, importable by module path) ------------------------------------
def add(a: int, b: int, scale: int = 1) -> dict:
    return {"sum": (a + b) * scale, "pid": os.getpid()}


def environment() -> dict:
    return dict(os.environ)


def refuse(name: str) -> None:
    raise ValidationError("file.error.encrypted", name=name)


def not_found() -> None:
    raise NotFound()


def broken() -> None:
    raise KeyError("sheet9")


def abort() -> None:
    os.abort()


def exit_hard() -> None:
    os._exit(101)  # what a Rust panic in a reader looks like from outside


def allocate_at_once() -> int:
    return len(bytearray(8 * 1024 ** 3))


def allocate_slowly() -> int:
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))


def spin() -> None:
    while True:
        pass


def sleep_forever() -> None:
    import time

    time.sleep(3600)


# -- tests -------------------------------------------------------------------------------------------
def test_returns_the_value_from_another_process() -> None:
    result = run_isolated(add, 2, 3, scale=10)
    assert result["sum"] == 50 and result["pid"] != os.getpid()


def test_workbench_errors_come_back_as_themselves() -> None:
    with pytest.raises(ValidationError) as info:
        run_isolated(refuse, "secret.xlsx")
    err = info.value
    assert type(err) is ValidationError
    assert err.key == "file.error.encrypted" and err.params == {"name": "secret.xlsx"}
    assert str(err) == ValidationError("file.error.encrypted", name="secret.xlsx").message("en")
    with pytest.raises(NotFound):
        run_isolated(not_found)


def test_other_exceptions_become_a_reader_failure() -> None:
    with pytest.raises(ReaderFailed) as info:
        run_isolated(broken)
    assert isinstance(info.value, ValidationError)
    assert "KeyError" in str(info.value) and "sheet9" in str(info.value)
    assert "broken" in info.value.child_traceback


@pytest.mark.parametrize("func", [abort, exit_hard])
def test_a_crash_is_a_clear_error_and_the_parent_lives_on(func) -> None:
    with pytest.raises(ValidationError) as info:
        run_isolated(func)
    assert info.value.key == "sandbox.error.crashed"
    assert "could not be read safely" in str(info.value)
    assert run_isolated(add, 1, 1)["sum"] == 2


@pytest.mark.parametrize("func", [allocate_at_once, allocate_slowly])
def test_memory_past_the_limit_is_a_clear_error(func) -> None:
    with pytest.raises(ValidationError) as info:
        run_isolated(func, memory_mb=200, timeout_seconds=120)
    assert info.value.key == "sandbox.error.memory", str(info.value)
    assert "200 MB" in str(info.value)


def test_cpu_past_the_limit_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as info:
        run_isolated(spin, cpu_seconds=1, timeout_seconds=120)
    assert info.value.key == "sandbox.error.time" and "1 s" in str(info.value)


def test_wall_clock_timeout_kills_the_child() -> None:
    with pytest.raises(ValidationError) as info:
        run_isolated(sleep_forever, timeout_seconds=1)
    assert info.value.key == "sandbox.error.time"


def test_only_importable_functions_are_accepted() -> None:
    with pytest.raises(TypeError):
        run_isolated(lambda: 1)

    def local() -> int:
        return 1

    with pytest.raises(TypeError):
        run_isolated(local)


def test_child_does_not_depend_on_the_parents_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """After Streamlit's AppTest, __main__ is app/Home.py; a child must not re-run it."""
    page = tmp_path / "Home.py"
    page.write_text("raise SystemExit('the page was imported in the child')\n")
    fake = types.ModuleType("__main__")
    fake.__file__ = str(page)
    fake.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", fake)
    assert run_isolated(add, 4, 5)["sum"] == 9


def test_file_checks_run_isolated(tmp_path: Path) -> None:
    path = tmp_path / "data.xlsx"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    assert run_isolated(check_upload, str(path)) == "csv"
    path.write_bytes(b"")
    with pytest.raises(ValidationError) as info:
        run_isolated(check_upload, str(path))
    assert info.value.key == "file.error.empty"


# -- standby children ----------------------------------------------------------------------------------
def _gone(pid: int, within: float = 60) -> bool:
    """Whether process `pid` has ended (reaped or a zombie) within `within` seconds."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def spares():
    made = Spares([add.__module__])
    made.warm()
    yield made
    made.close()


def test_a_child_never_sees_the_parents_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"OPENAI_API_KEY": "sk-test-1", "DOCETL_WB_SECRET_KEY": "k", "DOCETL_WB_PASSWORD": "p",
               "GITHUB_TOKEN": "t", "AWS_SECRET_ACCESS_KEY": "s"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DOCETL_WB_KEEP_ME", "1")
    fresh = run_isolated(environment)
    spares = Spares([environment.__module__])  # a standby started after the secrets were set
    spares.warm()
    try:
        warm = run_isolated(environment, spares=spares)
    finally:
        spares.close()
    for seen in (fresh, warm):
        assert not set(secrets) & set(seen) and seen["DOCETL_WB_KEEP_ME"] == "1" and seen["PATH"]


def test_a_standby_child_takes_one_call_and_the_next_one_waits(spares: Spares) -> None:
    first = spares.standby(add.__module__)
    assert first is not None and first.wait_ready()
    assert run_isolated(add, 2, 3, scale=10, spares=spares) == {"sum": 50, "pid": first.proc.pid}
    assert _gone(first.proc.pid) and not os.path.exists(first.folder)  # one call per process
    second = spares.standby(add.__module__)
    assert second is not None and second is not first and second.alive()
    assert run_isolated(add, 1, 1, spares=spares)["pid"] == second.proc.pid


def test_through_a_standby_errors_and_limits_are_those_of_a_fresh_child(spares: Spares) -> None:
    with pytest.raises(ValidationError) as info:
        run_isolated(refuse, "secret.xlsx", spares=spares)
    assert info.value.key == "file.error.encrypted" and info.value.params == {"name": "secret.xlsx"}
    with pytest.raises(ValidationError) as info:
        run_isolated(abort, spares=spares)
    assert info.value.key == "sandbox.error.crashed"
    with pytest.raises(ValidationError) as info:
        run_isolated(allocate_at_once, memory_mb=200, spares=spares)
    assert info.value.key == "sandbox.error.memory" and "200 MB" in str(info.value)
    with pytest.raises(ValidationError) as info:
        run_isolated(sleep_forever, timeout_seconds=1, spares=spares)
    assert info.value.key == "sandbox.error.time"
    assert run_isolated(add, 4, 5, spares=spares)["sum"] == 9


def test_a_dead_standby_is_replaced_by_a_fresh_child(spares: Spares) -> None:
    dead = spares.standby(add.__module__)
    dead.proc.kill()
    dead.proc.wait()
    result = run_isolated(add, 1, 2, spares=spares)
    assert result["sum"] == 3 and result["pid"] != dead.proc.pid
    assert spares.standby(add.__module__).alive()


def test_only_the_listed_modules_get_a_standby(tmp_path: Path) -> None:
    spares = Spares(["core.readers"])
    try:
        assert run_isolated(add, 1, 2, spares=spares)["sum"] == 3
        assert spares.standby(add.__module__) is None
    finally:
        spares.close()


def test_closing_stops_the_standby_and_removes_its_folder(spares: Spares) -> None:
    standby = spares.standby(add.__module__)
    spares.close()
    assert _gone(standby.proc.pid) and not os.path.exists(standby.folder)
    spares.refill(add.__module__)  # closed for good
    assert spares.standby(add.__module__) is None


def test_an_idle_standby_ends_with_its_owner(tmp_path: Path) -> None:
    import subprocess

    owner = (f"import os, sys; sys.path[:0] = {sys.path!r}\n"
             "from core.sandbox import Spares\n"
             "spares = Spares(['core.readers']); spares.warm(); standby = spares.standby('core.readers')\n"
             "assert standby.wait_ready()\n"
             "print(standby.proc.pid, standby.folder, flush=True)\n"
             "os._exit(0)\n")  # no close: as if killed
    out = subprocess.run([sys.executable, "-c", owner], capture_output=True, text=True, timeout=120, check=True)
    pid, folder = out.stdout.split()
    assert _gone(int(pid)) and not os.path.exists(folder)


def test_a_standby_taken_but_never_handed_over_is_stopped(spares: Spares) -> None:
    standby = spares.standby(add.__module__)
    with pytest.raises(Exception):
        run_isolated(add, lambda: 1, 2, spares=spares)  # the request cannot be pickled
    assert _gone(standby.proc.pid) and not os.path.exists(standby.folder)
    assert run_isolated(add, 1, 2, spares=spares)["sum"] == 3


def test_no_standby_to_be_had_is_no_error(spares: Spares, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.sandbox

    def no_fork(module: str):
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(core.sandbox, "Standby", no_fork)
    assert run_isolated(add, 1, 2, spares=spares)["sum"] == 3  # the standby taken, no new one started
    assert spares.standby(add.__module__) is None
    assert run_isolated(add, 2, 2, spares=spares)["sum"] == 4  # a fresh child


def test_a_standby_started_before_the_code_changed_is_not_used(spares: Spares) -> None:
    from core import sandbox

    stale = spares.standby(add.__module__)
    module_file = Path(sandbox.__file__)
    before = module_file.stat()
    try:
        newest = max(p.stat().st_mtime_ns for p in module_file.parent.glob("*.py"))  # other modules may be newer
        os.utime(module_file, ns=(before.st_atime_ns, newest + 10**9))  # as if just edited
        result = run_isolated(add, 1, 2, spares=spares)
        assert result["sum"] == 3 and result["pid"] != stale.proc.pid  # a fresh child ran it
        assert _gone(stale.proc.pid)
        fresh = spares.standby(add.__module__)
        assert run_isolated(add, 2, 2, spares=spares)["pid"] == fresh.proc.pid  # the new standby is current
    finally:
        os.utime(module_file, ns=(before.st_atime_ns, before.st_mtime_ns))

"""The machine-wide LLM request limit (core.llm_limiter), with real processes and real flocks.

No wall-clock assertions: counts and orderings only; timeouts are guards. Child processes run this file
as a script (`python tests/test_llm_limiter.py MODE JSON`), see `_worker` at the bottom.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from core import llm_limiter
from core.config import SETTINGS_BY_KEY, Config
from core.errors import ValidationError
from core.llm_limiter import LimiterTimeout, LLMLimiter

GUARD = 60.0  # seconds: only ever reached when something is broken


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "_platform" / "locks" / "llm"


def spawn(mode: str, **args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, mode, json.dumps(args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    return out


def wait_line(proc: subprocess.Popen, expected: str) -> None:
    line = proc.stdout.readline().strip()  # the child prints it once it holds what it should
    assert line == expected, (line, proc.stderr.read() if proc.poll() is not None else "")


# -- the limit across processes and threads ---------------------------------------------------------------
def test_processes_and_threads_never_exceed_the_limit_and_reach_it(lock_dir: Path, tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    procs = [spawn("churn", lock_dir=str(lock_dir), n=4, threads=8, rounds=15, hold=0.003, counter=str(counter))
             for _ in range(3)]
    done = sum(int(finish(p)) for p in procs)
    assert done == 3 * 8 * 15
    current, highest = json.loads(counter.read_text())
    assert current == 0
    assert highest == 4  # never more than N at once, and the limit is actually used
    assert LLMLimiter(lock_dir, 4).in_flight() == 0


def test_threads_of_one_process_exclude_each_other(lock_dir: Path) -> None:
    limiter = LLMLimiter(lock_dir, 2)
    first, second = limiter.acquire(), limiter.acquire()
    assert {first.index, second.index} == {0, 1}
    assert limiter.in_flight() == 2
    caught = []
    thread = threading.Thread(target=lambda: caught.append(_timeout_of(limiter, 0.2)))
    thread.start()
    thread.join(GUARD)
    assert caught == [True]
    second.release()
    second.release()  # idempotent
    with limiter.slot(timeout=GUARD) as third:
        assert third.index == second.index
        assert limiter.in_flight() == 2
    first.release()
    assert limiter.in_flight() == 0


def _timeout_of(limiter: LLMLimiter, timeout: float) -> bool:
    try:
        limiter.acquire(timeout).release()
    except LimiterTimeout as error:
        assert "limit 2 requests in flight" in str(error)
        return True
    return False


def test_waiters_are_served_in_turn_not_starved(lock_dir: Path) -> None:
    """One slot, several threads each looping acquire→release: a thread that just released queues behind
    the others instead of taking the slot straight back."""
    limiter = LLMLimiter(lock_dir, 1)
    order: list[int] = []
    lock = threading.Lock()
    rounds = 20

    def run(me: int) -> None:
        for _ in range(rounds):
            with limiter.slot(timeout=GUARD):
                with lock:
                    order.append(me)
                time.sleep(0.002)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD)
    assert sorted(order) == sorted(list(range(4)) * rounds)
    middle = order[rounds // 2: -rounds // 2]  # all four are still queueing here
    repeats = sum(1 for a, b in zip(middle, middle[1:]) if a == b)
    assert repeats <= len(middle) // 20, order  # first come, first served: in practice a strict rotation


def test_kill_9_of_a_holder_frees_its_slots_at_once(lock_dir: Path) -> None:
    holder = spawn("hold", lock_dir=str(lock_dir), n=3, count=3)
    try:
        wait_line(holder, "ready")
        limiter = LLMLimiter(lock_dir, 3)
        assert limiter.in_flight() == 3
        assert _raises_timeout(limiter, 0.1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(GUARD)
    assert holder.returncode == -signal.SIGKILL
    assert limiter.in_flight() == 0
    other = spawn("hold", lock_dir=str(lock_dir), n=3, count=3)  # another process takes all N
    try:
        wait_line(other, "ready")
        assert limiter.in_flight() == 3
    finally:
        other.kill()
        other.wait(GUARD)


def test_kill_9_of_a_waiter_does_not_block_the_queue(lock_dir: Path) -> None:
    limiter = LLMLimiter(lock_dir, 1)
    held = limiter.acquire()
    waiter = spawn("hold", lock_dir=str(lock_dir), n=1, count=1)  # queues up, then polls the slot
    try:
        deadline = time.monotonic() + GUARD
        while not _tickets(lock_dir) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(_tickets(lock_dir)) == 1
        second = threading.Thread(target=lambda: limiter.acquire(timeout=GUARD).release())
        second.start()  # queues behind the waiter
        while len(_tickets(lock_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        waiter.send_signal(signal.SIGKILL)
        waiter.wait(GUARD)
    held.release()
    second.join(GUARD)  # it found the dead ticket, removed it, and took the slot
    assert not second.is_alive()
    assert _tickets(lock_dir) == []
    assert limiter.in_flight() == 0


def _tickets(lock_dir: Path) -> list[str]:
    return sorted(os.listdir(lock_dir / llm_limiter.QUEUE_DIR))


def _raises_timeout(limiter: LLMLimiter, timeout: float) -> bool:
    try:
        limiter.acquire(timeout).release()
    except LimiterTimeout:
        return True
    return False


def test_a_forked_child_does_not_keep_the_parents_slots(lock_dir: Path) -> None:
    """A child forked (no exec) while slots are held must not keep them alive after the parent dies."""
    parent = spawn("fork", lock_dir=str(lock_dir), n=2, count=2)
    child = None
    try:
        lines = [parent.stdout.readline().strip() for _ in range(3)]  # the child speaks once forked
        assert sorted(lines)[-2:] == ["child", "ready"], lines
        child = int(sorted(lines)[0])
        limiter = LLMLimiter(lock_dir, 2)
        assert limiter.in_flight() == 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(GUARD)
    try:
        os.kill(child, 0)  # the forked child still lives...
        assert limiter.in_flight() == 0  # ...and holds nothing
    finally:
        os.kill(child, signal.SIGKILL)


# -- changing the limit while requests run ------------------------------------------------------------------
def test_a_lower_limit_only_uses_the_slots_below_it(lock_dir: Path) -> None:
    wide = LLMLimiter(lock_dir, 4)
    slots = [wide.acquire() for _ in range(4)]
    assert [s.index for s in slots] == [0, 1, 2, 3]
    narrow = LLMLimiter(lock_dir, 2)  # another process that already reads the new setting
    slots[3].release()
    slots[2].release()
    assert _raises_timeout(narrow, 0.1)  # slots 2 and 3 are free but no longer count
    assert wide.in_flight() == narrow.in_flight() == 2
    slots[1].release()
    with narrow.slot(timeout=GUARD) as got:
        assert got.index == 1
    slots[0].release()


def test_shrinking_the_limit_while_waiting(lock_dir: Path) -> None:
    limiter = LLMLimiter(lock_dir, 4)
    slots = [limiter.acquire() for _ in range(4)]
    got: list[int] = []
    done = threading.Event()

    def wait() -> None:
        with limiter.slot(timeout=GUARD) as s:
            got.append(s.index)
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    limiter.max_inflight = 2  # an admin lowered the setting
    slots[3].release()
    assert not done.wait(0.3)  # several polling rounds: slot 3 is free but above the limit
    assert limiter.held_slots() == [0, 1, 2]
    slots[1].release()
    thread.join(GUARD)
    assert got == [1]
    slots[0].release()
    slots[2].release()
    assert limiter.in_flight() == 0


def test_bad_limits_are_refused(lock_dir: Path) -> None:
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(ValueError):
            LLMLimiter(lock_dir, bad)
    with pytest.raises(ValueError):
        LLMLimiter(lock_dir, 8, -1)
    with pytest.raises(ValueError):
        LLMLimiter(lock_dir, 8, 5, rpm_window=0)


# -- requests per minute ------------------------------------------------------------------------------------
def test_requests_per_minute_caps_starts_within_the_window(lock_dir: Path) -> None:
    now = [1_000_000.0]
    limiter = LLMLimiter(lock_dir, 8, 3, clock=lambda: now[0])
    for _ in range(3):
        with limiter.slot(timeout=GUARD):
            pass
    assert limiter.recent_requests() == 3
    with pytest.raises(LimiterTimeout, match="per minute"):
        limiter.acquire(timeout=0.2)
    assert limiter.in_flight() == 0  # the slot taken while waiting for a turn was given back
    now[0] += 59.0
    assert _raises_timeout(limiter, 0.1)
    now[0] += 1.0  # the first three starts leave the window
    with limiter.slot(timeout=GUARD) as s:
        assert s.granted_at == now[0]
    assert limiter.recent_requests() == 1
    limiter.requests_per_minute = 0  # off: no waiting at all
    for _ in range(5):
        limiter.acquire(timeout=GUARD).release()


def test_requests_per_minute_ignores_starts_from_the_future(lock_dir: Path) -> None:
    """A clock set back (or a reboot) must not block requests until the old times come round again."""
    limiter = LLMLimiter(lock_dir, 8, 2, clock=lambda: 5_000.0)
    limiter.acquire(timeout=GUARD).release()
    (lock_dir / llm_limiter.RPM_FILE).write_text("9999.0\n9999.5\nnot a number\n")
    limiter.acquire(timeout=GUARD).release()
    limiter.acquire(timeout=GUARD).release()
    assert _raises_timeout(limiter, 0.1)


def test_requests_per_minute_is_shared_by_processes(lock_dir: Path, tmp_path: Path) -> None:
    window, cap = 0.4, 4
    procs = [spawn("rpm", lock_dir=str(lock_dir), n=8, rpm=cap, window=window, count=8) for _ in range(2)]
    starts = sorted(t for p in procs for t in json.loads(finish(p)))
    assert len(starts) == 16
    # at most `cap` starts in any window: the (i+cap)-th start is at least a window after the i-th
    assert all(starts[i + cap] - starts[i] >= window for i in range(len(starts) - cap))
    assert any(starts[i + cap - 1] - starts[i] < window for i in range(len(starts) - cap + 1))  # cap reached


# -- files, settings --------------------------------------------------------------------------------------
def test_lock_files_are_private(lock_dir: Path) -> None:
    limiter = LLMLimiter(lock_dir, 2, 10)
    assert not lock_dir.exists()  # building a limiter does no I/O
    assert limiter.in_flight() == 0
    limiter.acquire().release()
    assert stat.S_IMODE(lock_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((lock_dir / llm_limiter.QUEUE_DIR).stat().st_mode) == 0o700
    with limiter.slot():
        with limiter.slot():  # both slots taken: the next one queues (sequence file, ticket)
            waiter = threading.Thread(target=lambda: limiter.acquire().release())
            waiter.start()
            while not os.listdir(lock_dir / llm_limiter.QUEUE_DIR):
                time.sleep(0.001)
    waiter.join()
    assert {"slot-0", "slot-1", "rpm", llm_limiter.SEQ_FILE} <= set(os.listdir(lock_dir))
    for path in lock_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name


def test_from_config_reads_the_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = Config.from_env({"DOCETL_HOME_DIR": str(home)})
    limiter = LLMLimiter.from_config(config)
    assert (limiter.max_inflight, limiter.requests_per_minute) == (8, 0)
    assert limiter.lock_dir == config.platform_dir / "locks" / "llm"
    config = Config.from_env({"DOCETL_HOME_DIR": str(home), "DOCETL_WB_LLM_MAX_INFLIGHT": "3",
                              "DOCETL_WB_LLM_REQUESTS_PER_MINUTE": "120"})
    limiter = LLMLimiter.from_config(config.with_values({"llm_max_inflight": 5}))  # an admin override wins
    assert (limiter.max_inflight, limiter.requests_per_minute) == (5, 120)
    for key, bad in (("llm_max_inflight", "0"), ("llm_max_inflight", "257"), ("llm_requests_per_minute", "-1")):
        with pytest.raises(ValidationError):
            SETTINGS_BY_KEY[key].parse(bad)
    assert SETTINGS_BY_KEY["llm_max_inflight"].admin and SETTINGS_BY_KEY["llm_requests_per_minute"].admin


# -- the docetl hook (a stand-in module; the real docetl is exercised by the runner's integration tests) ---
class Endpoint:
    """Counts calls in progress, like an LLM server counting requests in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.calls = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def _held() -> int | None:
    limiter = llm_limiter.installed()
    return None if limiter is None else limiter.in_flight()


@pytest.fixture
def fake_api():
    endpoint = Endpoint()
    module = types.ModuleType("fake_docetl_api")

    def completion(**kwargs):
        endpoint.enter()
        try:
            time.sleep(0.01)
            if kwargs.get("nested"):
                return module.completion(model="inner")  # a wrapped call inside a wrapped call
            return {"model": kwargs.get("model"), "held": _held()}
        finally:
            endpoint.leave()

    def embedding(**kwargs):
        return {"held": _held()}

    async def acompletion(**kwargs):
        endpoint.enter()
        try:
            await asyncio.sleep(0.01)
            return "async"
        finally:
            endpoint.leave()

    module.completion, module.embedding, module.acompletion = completion, embedding, acompletion
    module.originals = (completion, embedding, acompletion)
    module.endpoint = endpoint
    yield module
    llm_limiter.uninstall()


def test_install_wraps_calls_in_a_slot(lock_dir: Path, fake_api) -> None:
    limiter = LLMLimiter(lock_dir, 2)
    llm_limiter.install(limiter, modules=[fake_api])
    assert llm_limiter.installed() is limiter
    assert fake_api.completion(model="m") == {"model": "m", "held": 1}
    assert fake_api.embedding(model="e", input=["x"]) == {"held": 1}
    assert fake_api.completion(nested=True)["held"] == 1  # no second slot, no deadlock with N=1 either
    assert limiter.in_flight() == 0

    threads = [threading.Thread(target=lambda: [fake_api.completion(model="m") for _ in range(5)])
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(GUARD)
    assert fake_api.endpoint.calls >= 30
    assert fake_api.endpoint.peak == 2


def test_install_wraps_async_calls(lock_dir: Path, fake_api) -> None:
    limiter = LLMLimiter(lock_dir, 2)
    llm_limiter.install(limiter, modules=[fake_api])

    async def many():
        return await asyncio.gather(*(fake_api.acompletion(model="m") for _ in range(10)))

    assert asyncio.run(many()) == ["async"] * 10
    assert fake_api.endpoint.peak == 2
    assert limiter.in_flight() == 0


def test_a_cancelled_async_wait_gives_its_slot_back(lock_dir: Path, fake_api) -> None:
    limiter = LLMLimiter(lock_dir, 1)
    llm_limiter.install(limiter, modules=[fake_api])
    blocker = limiter.acquire()

    async def cancel_while_waiting() -> None:
        task = asyncio.ensure_future(fake_api.acompletion(model="m"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        blocker.release()  # the abandoned wait gets the slot now, and hands it straight back
        deadline = time.monotonic() + GUARD
        while limiter.in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(cancel_while_waiting())
    assert limiter.in_flight() == 0
    assert fake_api.endpoint.calls == 0
    assert fake_api.acompletion is not fake_api.originals[2]


def test_a_closed_loop_does_not_wait_for_a_pending_slot(lock_dir: Path, fake_api) -> None:
    limiter = LLMLimiter(lock_dir, 1)
    llm_limiter.install(limiter, modules=[fake_api])
    blocker = limiter.acquire()

    async def give_up() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(fake_api.acompletion(model="m"), 0.05)

    asyncio.run(give_up())  # returns although a wait is still pending in its thread
    blocker.release()
    for orphan in [t for t in threading.enumerate() if t.name == "llm-limiter-async"]:
        orphan.join(GUARD)  # it takes the slot, finds the loop closed and gives the slot back
        assert not orphan.is_alive()
    assert limiter.in_flight() == 0
    assert fake_api.endpoint.calls == 0


def test_install_is_idempotent_and_uninstall_restores(lock_dir: Path, fake_api) -> None:
    completion, embedding, acompletion = fake_api.originals
    first, second = LLMLimiter(lock_dir, 1), LLMLimiter(lock_dir, 3)
    llm_limiter.install(first, modules=[fake_api])
    wrapped = fake_api.completion
    assert wrapped is not completion and wrapped.__wrapped__ is completion
    llm_limiter.install(second, modules=[fake_api])  # swaps the limiter, wraps nothing twice
    assert fake_api.completion is wrapped
    assert llm_limiter.installed() is second
    llm_limiter.uninstall()
    assert (fake_api.completion, fake_api.embedding, fake_api.acompletion) == (completion, embedding, acompletion)
    assert llm_limiter.installed() is None
    assert wrapped(model="m") == {"model": "m", "held": None}  # a copied wrapper is a plain pass-through
    llm_limiter.install(first, modules=[fake_api])
    assert fake_api.completion is wrapped  # one wrapper per original, reused


def test_importing_the_limiter_does_not_import_docetl() -> None:
    code = "import sys, core.llm_limiter; print('docetl' in sys.modules, 'litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=GUARD,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["False", "False"], out.stderr


# -- child processes --------------------------------------------------------------------------------------
def _worker(mode: str, args: dict) -> None:
    limiter = LLMLimiter(Path(args["lock_dir"]), args["n"], args.get("rpm", 0),
                         rpm_window=args.get("window", 60.0))
    if mode == "hold":
        slots = [limiter.acquire() for _ in range(args["count"])]
        print("ready", flush=True)
        time.sleep(GUARD)
        del slots
    elif mode == "fork":
        slots = [limiter.acquire() for _ in range(args["count"])]
        pid = os.fork()
        if pid == 0:  # os.fork returns here after the at-fork hooks ran
            os.write(1, b"child\n")
            time.sleep(GUARD)
            os._exit(0)
        os.write(1, f"{pid}\nready\n".encode())
        time.sleep(GUARD)
        del slots
    elif mode == "churn":
        counter = Path(args["counter"])
        fd = os.open(counter, os.O_RDWR | os.O_CREAT, 0o600)
        local = threading.Lock()

        def bump(delta: int) -> None:
            with local:  # flock is per open file description: one fd shared by threads needs a thread lock
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    raw = os.pread(fd, 100, 0)
                    current, highest = json.loads(raw) if raw else (0, 0)
                    current += delta
                    data = json.dumps([current, max(highest, current)]).encode()
                    os.pwrite(fd, data, 0)
                    os.ftruncate(fd, len(data))
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)

        done = []

        def run() -> None:
            for _ in range(args["rounds"]):
                with limiter.slot(timeout=GUARD):
                    bump(+1)
                    time.sleep(args["hold"])
                    bump(-1)
                done.append(1)

        threads = [threading.Thread(target=run) for _ in range(args["threads"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(done))
    elif mode == "rpm":
        starts = []
        for _ in range(args["count"]):
            with limiter.slot(timeout=GUARD) as s:
                starts.append(s.granted_at)
        print(json.dumps(starts))


if __name__ == "__main__":
    _worker(sys.argv[1], json.loads(sys.argv[2]))


def test_from_config_shares_one_limiter_per_process_and_drains_a_lowered_limit(tmp_path: Path) -> None:
    config = Config.from_env({"DOCETL_HOME_DIR": str(tmp_path / "home")})
    first = LLMLimiter.from_config(config)
    for _ in range(3):
        with first.slot():
            pass
    assert LLMLimiter.from_config(config) is first  # a notebook's next run: no new pool of open files
    lowered = LLMLimiter.from_config(config.with_values({"llm_max_inflight": 1}))
    assert lowered is first and first.max_inflight == 1
    assert all(index < 1 for index in first._pool)  # pooled files of slots no longer used are closed

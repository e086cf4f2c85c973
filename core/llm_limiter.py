"""One limit on LLM requests in flight for the whole machine (SPEC "LLM access").

Every run, the app and notebooks on one machine that share a home share the limit
(`llm_max_inflight`, default 8) and an optional requests-per-minute cap (`llm_requests_per_minute`,
0 = none). The state lives in `<home>/.docetl/_platform/locks/llm/` (mode 0700):

- `slot-0` .. `slot-(N-1)`: a request in flight holds an exclusive `flock` on one of them. The kernel drops
  flocks when the process dies, so a process killed with `kill -9` never leaks a slot. Each acquisition
  opens its own file description, so threads of one process exclude each other too.
- `queue/`: waiters line up first come, first served. Each takes the next number (`queue.seq`, under its
  flock) and creates and flocks the ticket file `queue/<number>`; it then sleeps in a blocking flock of
  the ticket just before its own. When that one goes (its owner got a slot, gave up, or died: the
  kernel drops its flock too), the waiter looks again; once no smaller ticket is left it is the head,
  the only one looking for a free slot (non-blocking tries of each slot file, with a short backoff:
  1 ms growing to 10 ms, jittered). A thread that has just released a slot therefore queues behind the
  waiters instead of grabbing it straight back, nobody starves, and a freed slot is taken within a few
  milliseconds. The queue only orders waiters: the limit itself rests on the slot flocks alone.
- `rpm`: the start times of the requests of the last minute (one per line), read and rewritten under
  a flock of the same file. With a requests-per-minute cap, a request that holds a slot waits until
  fewer than the cap started in the last 60 s, then records its start. The window counts starts, so the
  cap holds however long a request waits for its slot.

The limit is a per-process value (from the settings): if an admin lowers it, new requests in processes
that use the new value only take slots below it, and the requests still holding higher slots finish
normally; `in_flight()` counts every held slot, so the dashboard shows the truth while that drains.

Fork: a child forked (without exec) while this process holds slots closes its copies of the lock files
at once (`os.register_at_fork`), so the slots still die with the parent.

## docetl

`install(limiter)` makes every LLM request docetl makes in this process hold a slot for the duration of
the HTTP call. Checked against docetl 0.3.0 and litellm 1.110.2 as installed:

- `docetl/operations/utils/api.py` does `from litellm import (..., completion, embedding)` at module
  level, and `APIWrapper` calls these module globals: `completion(...)` for every map/filter/reduce/
  resolve/... request in `_call_llm_with_cache` (the one path of `call_llm`), for the gleaning validator
  call in `_cached_call_llm`, and for `_classify_with_logprob_with_cost` (cascade proxies);
  `embedding(...)` in `gen_embedding`, which every embedding user goes through (`runner.api.gen_embedding`
  in resolve, equijoin, rank, reduce, sample, clustering, blocking, cascade, the lancedb retriever).
  No operation calls litellm directly. So wrapping `api.completion` and `api.embedding` covers them.
- With `fallback_models` the runner builds a litellm `Router`, and `APIWrapper` calls `router.completion`
  / `embedding_router.embedding` instead. litellm's router looks the endpoint up as
  `getattr(litellm, "completion")` at call time (`litellm/router_python_host.py`, `invoke`), so
  `install` also wraps the `litellm` package attributes `completion`, `embedding`, `acompletion` and
  `aembedding`. `litellm.acompletion` covers agentic operations (`agent:` config, OpenAI Agents SDK's
  `LitellmModel` awaits `litellm.acompletion`). Inside litellm, `acompletion` runs `litellm.main.completion`
  (not the package attribute) in an executor, so nothing is counted twice; a nested wrapped call in the
  same thread or task (context variable) does not take a second slot either.
- The optimizer (`docetl.optimizers`, `reasoning_optimizer`, `moar`) binds `from litellm import completion`
  when imported: modules imported before `install` are patched by a scan of `sys.modules`, modules imported
  later pick up the wrapped `litellm.completion`.
- Not covered: `parsing_tools.whisper_speech_to_text` (`litellm.transcription`), streaming responses
  (docetl does not stream; a stream would release its slot when the call returns, not when it ends).
- docetl's per-attempt `timeout` (operation `timeout`, default 120 s, a thread it abandons) includes the
  wait for a slot. Under heavy queueing an attempt can time out while waiting; docetl then retries and
  the abandoned thread still sends its request once it gets a slot. Give long queues a larger `timeout`.
- `runner.blocking_acquire("llm_call")` (docetl's in-memory, per-runner `rate_limits`) runs before the
  wrapped call, so it still applies on top of this limit.
"""
from __future__ import annotations

import asyncio
import contextvars
import errno
import fcntl
import functools
import inspect
import os
import random
import sys
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from core.config import Config

QUEUE_DIR = "queue"
SEQ_FILE = "queue.seq"
RPM_FILE = "rpm"
SLOT_PREFIX = "slot-"
RPM_WINDOW_SECONDS = 60.0
_MIN_DELAY = 0.001  # backoff of the head of the queue between rounds of slot tries
_MAX_DELAY = 0.002
_FRONT = 4  # waiters at the front of the queue that look for a free slot at once: a slot freed in one
            # process is taken within a poll by a waiter of another, instead of one hand-off at a time
_RPM_MAX_SLEEP = 1.0  # longest sleep between two looks at the rpm file


_SHARED: dict[tuple[str, int], "LLMLimiter"] = {}  # from_config's instances, per lock folder and process
_SHARED_LOCK = threading.Lock()


class LimiterTimeout(TimeoutError):
    """No slot (or no requests-per-minute turn) within the caller's timeout."""


# -- file descriptors: every one we open is tracked so a forked child can drop its copies -------------
_OPEN_FDS: set[int] = set()
_FDS_LOCK = threading.Lock()


def _open(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    with _FDS_LOCK:  # opening and closing under one lock: a number is never tracked for the wrong file
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        _OPEN_FDS.add(fd)
    return fd


def _close(fd: int, unlock: bool = True) -> None:
    with _FDS_LOCK:
        try:
            if unlock:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            _OPEN_FDS.discard(fd)
            os.close(fd)


def _after_fork_in_child() -> None:
    # Closing (not unlocking) our copies leaves the parent's locks alone, and lets them die with it.
    global _FDS_LOCK
    _FDS_LOCK = threading.Lock()
    for fd in list(_OPEN_FDS):
        try:
            os.close(fd)
        except OSError:
            pass
    _OPEN_FDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _try_lock(fd: int, mode: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _close_slot(index: int, fd: int) -> None:
    _close(fd)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class Slot:
    """One request's place in the limit; `release()` (or leaving the `with`) gives it back."""

    def __init__(self, index: int, fd: int, granted_at: float,
                 give_back: Callable[[int, int], None] | None = None) -> None:
        self.index = index
        self.granted_at = granted_at  # the limiter clock's time the request was let through
        # a forgotten slot is freed when collected; the limiter keeps the open file for the next request
        self._release = weakref.finalize(self, give_back or _close_slot, index, fd)

    @property
    def held(self) -> bool:
        return self._release.alive

    def release(self) -> None:
        self._release()  # runs once; later calls do nothing

    def __enter__(self) -> "Slot":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Slot {self.index} {'held' if self.held else 'released'}>"


class _LockWaiter:
    """A blocking flock in a helper thread, so that a caller with a timeout can give up (the kernel has no
    timed flock); if it does, the helper lets the lock go as soon as it gets it."""

    def __init__(self, fd: int, mode: int) -> None:
        self.fd = fd
        self.mode = mode
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._acquired = False
        self._abandoned = False
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="llm-limiter-wait", daemon=True).start()

    def _run(self) -> None:
        try:
            fcntl.flock(self.fd, self.mode)
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who closes fd
            with self._lock:
                self._error = error
                abandoned = self._abandoned
            if abandoned:
                _close(self.fd, unlock=False)
            self._done.set()
            return
        with self._lock:
            if not self._abandoned:
                self._acquired = True
        if not self._acquired:
            _close(self.fd)  # the caller gave up
        self._done.set()

    def wait(self, timeout: float | None) -> bool:
        """True once the lock is held; False: gave up, and fd is the helper's to close. On an error the
        caller still owns fd."""
        self._done.wait(max(timeout or 0.0, 0.0))
        with self._lock:
            if self._error is not None:
                raise self._error
            if not self._acquired:
                self._abandoned = True
            return self._acquired


def _lock_until(fd: int, mode: int, deadline: float | None) -> bool:
    """Blocking flock, or False at the deadline (fd then belongs to a helper that closes it)."""
    if deadline is None:
        fcntl.flock(fd, mode)
        return True
    if _try_lock(fd, mode):
        return True
    return _LockWaiter(fd, mode).wait(_remaining(deadline))


class LLMLimiter:
    """A machine-wide limit on LLM requests in flight, shared through lock files in `lock_dir`.

    Cheap to build (no I/O until the first acquisition), safe to share between threads; build one per
    process or per run from the settings with `from_config`.
    """

    def __init__(self, lock_dir: Path, max_inflight: int, requests_per_minute: int = 0, *,
                 rpm_window: float = RPM_WINDOW_SECONDS, clock: Callable[[], float] = time.time) -> None:
        self.lock_dir = Path(lock_dir)
        self.max_inflight = max_inflight
        self.requests_per_minute = requests_per_minute
        if not rpm_window > 0:
            raise ValueError(f"rpm_window must be positive, not {rpm_window!r}")
        self.rpm_window = float(rpm_window)
        self._clock = clock  # shared by every process (wall clock); tests inject their own
        self._prepared = False
        # Open slot files kept for reuse (index -> unlocked fds): one acquisition costs a flock, not an
        # open/close. Per process: a forked child starts with an empty pool (its copies are closed).
        self._pool: dict[int, list[int]] = {}
        self._pool_pid = os.getpid()
        self._pool_lock = threading.RLock()  # a slot finalized by the GC may run in a thread holding it
        self._released = threading.Condition()  # a release in this process wakes its waiting head at once

    @classmethod
    def from_config(cls, config: "Config") -> "LLMLimiter":
        """The limiter of a config that includes the admins' overrides (`core.settings.open_store(..).config`).

        One instance per lock folder per process, its limits updated from the config: every run of a
        long-lived process (a notebook's in-process runs) shares its pool of open slot files instead of
        leaving one behind per run."""
        key = (str(config.llm_lock_dir), os.getpid())
        with _SHARED_LOCK:
            limiter = _SHARED.get(key)
            if limiter is None:
                limiter = _SHARED[key] = cls(config.llm_lock_dir, config["llm_max_inflight"],
                                             config["llm_requests_per_minute"])
            else:
                limiter.max_inflight = config["llm_max_inflight"]
                limiter.requests_per_minute = config["llm_requests_per_minute"]
            return limiter

    # -- settings (an admin may change them while requests run) ------------------------------------
    @property
    def max_inflight(self) -> int:
        return self._max_inflight

    @max_inflight.setter
    def max_inflight(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_inflight must be a positive integer, not {value!r}")
        self._max_inflight = value
        pool = getattr(self, "_pool", None)
        if pool is not None:  # a lowered limit: close the pooled files of slots no longer used
            with self._pool_lock:
                for index in [i for i in pool if i >= value]:
                    for fd in pool.pop(index):
                        _close(fd, unlock=False)

    @property
    def requests_per_minute(self) -> int:
        return self._rpm

    @requests_per_minute.setter
    def requests_per_minute(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"requests_per_minute must be an integer >= 0, not {value!r}")
        self._rpm = value

    # -- acquiring ----------------------------------------------------------------------------------
    @contextmanager
    def slot(self, timeout: float | None = None) -> Iterator[Slot]:
        """Hold a slot for the body of the `with`; waits, or raises `LimiterTimeout` after `timeout` s."""
        taken = self.acquire(timeout)
        try:
            yield taken
        finally:
            taken.release()

    def acquire(self, timeout: float | None = None) -> Slot:
        """Wait for a slot (and, with a requests-per-minute cap, a turn); the caller must `release()` it."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        self._prepare()
        free = None if self._queue_busy() else self._try_slots()  # nobody waiting: no need to queue
        if free is not None:
            index, fd = free
        else:
            ticket = self._queue_up(deadline, timeout)
            try:
                index, fd = self._take_slot(deadline, timeout)
            finally:
                self._leave_queue(ticket)
        try:
            granted = self._take_turn(deadline, timeout) if self._rpm else self._clock()
        except BaseException:
            self._give_back(index, fd)
            raise
        return Slot(index, fd, granted, self._give_back)

    def _prepare(self) -> None:
        if self._prepared:
            return
        missing = []
        path = self.lock_dir
        while not path.exists():
            missing.append(path)
            path = path.parent
        for path in [*reversed(missing), self.lock_dir / QUEUE_DIR]:
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                pass
        if self.lock_dir.stat().st_mode & 0o077:
            os.chmod(self.lock_dir, 0o700)
        self._prepared = True

    def _timeout(self, timeout: float | None, what: str) -> LimiterTimeout:
        return LimiterTimeout(f"no {what} within {timeout:g} s (limit {self._max_inflight} requests in flight"
                              f"{f', {self._rpm} per minute' if self._rpm else ''}; {self.in_flight()} in flight now)")

    # -- the queue of waiters -------------------------------------------------------------------------
    def _tickets(self) -> list[int]:
        return [int(name) for name in os.listdir(self.lock_dir / QUEUE_DIR) if name.isdigit()]

    def _queue_up(self, deadline: float | None, timeout: float | None) -> tuple[Path, int]:
        """Take a ticket, then wait until no earlier ticket is left; returns the ticket (path, fd)."""
        seq = _open(self.lock_dir / SEQ_FILE)
        try:
            fcntl.flock(seq, fcntl.LOCK_EX)  # held for microseconds: numbering and creating the ticket
            raw = os.pread(seq, 32, 0).strip()
            number = max([int(raw) if raw.isdigit() else 0, *self._tickets()]) + 1
            data = str(number).encode()
            os.pwrite(seq, data, 0)
            os.ftruncate(seq, len(data))
            path = self.lock_dir / QUEUE_DIR / f"{number:020d}"
            # Nobody probes a ticket larger than their own, and later tickets are numbered after we let
            # the sequence go: this one is locked before anybody could look at it.
            fd = _open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            _close(seq)
        ticket = (path, fd)
        try:
            while True:
                earlier = sorted(n for n in self._tickets() if n < number)
                front = min(self._max_inflight, _FRONT)
                if len(earlier) < front:
                    return ticket  # at the front of the queue: look for a slot
                before = self.lock_dir / QUEUE_DIR / f"{earlier[-front]:020d}"
                try:
                    other = _open(before, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # it just left
                try:
                    got = _lock_until(other, fcntl.LOCK_SH, deadline)
                except BaseException:
                    _close(other, unlock=False)
                    raise
                if not got:
                    raise self._timeout(timeout, "LLM request slot")
                try:
                    _unlink_if_same(before, other)  # still there: its owner died waiting
                finally:
                    _close(other)
        except BaseException:
            self._leave_queue(ticket)
            raise

    def _leave_queue(self, ticket: tuple[Path, int]) -> None:
        path, fd = ticket
        _unlink_if_same(path, fd)  # before unlocking, so the next one finds it gone
        _close(fd)

    def _take_slot(self, deadline: float | None, timeout: float | None) -> tuple[int, int]:
        """As the head of the queue: try every slot, then wait a moment (woken at once by a release in
        this process; a release elsewhere is seen at the next try, within _MAX_DELAY)."""
        delay = _MIN_DELAY
        while True:
            free = self._try_slots()
            if free is not None:
                return free
            left = _remaining(deadline)
            if left is not None and left <= 0:
                raise self._timeout(timeout, "LLM request slot")
            pause = delay * random.uniform(0.75, 1.25)
            with self._released:
                self._released.wait(pause if left is None else min(pause, left))
            delay = min(delay * 1.5, _MAX_DELAY)

    def _try_slots(self) -> tuple[int, int] | None:
        """A free slot below the current limit (re-read each time: it may shrink), or None."""
        for index in range(self._max_inflight):
            fd = self._pooled(index)
            if _try_lock(fd):
                return index, fd
            self._to_pool(index, fd)
        return None

    def _queue_busy(self) -> bool:
        return any(name.isdigit() for name in os.listdir(self.lock_dir / QUEUE_DIR))

    def _pooled(self, index: int) -> int:
        with self._pool_lock:
            if self._pool_pid != os.getpid():  # a forked child: the parent's descriptors are not ours
                self._pool, self._pool_pid = {}, os.getpid()
            free = self._pool.get(index)
            if free:
                return free.pop()
        return _open(self.lock_dir / f"{SLOT_PREFIX}{index}")

    def _to_pool(self, index: int, fd: int) -> None:
        with self._pool_lock:
            if self._pool_pid == os.getpid() and index < self._max_inflight:
                self._pool.setdefault(index, []).append(fd)
                return
        _close(fd, unlock=False)

    def _give_back(self, index: int, fd: int) -> None:
        """Release a held slot: unlock it, keep the open file, wake this process's waiting head. In a
        forked child the number is no longer ours (the fork closed our copies): do nothing."""
        if self._pool_pid != os.getpid():
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:  # closed under us (a fork's cleanup): nothing is held any more
            return
        self._to_pool(index, fd)
        with self._released:
            self._released.notify_all()

    def _take_turn(self, deadline: float | None, timeout: float | None) -> float:
        """Record this request's start once fewer than the cap started within the window."""
        while True:
            limit, window = self._rpm, self.rpm_window
            if not limit:
                return self._clock()
            fd = _open(self.lock_dir / RPM_FILE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                now = self._clock()
                starts = sorted(t for t in _read_times(fd) if now - window < t <= now)
                if len(starts) < limit:
                    starts.append(now)
                    _write_times(fd, starts)
                    return now
                wait = starts[len(starts) - limit] + window - now  # when enough old starts leave the window
            finally:
                _close(fd)
            left = _remaining(deadline)
            if left is not None and left <= 0:
                raise self._timeout(timeout, "requests-per-minute turn")
            pause = min(max(wait, _MIN_DELAY), _RPM_MAX_SLEEP) + random.uniform(0, _MIN_DELAY)
            time.sleep(pause if left is None else min(pause, left))

    # -- looking -------------------------------------------------------------------------------------
    def held_slots(self) -> list[int]:
        """Indices of the slots held right now by any process (also those above a lowered limit)."""
        held = []
        try:
            names = os.listdir(self.lock_dir)
        except FileNotFoundError:
            return []
        for name in names:
            if not name.startswith(SLOT_PREFIX) or not name[len(SLOT_PREFIX):].isdigit():
                continue
            try:
                fd = _open(self.lock_dir / name, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                # a shared probe: concurrent probes do not disturb each other
                if _try_lock(fd, fcntl.LOCK_SH):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                else:
                    held.append(int(name[len(SLOT_PREFIX):]))
            finally:
                _close(fd, unlock=False)
        return sorted(held)

    def in_flight(self) -> int:
        """How many LLM requests hold a slot right now, machine-wide (for the dashboard)."""
        return len(self.held_slots())

    def recent_requests(self) -> int:
        """How many requests started within the requests-per-minute window (as recorded; 0 without a cap)."""
        path = self.lock_dir / RPM_FILE
        try:
            fd = _open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            now = self._clock()
            return sum(1 for t in _read_times(fd) if now - self.rpm_window < t <= now)
        finally:
            _close(fd)


def _unlink_if_same(path: Path, fd: int) -> None:
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _read_times(fd: int) -> list[float]:
    size = os.fstat(fd).st_size
    data = os.pread(fd, size, 0) if size else b""
    times = []
    for line in data.split(b"\n"):
        try:
            times.append(float(line))
        except ValueError:
            continue  # a torn write (a process killed mid-update) costs at most those entries
    return times


def _write_times(fd: int, times: Iterable[float]) -> None:
    data = "".join(f"{t!r}\n" for t in times).encode()
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))


# -- the docetl hook ----------------------------------------------------------------------------------
_ENDPOINTS = ("completion", "embedding", "acompletion", "aembedding")
_HOOK_LOCK = threading.RLock()
_installed: dict[str, Any] = {"limiter": None, "patches": []}  # patches: (module, attribute, original)
_wrappers: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}  # id(original) -> (original, wrapper)
_holding = contextvars.ContextVar("llm_limiter_holding", default=False)


def _is_wrapper(value: Any) -> bool:
    return getattr(value, "__llm_limiter_original__", None) is not None


def _wrapper_for(original: Callable[..., Any]) -> Callable[..., Any]:
    known = _wrappers.get(id(original))
    if known is not None and known[0] is original:
        return known[1]
    if inspect.iscoroutinefunction(original):
        @functools.wraps(original)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            limiter = _installed["limiter"]
            if limiter is None or _holding.get():
                return await original(*args, **kwargs)
            taken = await _acquire_async(limiter)
            token = _holding.set(True)
            try:
                return await original(*args, **kwargs)
            finally:
                _holding.reset(token)
                taken.release()
    else:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            limiter = _installed["limiter"]
            if limiter is None or _holding.get():
                return original(*args, **kwargs)
            with limiter.slot():
                token = _holding.set(True)
                try:
                    return original(*args, **kwargs)
                finally:
                    _holding.reset(token)
    wrapper.__llm_limiter_original__ = original  # type: ignore[attr-defined]
    _wrappers[id(original)] = (original, wrapper)
    return wrapper


async def _acquire_async(limiter: LLMLimiter) -> Slot:
    """Wait for a slot in a daemon thread (not the loop's executor: a closing loop must not wait for it);
    a wait cancelled meanwhile gives the slot back as soon as it arrives."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Slot] = loop.create_future()

    def deliver(taken: Slot) -> None:
        if future.done():  # cancelled while waiting
            taken.release()
        else:
            future.set_result(taken)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def run() -> None:
        try:
            taken = limiter.acquire()
        except BaseException as error:  # noqa: BLE001 - handed to the waiting task
            try:
                loop.call_soon_threadsafe(fail, error)
            except RuntimeError:
                pass
            return
        try:
            loop.call_soon_threadsafe(deliver, taken)
        except RuntimeError:  # the loop is closed: nobody wants it any more
            taken.release()

    threading.Thread(target=run, name="llm-limiter-async", daemon=True).start()
    return await future


def _patch(module: Any, name: str) -> None:
    current = getattr(module, name, None)
    if current is None or not callable(current) or _is_wrapper(current):
        return  # missing, or already wrapped: installing twice never wraps twice
    setattr(module, name, _wrapper_for(current))
    _installed["patches"].append((module, name, current))


def _docetl_modules() -> list[Any]:
    import litellm

    import docetl.operations.utils.api as api

    for name in ("completion", "embedding"):
        if not callable(getattr(api, name, None)):
            raise RuntimeError(f"docetl.operations.utils.api has no {name}: docetl changed how it calls the LLM;"
                               " the limiter hook must be checked again")
    originals = [getattr(m, name) for m in (litellm, api) for name in _ENDPOINTS if hasattr(m, name)]
    originals = [getattr(f, "__llm_limiter_original__", f) for f in originals]
    found = [litellm, api]
    for key, module in list(sys.modules.items()):  # e.g. the optimizer's `from litellm import completion`
        if module is None or module is api or not (key == "docetl" or key.startswith("docetl.")):
            continue
        if any(getattr(module, name, None) is f for name in _ENDPOINTS for f in originals):
            found.append(module)
    return found


def install(limiter: LLMLimiter, modules: Iterable[Any] | None = None) -> None:
    """Make every LLM request docetl makes in this process hold a slot of `limiter` during the call.

    `modules` replaces the docetl/litellm modules to patch (tests pass a stand-in); by default it imports
    docetl (seconds). Installing again only swaps the limiter; `uninstall()` puts the originals back.
    """
    with _HOOK_LOCK:
        targets = list(_docetl_modules() if modules is None else modules)
        _installed["limiter"] = limiter
        for module in targets:
            for name in _ENDPOINTS:
                _patch(module, name)


def install_http(limiter: LLMLimiter) -> None:
    """Like `install`, but a slot is held only around each HTTP exchange (`httpx.Client.send` and
    `httpx.AsyncClient.send`, which litellm and the OpenAI SDK use), not around litellm's own work
    before and after it (~10 ms of CPU per request, measured): the slots then track requests really
    in flight at the provider. Every HTTP request of the process takes a slot, so this is for a
    process that does nothing but one run (the executor's child), never for a notebook."""
    import httpx

    with _HOOK_LOCK:
        _installed["limiter"] = limiter
        for cls in (httpx.Client, httpx.AsyncClient):
            _patch(cls, "send")


def installed() -> LLMLimiter | None:
    """The limiter the hook uses, or None."""
    return _installed["limiter"]


def uninstall() -> None:
    """Put back every original function the hook replaced; wrappers copied elsewhere become pass-throughs."""
    with _HOOK_LOCK:
        for module, name, original in reversed(_installed["patches"]):
            if getattr(module, name, None) is _wrapper_for(original):
                setattr(module, name, original)
        _installed["patches"].clear()
        # modules that imported a wrapped name after install (`from litellm import completion`)
        for key, module in list(sys.modules.items()):
            if module is None or not (key == "docetl" or key.startswith("docetl.")):
                continue
            for name in _ENDPOINTS:
                value = getattr(module, name, None)
                if _is_wrapper(value):
                    setattr(module, name, value.__llm_limiter_original__)
        _installed["limiter"] = None

"""Calling a reward plugin with a time limit.

Python cannot stop a thread from outside, so a call that runs past its limit is *abandoned*, not killed: the caller
gets :class:`CallTimeout` at once, and the plugin call keeps running in its daemon worker thread until it returns
by itself (its result is then dropped and the thread ends). The next call gets a fresh worker. A plugin that
never returns keeps one idle-looking daemon thread (and whatever it holds) alive until the process exits, and
may run at the same time as the next call, so a plugin used with a timeout should be safe to call from two
threads (pure functions, HTTP clients and torch inference are).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class CallTimeout(Exception):
    """The call did not return within its time limit (it goes on in the background)."""


class _Job:
    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as err:  # handed to the caller's thread, which raises it
            self.error = err
        finally:
            self.done.set()


class TimedCaller:
    """Runs calls one at a time in a daemon worker thread and waits at most ``timeout`` seconds for each."""

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def call(self, function: Callable[[], Any]) -> Any:
        """``function()``, run in the worker; raises :class:`CallTimeout` after ``timeout`` seconds, and what
        ``function`` raised otherwise."""
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=_work, args=(self._jobs,), daemon=True, name="textenv-reward-plugin").start()
        job = _Job(function)
        self._jobs.put(job)
        finished = False
        try:
            finished = job.done.wait(self.timeout)
        finally:
            if not finished:  # timed out or interrupted: leave the busy worker to end after this job
                self._jobs.put(None)
                self._jobs = None
        if not finished:
            raise CallTimeout(f"no result after {self.timeout:g} s")
        if job.error is not None:
            raise job.error
        return job.result

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "_jobs": None}  # the worker thread stays in this process


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        job.run()

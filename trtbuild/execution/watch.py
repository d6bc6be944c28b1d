"""Watching one job process while it runs: its RSS (statm) every POLL_SECONDS, its private bytes
(smaps_rollup), the files it holds (trtbuild.model.nativefiles), and the stop when it crosses its
memory share. Sizes in bytes, times in seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import psutil

from trtbuild.model.nativefiles import held_files

POLL_SECONDS = 0.01
PRIVATE_EVERY = 5  # read smaps_rollup (costlier than statm) every 5th sample
MAX_SAMPLES = 400  # RSS points kept per process for the build report (Samples)
# Jobs that run model code whose native reads are inputs: their held files are sampled
# (trtbuild.model.nativefiles); every PRIVATE_EVERY-th sample, as the costlier smaps read.
WATCHED_FILES_KINDS = ("graph", "state")


class Samples:
    """RSS over a process's life in at most MAX_SAMPLES points: a point covers a time step and
    keeps the largest RSS seen in it; when the points run out, neighbours merge and the step
    doubles, so a long job keeps its whole curve and no peak is ever averaged away."""

    def __init__(self, step: float = 0.05, clock: Callable[[], float] = time.perf_counter) -> None:
        self.points: list[tuple[float, int]] = []
        self.step, self.clock = step, clock
        self.start = clock()

    def add(self, rss: int) -> None:
        now = self.clock() - self.start
        if self.points and now - self.points[-1][0] < self.step:
            t, high = self.points[-1]
            self.points[-1] = (t, max(high, rss))
            return
        self.points.append((round(now, 3), rss))
        if len(self.points) > MAX_SAMPLES:
            pairs = zip(self.points[::2], self.points[1::2])
            merged = [(a[0], max(a[1], b[1])) for a, b in pairs]
            self.points = merged + self.points[len(merged) * 2 :]
            self.step *= 2


class Watcher(threading.Thread):
    """Samples the process's RSS (and, with `files`, the files it holds); kills it when it
    crosses `limit`."""

    def __init__(
        self, pid: int, limit: int | None, private: bool = False, files: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit, self.private, self.watch_files = pid, limit, private, files
        self.files: set[str] = set()
        self.peak = 0
        self.private_peak = 0
        self.killed = False
        self.samples = Samples()
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            process = psutil.Process(self.pid)
        except psutil.Error:
            return
        samples = 0
        while not self._stop_event.wait(POLL_SECONDS):
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.samples.add(rss)
            samples += 1
            if self.private and samples % PRIVATE_EVERY == 1:
                self.private_peak = max(self.private_peak, private_bytes(self.pid))
            if self.watch_files and samples % PRIVATE_EVERY == 1:
                self.files |= held_files(self.pid)
            if self.limit is not None and rss > self.limit:
                self.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                return

    def stop(self) -> None:
        self._stop_event.set()


def private_bytes(pid: int) -> int:
    """Pages only this process holds (USS: Private_Clean + Private_Dirty), 0 once it is gone."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total

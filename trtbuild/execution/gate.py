"""The memory gate: admits a job only when its predicted peak fits in what the budget leaves, so
jobs run side by side exactly as far as memory allows (bytes throughout)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from trtbuild.execution.follow import Held
from trtbuild.execution.forkserver import ForkServer


class MemoryGate:
    """Admit jobs while the sum of their predicted peaks fits the budget, at most `slots` at once.

    One job is always admitted when nothing runs, so a job larger than the budget still gets its
    chance (its own limit stops it). Shared by every target of a run.

    With a fork server, its resident pages count once: a forked job is charged its prediction
    less the server's size (its VmHWM, and so its prediction, already holds those shared pages),
    a plain job its whole prediction plus the server's size while the server runs. A plain job
    that only fits without the server stops it when no forked job needs it; the next forked job
    starts it again.

    A held process (a graph job's, waiting to export its target's parts from its own trace:
    trtbuild.execution.follow) counts its bytes until its job is admitted in its place
    (`replacing`), or until a job that does not fit beside it finds nothing else running: it
    is then released (killed), and its target's export traces again.
    """

    def __init__(self, slots: int, server: ForkServer | None = None) -> None:
        self.slots = max(1, slots)
        self.server = server
        self.in_use = 0
        self.running = 0
        self.forked_running = 0
        self.held: list[Held] = []
        self._cond = threading.Condition()

    def _resident(self) -> int:
        return self.server.rss_bytes if self.server is not None and self.server.running else 0

    def _fits(self, charge: int, forked: bool, budget: int) -> bool:
        assert self.server is not None or not forked
        server = self.server.rss_bytes if forked and self.server is not None else self._resident()
        return self.in_use + charge + server <= budget

    def _evict(self, forked: bool, charge: int, budget: int) -> bool:
        """A plain job fits only without the server, and no forked job runs: stop the server."""
        idle = not forked and not self.forked_running
        alive = self.server is not None and self.server.running
        return idle and alive and not self._fits(charge, False, budget)

    def hold(self, held: Held) -> None:
        """Count a held process's bytes until it is resumed or released."""
        with self._cond:
            self.held.append(held)
            self.in_use += held.bytes

    def release(self, held: Held, why: str) -> None:
        """Release a held process (no longer wanted) and its bytes."""
        with self._cond:
            self._drop(held)
            self._cond.notify_all()
        held.release(why)

    def _drop(self, held: Held) -> bool:
        if held not in self.held:
            return False
        self.held.remove(held)
        self.in_use -= held.bytes
        return True

    def _make_room(self, keep: Held | None, forked_only: bool = False) -> bool:
        """Release one held process other than `keep` (the server's children only, when the
        server is to stop); False when there is none."""
        for held in self.held:
            if held is not keep and (held.forked or not forked_only):
                self._drop(held)
                held.release("released to make room for another job")
                return True
        return False

    @contextmanager
    def admit(
        self, predicted: int, budget: int, forked: bool = False, replacing: Held | None = None
    ) -> Iterator[int]:
        """Wait for room; yields this job's share: the budget less what the others may use.
        `replacing`: the held process this job will run in; its bytes become this job's."""
        forked = forked and self.server is not None
        server_bytes = self.server.rss_bytes if forked and self.server is not None else 0
        charge = max(predicted - server_bytes, 0)
        with self._cond:
            while True:
                if self._evict(forked, charge, budget):
                    while self._make_room(None, forked_only=True):
                        pass  # the server's children die with it
                    self.server.close()  # type: ignore[union-attr]  # its pages serve this job
                own = replacing.bytes if replacing in self.held else 0
                busy = self.running >= self.slots or not self._fits(charge - own, forked, budget)
                if not busy:
                    break
                if not self.running:  # one job is always admitted when nothing runs ...
                    if self._make_room(replacing):  # ... once no held process is in its way
                        continue
                    break
                self._cond.wait()
            if replacing is not None:
                self._drop(replacing)
            share = budget - self.in_use - (0 if forked else self._resident())
            self.in_use += charge
            self.running += 1
            self.forked_running += forked
        try:
            yield share
        finally:
            with self._cond:
                self.in_use -= charge
                self.running -= 1
                self.forked_running -= forked
                self._cond.notify_all()

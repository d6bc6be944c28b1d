"""The one exception type for user errors: one line, no traceback, exit code 1."""

from __future__ import annotations

import errno
import os
import signal
from typing import TypeGuard

# Errors that mean "no room to write": a full disk, a file-size limit, a quota.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DISK_FULL_TEXTS = tuple(os.strerror(e) for e in DISK_FULL_ERRNOS)
# A worker whose write found no room exits with that errno (its result file is perhaps among the
# writes that failed): the executor then names the job's folder and the errno's text.


class TrtbuildError(Exception):
    """A mistake the user can fix: bad recipe, missing file, budget too small, ...

    `message` is one line; `detail` (optional) is kept as further lines under it, for causes
    that only read well as lines (torch.export's constraint text and suggested fixes).
    """

    def __init__(self, message: str, detail: str = "") -> None:
        text = message.replace("\n", " ").strip()
        detail = detail.strip("\n").rstrip()
        super().__init__(f"{text}\n{detail}" if detail else text)

    @classmethod
    def from_text(cls, text: str) -> TrtbuildError:
        """The error again from its str() (as a worker process reports it): lines kept."""
        first, _, rest = text.partition("\n")
        return cls(first, rest)


class BudgetTooSmall(TrtbuildError):
    """No plan fits the budget; `smallest` is the smallest budget (bytes) that would."""

    def __init__(self, message: str, smallest: int) -> None:
        super().__init__(message)
        self.smallest = smallest


class BudgetExceeded(TrtbuildError):
    """A build process crossed its share of the host-memory budget and was stopped."""

    def __init__(self, message: str, peak_rss_bytes: int) -> None:
        super().__init__(message)
        self.peak_rss_bytes = peak_rss_bytes


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a CI runner cancelling, `timeout`, a closed terminal): handled like
    Ctrl-C, whose cleanup paths catch KeyboardInterrupt; the exit code is 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def is_disk_full(exc: BaseException) -> TypeGuard[OSError]:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full_text(text: str) -> str | None:
    """The disk-full message in `text` (a log, a wrapped exception's message), if any."""
    return next((t for t in DISK_FULL_TEXTS if t in text), None)


def disk_full(path: object, exc: OSError | None = None) -> TrtbuildError:
    """The one error for a write that found no room (ENOSPC, EFBIG, EDQUOT): the path written.

    Every caller removes what it half wrote first: the message says so.
    """
    why = exc.strerror if exc is not None and exc.errno != errno.ENOSPC else None
    return TrtbuildError(
        f"{path}: no space left on device{f' ({why})' if why else ''}; the run's scratch and "
        "staging files were removed, the cache and earlier outputs are intact"
    )

"""The one exception type for user errors: one line, no traceback, exit code 1."""

from __future__ import annotations


class TrtbuildError(Exception):
    """A mistake the user can fix: bad recipe, missing file, budget too small, ..."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\n", " ").strip())


class BudgetExceeded(TrtbuildError):
    """A build process crossed its share of the host-memory budget and was stopped."""

    def __init__(self, message: str, peak_rss_bytes: int) -> None:
        super().__init__(message)
        self.peak_rss_bytes = peak_rss_bytes

"""Bounded retries with exponential backoff and jitter, for calls to AWS services."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class RetriesExhausted(RuntimeError):
    """A call kept failing with a retryable error; the message says what and the last error."""


def call_with_backoff(
    fn: Callable[..., T],
    what: str,
    retryable: Callable[[Exception], str | None],
    max_retries: int,
    initial_s: float,
    max_s: float,
    **kwargs: Any,
) -> T:
    """Call fn(**kwargs); on an error `retryable` names, sleep and try again, at most
    `max_retries` times; other errors pass through."""
    delay = initial_s
    for attempt in range(max_retries + 1):
        try:
            return fn(**kwargs)
        except Exception as exc:
            problem = retryable(exc)
            if problem is None:
                raise
            if attempt == max_retries:
                raise RetriesExhausted(
                    f"{what}: gave up after {max_retries} retries; last error: {problem}"
                ) from None
        time.sleep(delay * (0.5 + random.random() / 2))
        delay = min(delay * 2, max_s)
    raise AssertionError("unreachable")


def aws_throttling_or_network(codes: set[str]) -> Callable[[Exception], str | None]:
    """A `retryable` for botocore: the given error codes, and connection errors."""

    def classify(exc: Exception) -> str | None:
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            return code if code in codes else None
        if isinstance(exc, (ConnectionError, HTTPClientError)):
            return f"network error {type(exc).__name__}: {exc}"
        return None

    return classify

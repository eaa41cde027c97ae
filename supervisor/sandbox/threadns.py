"""Run a namespace-changing function on a dedicated, short-lived thread.

unshare/setns change only the calling thread, so the work happens on a thread of its own
and the supervisor's main thread keeps its namespaces whatever goes wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_thread(name: str, func: Callable[[], T]) -> T:
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(func())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]

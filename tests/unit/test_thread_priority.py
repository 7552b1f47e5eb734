"""lower_thread_priority: the main loop gives way to the sender threads, not the other way round."""

from __future__ import annotations

import os
import threading

from consumer.runtime import lower_thread_priority


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_only_the_calling_thread_and_threads_it_starts_later_are_lowered() -> None:
    base = _nice()
    seen: dict[str, int] = {}

    def main_loop() -> None:
        lower_thread_priority(5)
        seen["main loop"] = _nice()
        later = threading.Thread(target=lambda: seen.__setitem__("started later", _nice()))
        later.start()
        later.join(5)

    before = threading.Event()
    sender = threading.Thread(target=lambda: (before.wait(5), seen.__setitem__("sender", _nice())))
    sender.start()  # exists before the main loop lowers itself, like the sender's threads
    loop = threading.Thread(target=main_loop)
    loop.start()
    loop.join(5)
    before.set()
    sender.join(5)
    assert seen == {"main loop": min(base + 5, 19), "started later": min(base + 5, 19), "sender": base}
    assert _nice() == base, "the calling test thread is untouched"


def test_zero_changes_nothing() -> None:
    base = _nice()
    done: list[int] = []
    worker = threading.Thread(target=lambda: (lower_thread_priority(0), done.append(_nice())))
    worker.start()
    worker.join(5)
    assert done == [base]

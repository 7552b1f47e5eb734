"""Interpreter and scheduler settings the main loop applies to itself once, at start."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading

from . import gcpacing

log = logging.getLogger("consumer.runtime")


def tune_interpreter() -> None:
    """Move start-up objects out of the collector's sight and leave collections to the main
    loop (see gcpacing.py).

    The pipeline allocates many short-lived objects and few cycles; with the default thresholds
    full collections of a growing heap took up to 300 ms (31 % of the CPU in the benchmark) and
    delayed calls that were waiting for their token, losing rate-limit slots.
    """
    gc.collect()
    gc.freeze()
    gcpacing.install()
    # a worker whose rate-limit slot has come must not wait long for the GIL while the main loop
    # decodes: every millisecond late is a millisecond of the account's budget lost
    sys.setswitchinterval(0.001)


def lower_thread_priority(nice: int) -> None:
    """Add ``nice`` to the calling thread's niceness (Linux schedules each thread on its own).

    The main loop calls it once the sender's threads exist (threads started later from the main
    thread inherit it; the sender's pool is started by its dispatcher). On a busy machine a
    sender thread granted a rate-limit slot then gets a CPU ahead of the decoding main loop: each
    millisecond between the grant and the call on the wire is charged to the account's budget
    (see limiter/lateness.py). Elsewhere niceness is per process, so nothing is changed."""
    if nice <= 0 or sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, os.getpriority(os.PRIO_PROCESS, thread) + nice)
    except OSError as exc:
        log.warning("could not lower the main loop's priority by %d: %s", nice, exc)

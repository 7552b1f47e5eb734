"""Receipts seen: each report is published once, however often CAMS pushes it.

A receiver *claims* the reports of a push before it publishes them (``claim``: SET NX of
``<prefix>receipts:seen:<seen_key>`` to its push's token, for ``claim_s``), then marks them done
for the retention (``done``) once the broker acknowledged their statuses, or lets them go
(``release``) when it could not publish. What ``claim`` says of each report:

- ``NEW``: this push took it, publish it;
- ``SEEN``: published before (done), or a repeat within this same push: drop it;
- ``BUSY``: another push holds it, not yet published (a second receiver, or one that died
  holding it, until ``claim_s`` passes): not acknowledged, so CAMS pushes it again.

Claims make a receiver killed between publishing and answering safe: its claims run out, and the
push CAMS repeats finds the reports done (published) or free (not published). ``RedisSeen`` shares
them between receivers (one script call per push to claim, one to mark done); ``MemorySeen`` is
the same in one process, bounded by ``MEMORY_KEYS`` (oldest first).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from typing import Protocol

from redis import Redis

MEMORY_KEYS = 2_000_000


class Seen(enum.Enum):
    NEW = 0
    SEEN = 1
    BUSY = 2


_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = 0
  else
    local held = redis.call('GET', key)
    if held == ARGV[1] or held == 'd' then out[i] = 1 else out[i] = 2 end
  end
end
return out
"""

_DONE_SCRIPT = """
for _, key in ipairs(KEYS) do redis.call('SET', key, 'd', 'PX', ARGV[1]) end
return 0
"""

_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


class SeenStore(Protocol):
    def claim(self, keys: list[str], token: str) -> list[Seen]: ...
    def done(self, keys: list[str]) -> None: ...
    def release(self, keys: list[str], token: str) -> None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


class RedisSeen:
    def __init__(self, client: Redis, retention_s: int, claim_s: float, key_prefix: str = "chatapp:"):
        self._redis = client
        self._prefix = key_prefix + "receipts:seen:"
        self._retention_ms = retention_s * 1000
        self._claim_ms = max(1, int(claim_s * 1000))
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._done = client.register_script(_DONE_SCRIPT)

    def claim(self, keys: list[str], token: str) -> list[Seen]:
        if not keys:
            return []
        answers = self._claim(keys=[self._prefix + k for k in keys], args=[token, self._claim_ms])
        return [Seen(int(a)) for a in answers]

    def done(self, keys: list[str]) -> None:
        if keys:
            self._done(keys=[self._prefix + k for k in keys], args=[self._retention_ms])

    def release(self, keys: list[str], token: str) -> None:
        if keys:
            self._release(keys=[self._prefix + k for k in keys], args=[token])

    def healthy(self) -> bool:
        return bool(self._redis.ping())

    def close(self) -> None:
        self._redis.close()


class MemorySeen:
    def __init__(self, retention_s: int, claim_s: float, max_keys: int = MEMORY_KEYS, clock=time.monotonic):
        self._retention_s = retention_s
        self._claim_s = claim_s
        self._max = max_keys
        self._clock = clock
        self._held: OrderedDict[str, tuple[str, float]] = OrderedDict()  # key -> (token or "d", expires at)
        self._lock = threading.Lock()

    def claim(self, keys: list[str], token: str) -> list[Seen]:
        now = self._clock()
        out = []
        with self._lock:
            for key in keys:
                held = self._held.get(key)
                if held is None or held[1] <= now:
                    self._held[key] = (token, now + self._claim_s)
                    self._held.move_to_end(key)
                    out.append(Seen.NEW)
                else:
                    out.append(Seen.SEEN if held[0] in (token, "d") else Seen.BUSY)
            while len(self._held) > self._max:
                self._held.popitem(last=False)
        return out

    def done(self, keys: list[str]) -> None:
        until = self._clock() + self._retention_s
        with self._lock:
            for key in keys:
                self._held[key] = ("d", until)
                self._held.move_to_end(key)

    def release(self, keys: list[str], token: str) -> None:
        with self._lock:
            for key in keys:
                if self._held.get(key, ("", 0.0))[0] == token:
                    del self._held[key]

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass

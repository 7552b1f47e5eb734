"""Receipts seen: each report is published once, however often CAMS pushes it.

A receiver *claims* the reports of a push before it publishes them (``claim``: SET NX of
``<prefix>receipts:seen:<seen_key>`` to ``<push token>|<claimed at, ms>|<mark>``), then marks them
done for the retention (``done``) once the broker acknowledged their statuses, or lets them go
(``release``) when it could not publish. The *mark* is where the status topic ended when the claim
was taken (``recover.log_mark``): a status published under the claim is past it. What ``claim``
says of each report:

- ``NEW``: this push took it, publish it;
- ``SEEN``: published before (done), or a repeat within this same push: drop it;
- ``BUSY``: another push holds it, taken less than ``claim_s`` ago: not acknowledged, CAMS
  pushes it again;
- ``Stale(mark)``: another push took it more than ``claim_s`` ago and never marked it (its
  receiver died, or could not reach Redis): this push now holds it, with the first holder's mark,
  and must look on the topic past that mark before publishing (``recover``): the dead receiver
  may have published it after the broker's acknowledgement and before its done mark.

Claims are kept for the retention, like done marks, so a dead receiver's claim is still there
when CAMS pushes again minutes later. ``RedisSeen`` shares them between receivers (one script
call per push to claim, one to mark done); ``MemorySeen`` is the same in one process, bounded by
``MEMORY_KEYS`` (oldest first).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from typing import NamedTuple, Protocol

from redis import Redis

MEMORY_KEYS = 2_000_000


class Seen(enum.Enum):
    NEW = 0
    SEEN = 1
    BUSY = 2


class Stale(NamedTuple):
    """A claim taken over from a push that held it past ``claim_s``: ``mark`` is the topic's end
    when it was first claimed."""

    mark: str


Verdict = Seen | Stale

# KEYS: the reports; ARGV: token, now (ms), claim (ms), retention (ms), mark.
# A value: 'd' (done) or '<token>|<claimed at>|<mark>'; one without '|' (an older receiver's) is busy.
_CLAIM = """
local out = {}
local own = ARGV[1] .. '|'
local now = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, own .. ARGV[2] .. '|' .. ARGV[5], 'NX', 'PX', ARGV[4]) then
    out[i] = '0'
  else
    local held = redis.call('GET', key)
    local bar = string.find(held, '|', 1, true)
    if held == 'd' or string.sub(held, 1, #own) == own then
      out[i] = '1'
    elseif not bar then
      out[i] = '2'
    else
      local bar2 = string.find(held, '|', bar + 1, true)
      if now < tonumber(string.sub(held, bar + 1, bar2 - 1)) + tonumber(ARGV[3]) then
        out[i] = '2'
      else
        local mark = string.sub(held, bar2 + 1)
        redis.call('SET', key, own .. ARGV[2] .. '|' .. mark, 'PX', ARGV[4])
        out[i] = '3' .. mark
      end
    end
  end
end
return out
"""

_DONE_SCRIPT = """
for _, key in ipairs(KEYS) do redis.call('SET', key, 'd', 'PX', ARGV[1]) end
return 0
"""

_RELEASE = """
local own = ARGV[1] .. '|'
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and string.sub(held, 1, #own) == own then redis.call('DEL', key) end
end
return 0
"""


def _verdict(answer: bytes | str) -> Verdict:
    text = answer.decode() if isinstance(answer, bytes) else answer
    return Stale(text[1:]) if text[0] == "3" else Seen(int(text))


class SeenStore(Protocol):
    def claim(self, keys: list[str], token: str, mark: str = "") -> list[Verdict]: ...
    def done(self, keys: list[str]) -> None: ...
    def release(self, keys: list[str], token: str) -> None: ...
    def healthy(self) -> bool: ...
    def close(self) -> None: ...


class RedisSeen:
    def __init__(self, client: Redis, retention_s: int, claim_s: float, key_prefix: str = "chatapp:", clock=time.time):
        self._redis = client
        self._clock = clock
        self._prefix = key_prefix + "receipts:seen:"
        self._retention_ms = retention_s * 1000
        self._claim_ms = max(1, int(claim_s * 1000))
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._done = client.register_script(_DONE_SCRIPT)

    def claim(self, keys: list[str], token: str, mark: str = "") -> list[Verdict]:
        if not keys:
            return []
        now_ms = int(self._clock() * 1000)
        answers = self._claim(keys=[self._prefix + k for k in keys], args=[token, now_ms, self._claim_ms, self._retention_ms, mark])
        return [_verdict(a) for a in answers]

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
        # key -> (token or "d", claimed at or done until, mark)
        self._held: OrderedDict[str, tuple[str, float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, keys: list[str], token: str, mark: str = "") -> list[Verdict]:
        now = self._clock()
        out: list[Verdict] = []
        with self._lock:
            for key in keys:
                held = self._held.get(key)
                if held is None or (held[0] == "d" and held[1] <= now):
                    self._held[key] = (token, now, mark)
                    self._held.move_to_end(key)
                    out.append(Seen.NEW)
                elif held[0] in (token, "d"):
                    out.append(Seen.SEEN)
                elif now < held[1] + self._claim_s:
                    out.append(Seen.BUSY)
                else:
                    self._held[key] = (token, now, held[2])
                    out.append(Stale(held[2]))
            while len(self._held) > self._max:
                self._held.popitem(last=False)
        return out

    def done(self, keys: list[str]) -> None:
        until = self._clock() + self._retention_s
        with self._lock:
            for key in keys:
                self._held[key] = ("d", until, "")
                self._held.move_to_end(key)

    def release(self, keys: list[str], token: str) -> None:
        with self._lock:
            for key in keys:
                if self._held.get(key, ("", 0.0, ""))[0] == token:
                    del self._held[key]

    def healthy(self) -> bool:
        return True

    def close(self) -> None:
        pass

"""Per-account CAMS call budget: a token source the dispatcher asks before each SendChatappMassMessage.

``InProcessLimiter`` serves one process; ``RedisLimiter`` shares each account's budget (and its
adaptive factor) across every instance of the consumer group, falling back to an in-process share
when Redis is unreachable. Both never sleep: ``acquire`` returns 0.0 (go) or the seconds to wait;
``reserve`` takes the next free slot up to ``RESERVE_AHEAD_S`` ahead in one request and says when
it is (the caller sleeps until then and sends without asking again).
"""

from .adaptive import AdaptivePolicy, RateFactor
from .memory import InProcessLimiter
from .protocol import RESERVE_AHEAD_S, AccountLimit, LimiterObserver, NoopObserver, RateLimiter, Reservation
from .redis import RedisLimiter, connect, fallback_limit, fallback_limits

__all__ = [
    "AccountLimit",
    "AdaptivePolicy",
    "InProcessLimiter",
    "LimiterObserver",
    "NoopObserver",
    "RateFactor",
    "RESERVE_AHEAD_S",
    "RateLimiter",
    "RedisLimiter",
    "Reservation",
    "connect",
    "fallback_limit",
    "fallback_limits",
]

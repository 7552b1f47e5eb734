"""Which limiter a process uses, built from the configuration."""

from __future__ import annotations

from ..config import Config
from ..redis_watch import RedisWatch
from ..worker_link import WorkerLink
from . import AccountLimit, AdaptivePolicy, InProcessLimiter, LimiterObserver, RateLimiter, RedisLimiter, connect, fallback_limits
from .hosted import HostedLimiter


def _account_limits(config: Config) -> tuple[dict[str, AccountLimit], AccountLimit]:
    """Each configured account's limit, and the default account's."""
    limits = {name: AccountLimit(acc.rate_limit_per_second, acc.rate_limit_burst) for name, acc in config.accounts.items()}
    return limits, AccountLimit(config.rate_limit_per_second, config.rate_limit_burst)


def _adaptive_policy(config: Config) -> AdaptivePolicy:
    return AdaptivePolicy(decrease=config.rate_limit_decrease, recovery_per_s=config.rate_limit_recovery_per_s)


def in_process_limiter(config: Config, observer: LimiterObserver | None = None, share: int = 1) -> InProcessLimiter:
    """The accounts' limits in this process; with ``share`` N, each account's ``floor(rate / N)``."""
    limits, default = _account_limits(config)
    if share > 1:
        limits, default = fallback_limits(limits, default, share)
    return InProcessLimiter(limits, default, safety_margin=config.rate_limit_safety_margin, policy=_adaptive_policy(config), observer=observer)


def build_limiter(config: Config, observer: LimiterObserver, worker: WorkerLink | None = None, watch: RedisWatch | None = None) -> RateLimiter:
    """Redis's shared limiter; else, in a worker, its supervisor's; else this process's own."""
    if config.redis_url:
        limits, default = _account_limits(config)
        return RedisLimiter(
            connect(config.redis_url), limits, default, safety_margin=config.rate_limit_safety_margin,
            key_prefix=config.redis_key_prefix + "limiter:", fallback_instances=config.limiter_fallback_instances,
            policy=_adaptive_policy(config), observer=observer, watch=watch,
        )  # fmt: skip
    if worker is not None and worker.limiter_address and worker.limiter_key:
        fallback = in_process_limiter(config, observer, share=worker.count)
        return HostedLimiter(worker.limiter_address, worker.limiter_key, fallback, observer=observer)
    return in_process_limiter(config, observer)

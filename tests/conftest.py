"""Shared fixtures: each real part (broker, CAMS endpoint, Redis, the service) lives in its own module."""

pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.cams",
    "tests.fixtures.receipt_receiver",
    "tests.fixtures.service",
    "tests.fixtures.redis",
    "tests.fixtures.receipts",
    "tests.fixtures.round_robin",
]

"""Fixtures: real otpd daemons in development mode, from the binary in ``$OTPD_BIN``.

No daemon binary is an error, not a skip: a suite that skipped its daemon tests would
pass without testing anything.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from otpd import Client
from otpd.testing import DevDaemon

# Each test takes fresh numbers: the per-phone limit and codes outlive a test.
_numbers = itertools.count(100)


def binary() -> str:
    path = os.environ.get("OTPD_BIN", "")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("set OTPD_BIN to the otpd binary (e.g. target/debug/otpd)", pytrace=False)
    return path


@pytest.fixture(scope="session")
def daemon() -> Iterator[DevDaemon]:
    """The main daemon: three codes per number per hour, the rest at defaults."""
    with DevDaemon({"limits": {"send_per_phone": "3/1h"}}, binary=binary()) as d:
        yield d


@pytest.fixture(scope="session")
def short_daemon() -> Iterator[DevDaemon]:
    """Codes that expire after a second, and a test number for test-twilio."""
    config = {"otp": {"ttl": "1s"}, "twilio": {"test_phone_number": "+34600999000"}}
    with DevDaemon(config, binary=binary()) as d:
        yield d


@pytest.fixture
def client(daemon: DevDaemon) -> Iterator[Client]:
    with Client(daemon.socket, timeout=10.0) as c:
        yield c


@pytest.fixture
def phone() -> str:
    """A Spanish mobile number no other test uses."""
    return f"+34600{next(_numbers):06d}"

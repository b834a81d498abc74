"""The test helpers: the outbox reader against a real daemon, and the fake client,
which must refuse what the daemon refuses in the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

import otpd
from otpd import Client
from otpd.testing import DevDaemon, FakeAsyncClient, FakeClient, NoCodeSent


def test_last_code_is_the_newest_code_to_that_number(
    client: Client, daemon: DevDaemon, phone: str
) -> None:
    other = phone[:-1] + ("1" if phone[-1] != "1" else "2")
    client.send_otp(phone, "login")
    first = daemon.outbox.last_code(phone)
    client.send_otp(phone, "registration")
    second = daemon.outbox.last_code(phone)
    # Another number's code and a plain SMS full of digits come later in the outbox.
    client.send_otp(other, "login")
    client.send_sms(phone, "Your order 123456 ships on 2030-01-02, ref 654321.")
    assert daemon.outbox.last_code(phone) == second
    assert daemon.outbox.last_code(phone, purpose="login") == first
    client.verify_otp(phone, second, "registration")
    client.verify_otp(phone, first, "login")


def test_last_code_without_a_code(daemon: DevDaemon, phone: str) -> None:
    with pytest.raises(NoCodeSent):
        daemon.outbox.last_code(phone)


def test_dev_daemon_stops_on_exit(daemon: DevDaemon) -> None:
    with DevDaemon(binary=daemon.binary) as d:
        assert d.client.status().dev_mode is True
        process = d._process
    assert process is not None and process.poll() is not None
    assert not d.dir.exists()


def test_dev_daemon_reports_a_bad_config(daemon: DevDaemon) -> None:
    with pytest.raises(RuntimeError, match="78"):
        DevDaemon({"otp": {"length": 99}}, binary=daemon.binary).start()


# ---- The fake ----


def test_fake_send_then_verify() -> None:
    fake = FakeClient()
    sent = fake.send_otp("+34 600 11 12 22", "login", user_id=42)
    code = fake.last_code("+34600111222")
    assert len(code) == 6 and code.isdigit()
    assert fake.sent[-1].body.startswith(f"Your verification code is {code}.")
    assert fake.verify_otp("+34600111222", code, "login", user_id=42).otp_id == sent.otp_id
    with pytest.raises(otpd.OtpAlreadyUsed):
        fake.verify_otp("+34600111222", code, "login", user_id=42)


def test_fake_expiry_and_supersession() -> None:
    fake = FakeClient(ttl=60)
    fake.send_otp("+34600111222", "login")
    old = fake.last_code("+34600111222")
    fake.send_otp("+34600111222", "login")
    new = fake.last_code("+34600111222")
    if old != new:
        with pytest.raises(otpd.InvalidOtp):
            fake.verify_otp("+34600111222", old, "login")
    fake.advance(61)
    with pytest.raises(otpd.OtpExpired):
        fake.verify_otp("+34600111222", new, "login")


def test_fake_rate_limit_and_injected_errors() -> None:
    fake = FakeClient(send_per_phone=(1, 60))
    fake.send_otp("+34600111222", "login")
    with pytest.raises(otpd.RateLimited) as caught:
        fake.send_otp("+34600111222", "login")
    assert caught.value.limit == "send_per_phone" and caught.value.retry_after > 0
    fake.fail_next(otpd.TwilioUnavailable("twilio_unavailable", "Twilio is unreachable", None, 503))
    with pytest.raises(otpd.TwilioUnavailable):
        fake.send_otp("+34600111333", "login")
    fake.send_otp("+34600111333", "login")


def test_fake_async() -> None:
    async def main() -> None:
        async with FakeAsyncClient() as client:
            sent = await client.send_otp("+34600111222", "login")
            code = client.last_code("+34600111222")
            assert (await client.verify_otp("+34600111222", code, "login")).otp_id == sent.otp_id

    anyio.run(main)


def scenario(client: Any, last_code: Callable[[str], str], phones: list[str]) -> list[object]:
    """What a caller sees, step by step: values' types, errors' classes, codes and fields."""
    seen: list[object] = []
    phone, second, third = phones

    def step(call: Callable[[], object]) -> None:
        try:
            seen.append(type(call()).__name__)
        except otpd.OtpdError as e:
            seen.append(
                (type(e).__name__, e.code, e.status, getattr(e, "attempts_remaining", None))
            )

    step(lambda: client.send_otp("600111222", "login"))
    step(lambda: client.send_otp(phone, "signup"))
    step(lambda: client.verify_otp(phone, "123456", "login"))
    step(lambda: client.send_otp(phone, "login", user_id=1))
    code = last_code(phone)
    bad = "".join(str((int(c) + 1) % 10) for c in code)
    step(lambda: client.verify_otp(phone, "12x", "login"))
    step(lambda: client.verify_otp(phone, code, "login", user_id=2))
    for _ in range(2):
        step(lambda: client.verify_otp(phone, bad, "login", user_id=1))
    step(lambda: client.verify_otp(phone, code, "login", user_id=1))
    step(lambda: client.verify_otp(phone, code, "login", user_id=1))
    step(lambda: client.send_otp(phone, "two_factor"))
    step(lambda: client.send_otp(phone, "password_reset"))
    step(lambda: client.send_otp(phone, "registration"))
    # The code dies after five wrong attempts.
    step(lambda: client.send_otp(second, "login"))
    code = last_code(second)
    bad = "".join(str((int(c) + 1) % 10) for c in code)
    for _ in range(5):
        step(lambda: client.verify_otp(second, bad, "login"))
    step(lambda: client.verify_otp(second, code, "login"))
    # Ten verifies per number, whatever they are.
    for _ in range(11):
        step(lambda: client.verify_otp(third, "123456", "login"))
    step(lambda: client.send_sms(phone, "x", template="y"))
    step(lambda: client.message(987_654))
    step(lambda: client.test_twilio())
    return seen


def test_the_fake_refuses_like_the_daemon(client: Client, daemon: DevDaemon) -> None:
    phones = [f"+34622{n:06d}" for n in range(3)]
    fake = FakeClient(send_per_phone=(3, 3600))
    real = scenario(client, daemon.outbox.last_code, phones)
    faked = scenario(fake, fake.last_code, phones)
    assert faked == real
    # The scenario went through every kind of answer it meant to.
    assert ("RateLimited", "rate_limited", 429, None) in real[:16]  # send_per_phone
    assert ("TooManyAttempts", "too_many_attempts", 429, 0) in real
    assert ("RateLimited", "rate_limited", 429, None) == real[-4]  # verify_per_phone

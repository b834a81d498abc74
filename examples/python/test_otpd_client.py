"""Tests of otpd_client against a real otpd in development mode.

Set OTPD_SOCKET (the daemon's socket) and OTPD_OUTBOX (its outbox.jsonl), with
``send_per_phone = "3/1h"`` in ``[limits]``, then::

    python -m unittest -v examples/python/test_otpd_client.py

``cargo test --test python_client`` does all of that. The per-phone limit covers
every number, so each test uses its own.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import tempfile
import time
import unittest
import warnings
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from otpd_client import (  # noqa: E402
    InvalidRequest,
    OtpdClient,
    OtpdError,
    OtpdUnreachable,
    ProviderRejected,
    RateLimited,
    ServiceUnavailable,
    VerificationFailed,
)

SOCKET = os.environ.get("OTPD_SOCKET", "")
OUTBOX = os.environ.get("OTPD_OUTBOX", "")
RATE_LIMITED_PHONE = "+34600000999"


def last_code(phone: str) -> str:
    """The code in the last outbox message to ``phone``."""
    with open(OUTBOX, encoding="utf-8") as f:
        messages = [json.loads(line) for line in f if line.strip()]
    for message in reversed(messages):
        if message.get("to") == phone:
            match = re.search(r"code is (\d+)", message["body"])
            if match:
                return match.group(1)
    raise AssertionError(f"no code for {phone} in {OUTBOX}")


def wrong(code: str) -> str:
    """A code of the same length that is not ``code``."""
    return "".join(str((int(c) + 1) % 10) for c in code)


class OtpdClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        if not SOCKET or not OUTBOX:
            raise unittest.SkipTest("set OTPD_SOCKET and OTPD_OUTBOX to a development-mode otpd")

    def setUp(self) -> None:
        self.otpd = OtpdClient(SOCKET, timeout=10.0)
        self.addCleanup(self.otpd.close)

    def test_send_then_verify(self) -> None:
        phone = "+34600000101"
        sent = self.otpd.send_otp(phone, "registration", user_id="42")
        self.assertIsInstance(sent.otp_id, int)
        self.assertIsNotNone(sent.expires_at.tzinfo)
        self.assertGreater(sent.expires_at, datetime.now(timezone.utc))
        otp_id = self.otpd.verify_otp(phone, last_code(phone), "registration", user_id="42")
        self.assertEqual(otp_id, sent.otp_id)

    def test_integer_user_id_and_formatted_number(self) -> None:
        sent = self.otpd.send_otp("+34 600 00 01 02", "login", user_id=42)
        code = last_code("+34600000102")
        self.assertEqual(
            self.otpd.verify_otp("+34600000102", code, "login", user_id=42), sent.otp_id
        )

    def test_wrong_code(self) -> None:
        phone = "+34600000103"
        self.otpd.send_otp(phone, "login")
        with self.assertRaises(VerificationFailed) as caught:
            self.otpd.verify_otp(phone, wrong(last_code(phone)), "login")
        e = caught.exception
        self.assertEqual(e.code, "invalid_otp")
        self.assertEqual(e.status, 400)
        self.assertEqual(e.attempts_remaining, 4)
        self.assertIs(e.payload["verified"], False)
        self.assertTrue(e.message)

    def test_whatsapp_channel(self) -> None:
        phone = "+34600000110"
        sent = self.otpd.send_otp(phone, "login", channel="whatsapp")
        self.assertEqual(sent.channel, "whatsapp")
        with open(OUTBOX, encoding="utf-8") as f:
            last = [json.loads(line) for line in f if line.strip()][-1]
        self.assertEqual((last["to"], last["channel"]), (phone, "whatsapp"))
        self.assertEqual(self.otpd.verify_otp(phone, last_code(phone), "login"), sent.otp_id)
        with self.assertRaises(InvalidRequest) as caught:
            self.otpd.send_otp(phone, "login", channel="fax")
        self.assertEqual(caught.exception.code, "invalid_channel")

    def test_send_sms_is_queued_sent_and_replayed(self) -> None:
        queued = self.otpd.send_sms("+34600000111", "Table for 2 at 20:00", idempotency_key="r-1")
        self.assertEqual((queued.status, queued.segments, queued.encoding), ("queued", 1, "GSM-7"))
        self.assertFalse(queued.replayed)
        deadline = datetime.now(timezone.utc) + timedelta(seconds=10)
        while self.otpd.message(queued.message_id)["status"] != "sent":
            self.assertLess(datetime.now(timezone.utc), deadline, "never sent")
            time.sleep(0.02)
        again = self.otpd.send_sms("+34600000111", "Table for 2 at 20:00", idempotency_key="r-1")
        self.assertEqual(again.message_id, queued.message_id)
        self.assertTrue(again.replayed)
        history = [e["status"] for e in self.otpd.message(queued.message_id)["history"]]
        self.assertEqual(history, ["queued", "sending", "sent"])
        with self.assertRaises(OtpdError) as caught:
            self.otpd.send_sms("+34600000111", "Another text", idempotency_key="r-1")
        self.assertEqual((caught.exception.code, caught.exception.status), ("idempotency_key_reused", 409))

    def test_reused_code(self) -> None:
        phone = "+34600000104"
        self.otpd.send_otp(phone, "password_reset")
        code = last_code(phone)
        self.otpd.verify_otp(phone, code, "password_reset")
        with self.assertRaises(VerificationFailed) as caught:
            self.otpd.verify_otp(phone, code, "password_reset")
        self.assertEqual(caught.exception.code, "otp_already_used")
        self.assertIsNone(caught.exception.attempts_remaining)

    def test_invalid_phone_number(self) -> None:
        with self.assertRaises(InvalidRequest) as caught:
            self.otpd.send_otp("600111222", "login")
        self.assertEqual(caught.exception.code, "invalid_phone_number")
        self.assertEqual(caught.exception.status, 400)
        self.assertNotIsInstance(caught.exception, VerificationFailed)

    def test_invalid_purpose(self) -> None:
        with self.assertRaises(InvalidRequest) as caught:
            self.otpd.send_otp("+34600000105", "signup")
        self.assertEqual(caught.exception.code, "invalid_purpose")
        self.assertIn("registration", caught.exception.details or "")

    def test_rate_limited(self) -> None:
        for _ in range(3):
            self.otpd.send_otp(RATE_LIMITED_PHONE, "login")
        with self.assertRaises(RateLimited) as caught:
            self.otpd.send_otp(RATE_LIMITED_PHONE, "login")
        e = caught.exception
        self.assertEqual(e.code, "rate_limited")
        self.assertEqual(e.status, 429)
        self.assertEqual(e.limit, "send_per_phone")
        self.assertIsInstance(e.retry_after, int)
        self.assertGreater(e.retry_after, 0)

    def test_status(self) -> None:
        status = self.otpd.status()
        self.assertIs(status["enabled"], True)
        self.assertIs(status["dev_mode"], True)

    def test_healthy(self) -> None:
        self.assertTrue(self.otpd.healthy())

    def test_unknown_path_is_a_plain_otpd_error(self) -> None:
        with self.assertRaises(OtpdError) as caught:
            self.otpd._request("GET", "/api/v1/messaging/nope/")
        self.assertIs(type(caught.exception), OtpdError)
        self.assertEqual(caught.exception.code, "not_found")
        self.assertEqual(caught.exception.status, 404)

    def test_context_manager(self) -> None:
        with OtpdClient(SOCKET) as otpd:
            self.assertTrue(otpd.healthy())


class UnreachableTest(unittest.TestCase):
    def test_missing_socket(self) -> None:
        # httpcore 1.0.9 does not close the socket whose connect() failed; it is
        # collected with the exception, and the ResourceWarning is not ours.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            with tempfile.TemporaryDirectory() as dir, OtpdClient(
                os.path.join(dir, "otpd.sock")
            ) as otpd:
                with self.assertRaises(OtpdUnreachable) as caught:
                    otpd.send_otp("+34600000106", "login")
                e = caught.exception
                self.assertEqual(e.code, "otpd_unreachable")
                self.assertIsNone(e.status)
                self.assertIsInstance(e, ServiceUnavailable)
                self.assertIn("otpd.sock", e.message)
                self.assertFalse(otpd.healthy())
                del caught, e
                gc.collect()


class ErrorMappingTest(unittest.TestCase):
    """Answers otpd does not give on demand, from an httpx.MockTransport."""

    def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> OtpdClient:
        def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, json=body, headers=headers)

        otpd = OtpdClient("/nonexistent/otpd.sock")
        otpd.close()
        otpd._http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://otpd")
        self.addCleanup(otpd.close)
        return otpd

    def raised(self, status: int, body: Any, headers: dict[str, str] | None = None) -> OtpdError:
        with self.assertRaises(OtpdError) as caught:
            self.answer(status, body, headers).send_otp("+34600000107", "login")
        return caught.exception

    def test_unknown_codes_map_by_status(self) -> None:
        for status, cls in [
            (400, InvalidRequest),
            (422, InvalidRequest),
            (429, RateLimited),
            (502, ProviderRejected),
            (503, ServiceUnavailable),
            (404, OtpdError),
            (500, OtpdError),
        ]:
            e = self.raised(status, {"error": "New", "code": "brand_new", "details": "d"})
            self.assertIs(type(e), cls, status)
            self.assertEqual(
                (e.code, e.message, e.details, e.status), ("brand_new", "New", "d", status)
            )

    def test_unknown_not_verified_code(self) -> None:
        e = self.raised(400, {"error": "Nope", "code": "otp_revoked", "verified": False})
        self.assertIs(type(e), VerificationFailed)
        self.assertIsNone(e.details)

    def test_too_many_attempts(self) -> None:
        e = self.raised(
            429, {"error": "Too many", "code": "too_many_attempts"}, {"Retry-After": "42"}
        )
        assert isinstance(e, RateLimited)
        self.assertEqual((e.retry_after, e.limit), (42, None))

    def test_twilio_rejected(self) -> None:
        e = self.raised(502, {"error": "Rejected", "code": "twilio_rejected", "twilio_code": 21211})
        assert isinstance(e, ProviderRejected)
        self.assertEqual(e.twilio_code, 21211)

    def test_not_json(self) -> None:
        e = self.raised(503, "busy")
        self.assertIs(type(e), ServiceUnavailable)
        self.assertEqual(e.code, "http_503")

    def test_expires_at_formats(self) -> None:
        for text, fraction in [
            ("2030-01-02T03:04:05Z", 0),
            ("2030-01-02T03:04:05.5+00:00", 500000),
            ("2030-01-02T03:04:05.123456789Z", 123456),
        ]:
            sent = self.answer(200, {"otp_id": 7, "expires_at": text}).send_otp(
                "+34600000107", "login"
            )
            self.assertEqual(sent.expires_at, datetime(2030, 1, 2, 3, 4, 5, fraction, timezone.utc))
            self.assertEqual(sent.expires_at.utcoffset(), timedelta(0))

    def test_test_twilio_sid(self) -> None:
        otpd = self.answer(200, {"message": "Test message sent successfully with SID: SM0123abc"})
        self.assertEqual(otpd.test_twilio(), "SM0123abc")


if __name__ == "__main__":
    unittest.main()

"""How answers become exceptions and values, for answers a daemon does not give on
demand (an httpx.MockTransport stands in for the socket)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

import otpd


def answering(status: int, body: Any, headers: dict[str, str] | None = None) -> otpd.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body, headers=headers)
        return httpx.Response(status, text=str(body), headers=headers)

    return otpd.Client(transport=httpx.MockTransport(handler))


def raised(status: int, body: Any, headers: dict[str, str] | None = None) -> otpd.OtpdError:
    with pytest.raises(otpd.OtpdError) as caught:
        answering(status, body, headers).send_otp("+34600000107", "login")
    return caught.value


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, otpd.InvalidRequest),
        (422, otpd.InvalidRequest),
        (429, otpd.RateLimited),
        (502, otpd.ProviderRejected),
        (503, otpd.ServiceUnavailable),
        (507, otpd.ServiceUnavailable),
        (404, otpd.OtpdError),
        (500, otpd.OtpdError),
    ],
)
def test_unknown_codes_land_in_the_class_of_their_status(
    status: int, cls: type[otpd.OtpdError]
) -> None:
    e = raised(status, {"error": "New", "code": "brand_new", "details": "d"})
    assert type(e) is cls
    assert (e.code, e.message, e.details, e.status) == ("brand_new", "New", "d", status)


def test_an_unknown_not_verified_code_is_a_verification_failure() -> None:
    e = raised(400, {"error": "Nope", "code": "otp_revoked", "verified": False})
    assert type(e) is otpd.VerificationFailed
    assert e.details is None


@pytest.mark.parametrize(
    ("code", "status", "cls"),
    [
        ("invalid_phone_number", 400, otpd.InvalidPhoneNumber),
        ("country_not_allowed", 422, otpd.CountryNotAllowed),
        ("otp_expired", 400, otpd.OtpExpired),
        ("forbidden", 403, otpd.Forbidden),
        ("invalid_signature", 403, otpd.Forbidden),
        ("idempotency_key_reused", 409, otpd.IdempotencyKeyReused),
        ("twilio_circuit_open", 503, otpd.TwilioCircuitOpen),
        ("twilio_unavailable", 503, otpd.TwilioUnavailable),
        ("daily_cap_reached", 503, otpd.DailyCapReached),
        ("provider_not_configured", 503, otpd.ProviderNotConfigured),
        ("store_full", 507, otpd.StoreFull),
    ],
)
def test_codes_with_their_own_class(code: str, status: int, cls: type[otpd.OtpdError]) -> None:
    assert type(raised(status, {"error": "x", "code": code})) is cls


def test_retry_after_comes_from_the_header() -> None:
    e = raised(429, {"error": "Too many", "code": "too_many_attempts"}, {"Retry-After": "42"})
    assert isinstance(e, otpd.TooManyAttempts)
    assert (e.retry_after, e.limit, e.attempts_remaining) == (42, None, 0)
    busy = raised(503, {"error": "Busy", "code": "store_busy"}, {"Retry-After": "1"})
    assert busy.retry_after == 1
    assert raised(503, {"error": "Down", "code": "store_unavailable"}).retry_after is None


def test_a_429_without_retry_after_still_says_when() -> None:
    e = raised(429, {"error": "Too many", "code": "rate_limited", "limit": "send_global"})
    assert isinstance(e, otpd.RateLimited)
    assert (e.retry_after, e.limit) == (1, "send_global")


def test_twilio_rejected_carries_twilios_code() -> None:
    e = raised(502, {"error": "Rejected", "code": "twilio_rejected", "twilio_code": 21211})
    assert isinstance(e, otpd.ProviderRejected)
    assert e.twilio_code == 21211


def test_an_answer_that_is_not_otpds_json() -> None:
    e = raised(503, "busy")
    assert type(e) is otpd.ServiceUnavailable
    assert (e.code, e.message) == ("http_503", "Service Unavailable")


@pytest.mark.parametrize(
    "body",
    [
        {"otp_id": "7", "expires_at": "2030-01-02T03:04:05Z", "channel": "sms", "message": "m"},
        {"otp_id": 7, "expires_at": "soon", "channel": "sms", "message": "m"},
        {"otp_id": 7, "expires_at": "2030-01-02T03:04:05", "channel": "sms", "message": "m"},
        {"otp_id": True, "expires_at": "2030-01-02T03:04:05Z", "channel": "sms", "message": "m"},
        ["not", "an", "object"],
    ],
)
def test_a_malformed_success_is_invalid_response(body: Any) -> None:
    e = raised(200, body)
    assert type(e) is otpd.OtpdError
    assert e.code == "invalid_response"


def test_expires_at_is_an_aware_datetime() -> None:
    sent = answering(
        200,
        {"otp_id": 7, "expires_at": "2030-01-02T03:04:05Z", "channel": "sms", "message": "m"},
    ).send_otp("+34600000107", "login")
    assert sent.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert sent.expires_at.utcoffset() == timedelta(0)


def test_verify_without_verified_true_is_invalid_response() -> None:
    client = answering(200, {"otp_id": 7, "message": "m", "verified": False})
    with pytest.raises(otpd.OtpdError) as caught:
        client.verify_otp("+34600000107", "123456", "login")
    assert caught.value.code == "invalid_response"


def test_test_twilio_reads_the_sid() -> None:
    answer = {"message": "Test message sent successfully with SID: SM0123abc"}
    assert answering(200, answer).test_twilio().sid == "SM0123abc"


def test_requests_are_what_otpd_expects() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"message_id": 1, "accepted": True})

    client = otpd.Client(transport=httpx.MockTransport(handler))
    client.status_callback({"MessageSid": "SM1", "MessageStatus": "delivered"}, "c2ln")
    request = seen[0]
    assert request.url.path == "/api/v1/messaging/twilio/status-callback/"
    assert request.headers["x-twilio-signature"] == "c2ln"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.content == b"MessageSid=SM1&MessageStatus=delivered"

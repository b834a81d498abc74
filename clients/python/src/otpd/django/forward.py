"""What the three endpoints do, whatever serves them (plain Django views or DRF).

Each function takes the request's JSON object and the caller's user id, calls otpd,
and returns the status, the JSON answer and its headers. The user id is always the
authenticated user's: a ``user_id`` in the body is ignored, or one user could verify
another's code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import OtpdError, VerificationFailed
from ..models import UserId
from .conf import get_client, otpd_settings

log = logging.getLogger("otpd.django")


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def user_id_of(user: Any) -> UserId | None:
    """The authenticated user's primary key as otpd takes it (int or string)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = user.pk
    return pk if isinstance(pk, int) else str(pk)


def send_otp(data: Mapping[str, Any], user_id: UserId | None) -> Answer:
    # The fields go to otpd as the frontend sent them: otpd checks their types and
    # answers invalid_request, the same answer the frontend would get from otpd.
    try:
        sent = get_client().send_otp(
            data.get("phone_number"),  # type: ignore[arg-type]
            _purpose(data),
            user_id,
            locale=data.get("locale"),
            channel=data.get("channel"),
        )
    except OtpdError as e:
        return error_answer(e, "send-otp")
    return Answer(200, {"message": sent.message, "otp_id": sent.otp_id})


def verify_otp(data: Mapping[str, Any], user_id: UserId | None) -> Answer:
    try:
        verified = get_client().verify_otp(
            data.get("phone_number"),  # type: ignore[arg-type]
            data.get("otp_code"),  # type: ignore[arg-type]
            _purpose(data),
            user_id,
        )
    except OtpdError as e:
        return error_answer(e, "verify-otp")
    return Answer(200, {"message": verified.message, "verified": True})


def test_twilio() -> Answer:
    try:
        sent = get_client().test_twilio()
    except OtpdError as e:
        return error_answer(e, "test-twilio")
    return Answer(200, {"message": sent.message})


# Not a pytest test, whatever its name says.
test_twilio.__test__ = False  # type: ignore[attr-defined]


def _purpose(data: Mapping[str, Any]) -> Any:
    return data.get("purpose", otpd_settings().default_purpose)


# Statuses that reach the frontend as otpd gave them; anything else is the backend's
# problem (a misconfiguration or a bug here), not the frontend's.
_PASSED_ON = {400, 409, 413, 422, 429, 502, 503}


def error_answer(e: OtpdError, endpoint: str) -> Answer:
    """otpd's error as the backend's answer: the same status (507 is 503 here), the
    stable ``code``, and ``Retry-After``. 5xx answers carry no ``details``: they can
    name sockets and provider internals, which are for the log."""
    if e.status is None:
        status = 503
    elif e.status in _PASSED_ON:
        status = e.status
    elif e.status == 507:
        status = 503
    elif e.status == 403:
        # otpd refused this process (server.allowed_uids): the operator's to fix.
        status = 503
    else:
        status = 502
    # Without an answer the sentence is the client's, naming the socket: not for callers.
    message = e.message if e.status is not None else "The SMS service is unavailable"
    body: dict[str, Any] = {"error": message, "code": e.code}
    if status < 500:
        if e.details:
            body["details"] = e.details
    else:
        log.warning("otpd %s failed: %s (HTTP %s)", endpoint, e.code, e.status)
    if isinstance(e, VerificationFailed) or e.payload.get("verified") is False:
        body["verified"] = False
    for key in ("attempts_remaining", "limit"):
        if key in e.payload:
            body[key] = e.payload[key]
    headers = {}
    if e.retry_after is not None:
        headers["Retry-After"] = str(e.retry_after)
        body["retry_after"] = e.retry_after
    return Answer(status, body, headers)

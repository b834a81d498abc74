"""Every API call once, as a request and a parser of its answer.

``Client`` and ``AsyncClient`` differ only in how they send a request, so neither
builds a body or reads an answer itself: a call added here is the same in both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import urlencode

import httpx

from .errors import OtpdError, OtpdUnreachable, error_for
from .models import (
    AuditEvent,
    CallbackResult,
    Message,
    MessageSummary,
    Purged,
    QueuedMessage,
    SentOtp,
    Status,
    TestMessage,
    UserId,
    VerifiedOtp,
    items,
)

T = TypeVar("T")

API = "/api/v1/messaging"
DEFAULT_SOCKET = "/run/otpd/otpd.sock"
#: otpd's Twilio deadline (10 s) and a second to spare: a caller that hangs up first
#: leaves the code unsent.
DEFAULT_TIMEOUT = 11.0


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Mapping[str, Any]], T]
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: The answer is text (``/metrics``), not a JSON object.
    text: bool = False


def present(**fields: Any) -> dict[str, Any]:
    """The fields that were given: otpd reads an absent field as "use the default"."""
    return {k: v for k, v in fields.items() if v is not None}


def send_otp(
    phone_number: str,
    purpose: str,
    user_id: UserId | None,
    locale: str | None,
    channel: str | None,
) -> Call[SentOtp]:
    body = {"phone_number": phone_number, "purpose": purpose}
    body.update(present(user_id=user_id, locale=locale, channel=channel))
    return Call("POST", f"{API}/send-otp/", SentOtp.from_json, json=body)


def verify_otp(
    phone_number: str, otp_code: str, purpose: str, user_id: UserId | None
) -> Call[VerifiedOtp]:
    body = {"phone_number": phone_number, "otp_code": otp_code, "purpose": purpose}
    body.update(present(user_id=user_id))
    return Call("POST", f"{API}/verify-otp/", VerifiedOtp.from_json, json=body)


def test_twilio() -> Call[TestMessage]:
    return Call("GET", f"{API}/test-twilio/", TestMessage.from_json)


def status() -> Call[Status]:
    return Call("GET", f"{API}/status/", Status.from_json)


def send_sms(
    to: str,
    body: str | None,
    template: str | None,
    variables: Mapping[str, str | int] | None,
    locale: str | None,
    user_id: UserId | None,
    idempotency_key: str | None,
    send_at: datetime | str | None,
    channel: str | None,
    media_urls: Sequence[str] | None = None,
) -> Call[QueuedMessage]:
    if isinstance(send_at, datetime):
        if send_at.tzinfo is None:
            raise ValueError("send_at needs a timezone: otpd would not know which 09:00")
        send_at = send_at.isoformat()
    request: dict[str, Any] = {"to": to}
    request.update(
        present(
            body=body,
            template=template,
            variables=dict(variables) if variables is not None else None,
            locale=locale,
            user_id=user_id,
            idempotency_key=idempotency_key,
            send_at=send_at,
            channel=channel,
            media_urls=list(media_urls) if media_urls is not None else None,
        )
    )
    return Call("POST", f"{API}/send-sms/", QueuedMessage.from_json, json=request)


def message(message_id: int) -> Call[Message]:
    return Call("GET", f"{API}/messages/{int(message_id)}", Message.from_json)


def messages(since: str, limit: int) -> Call[list[MessageSummary]]:
    return Call(
        "GET",
        f"{API}/messages/",
        lambda b: [MessageSummary.from_json(m) for m in items(b, "messages")],
        params={"since": since, "limit": str(limit)},
    )


def audit(phone: str | None, since: str, limit: int) -> Call[list[AuditEvent]]:
    params = {"since": since, "limit": str(limit)}
    params.update(present(phone=phone))
    return Call(
        "GET",
        f"{API}/audit/",
        lambda b: [AuditEvent.from_json(e) for e in items(b, "events")],
        params=params,
    )


def purge() -> Call[Purged]:
    return Call("POST", f"{API}/purge/", Purged.from_json)


def status_callback(form: Mapping[str, str], signature: str | None) -> Call[CallbackResult]:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    content = urlencode(dict(form)).encode()
    return Call(
        "POST",
        f"{API}/twilio/status-callback/",
        CallbackResult.from_json,
        content=content,
        headers=headers,
    )


def healthz() -> Call[bool]:
    return Call("GET", "/healthz", lambda b: b.get("status") == "ok")


def metrics() -> Call[str]:
    return Call("GET", "/metrics", lambda b: str(b["text"]), text=True)


def unreachable(socket_path: str, e: httpx.TransportError) -> OtpdUnreachable:
    if isinstance(e, httpx.TimeoutException):
        return OtpdUnreachable(
            "otpd_timeout", f"no answer from otpd at {socket_path} in time", str(e) or None
        )
    return OtpdUnreachable(
        "otpd_unreachable", f"cannot reach otpd at {socket_path}", str(e) or None
    )


def answer(call: Call[T], response: httpx.Response) -> T:
    """The call's value from a success answer; the matching exception otherwise."""
    if call.text and response.is_success:
        return call.parse({"text": response.text})
    try:
        decoded: Any = response.json()
    except ValueError:
        decoded = None
    payload = decoded if isinstance(decoded, dict) else None
    if response.is_success:
        if payload is None:
            raise OtpdError(
                "invalid_response", "otpd answered without a JSON object", status=response.status_code
            )
        return call.parse(payload)
    raise error_for(
        response.status_code,
        payload or {},
        response.reason_phrase,
        retry_after(response.headers.get("retry-after")),
    )


def retry_after(header: str | None) -> int | None:
    """Retry-After in whole seconds; otpd sends only seconds, never 0."""
    if header is None:
        return None
    try:
        return max(1, int(header.strip()))
    except ValueError:
        return None

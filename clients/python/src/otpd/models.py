"""otpd's answers as small typed values.

Each ``from_json`` checks the types it reads, so an answer that does not match otpd's
API raises ``OtpdError("invalid_response")`` here rather than a ``KeyError`` or a
wrong type somewhere in the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, Union

from .errors import OtpdError

__all__ = [
    "UserId",
    "SentOtp",
    "VerifiedOtp",
    "TestMessage",
    "Status",
    "QueuedMessage",
    "MessageSummary",
    "StatusChange",
    "Message",
    "Peer",
    "AuditEvent",
    "Purged",
    "CallbackResult",
]

#: A backend's user id: Django's integer primary key, or any string id.
UserId = Union[str, int]

T = TypeVar("T")


def _bad(key: str, value: Any, wanted: str) -> OtpdError:
    return OtpdError(
        "invalid_response", f"otpd's answer has {key}={value!r}, not {wanted}", status=200
    )


def _get(body: Mapping[str, Any], key: str, kind: type[T], optional: bool = False) -> T:
    value = body.get(key)
    if value is None and optional:
        return value  # type: ignore[return-value]
    # bool is an int in Python; JSON's true is never a count or an id.
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise _bad(key, value, kind.__name__)


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    return _get(body, key, int, optional=True)


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    return _get(body, key, str, optional=True)


def parse_time(value: Any, key: str = "time") -> datetime:
    """otpd's RFC 3339 times ("2030-01-02T03:04:05Z") as aware datetimes."""
    if not isinstance(value, str):
        raise _bad(key, value, "an RFC 3339 time")
    # Python 3.10's fromisoformat takes no "Z".
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(key, value, "an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise _bad(key, value, "a time with an offset")
    return parsed


def _time(body: Mapping[str, Any], key: str) -> datetime:
    return parse_time(body.get(key), key)


def _opt_time(body: Mapping[str, Any], key: str) -> datetime | None:
    return None if body.get(key) is None else _time(body, key)


def _counts(body: Mapping[str, Any], key: str) -> dict[str, int]:
    value = _get(body, key, dict)
    return {str(k): _get(value, str(k), int) for k in value}


@dataclass(frozen=True)
class SentOtp:
    """A code otpd has sent."""

    otp_id: int
    expires_at: datetime
    channel: str
    message: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SentOtp:
        return cls(
            otp_id=_get(body, "otp_id", int),
            expires_at=_time(body, "expires_at"),
            channel=_get(body, "channel", str),
            message=_get(body, "message", str),
        )


@dataclass(frozen=True)
class VerifiedOtp:
    """A code that verified (a failed one raises ``VerificationFailed``)."""

    otp_id: int
    message: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> VerifiedOtp:
        if body.get("verified") is not True:
            raise _bad("verified", body.get("verified"), "true")
        return cls(otp_id=_get(body, "otp_id", int), message=_get(body, "message", str))


@dataclass(frozen=True)
class TestMessage:
    """The test message sent to ``twilio.test_phone_number``."""

    __test__ = False  # not a pytest class

    message: str
    sid: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> TestMessage:
        message = _get(body, "message", str)
        _, found, sid = message.partition("SID: ")
        if not found or not sid.strip():
            raise _bad("message", message, "a sentence with the SID")
        return cls(message=message, sid=sid.strip())


@dataclass(frozen=True)
class Status:
    """The daemon's status: provider, configuration summary, codes and messages by state."""

    enabled: bool
    provider: str | None
    #: Whether the provider answered the last message; None before the first one (and
    #: with no provider).
    provider_reachable: bool | None
    provider_circuit: str | None
    #: "accepted", "rejected" or "unknown": whether Twilio accepts the credentials, from a
    #: cached free check; None without credentials (development outbox, no provider).
    provider_credentials: str | None
    dev_mode: bool
    test_phone_configured: bool
    purposes: tuple[str, ...]
    otp_length: int
    otp_ttl_seconds: int
    limiter_keys: int
    codes: Mapping[str, int]
    messages: Mapping[str, int]
    version: str

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Status:
        purposes = _get(body, "purposes", list)
        return cls(
            enabled=_get(body, "enabled", bool),
            provider=_opt_str(body, "provider"),
            provider_reachable=_get(body, "provider_reachable", bool, optional=True),
            provider_circuit=_opt_str(body, "provider_circuit"),
            provider_credentials=_opt_str(body, "provider_credentials"),
            dev_mode=_get(body, "dev_mode", bool),
            test_phone_configured=_get(body, "test_phone_configured", bool),
            purposes=tuple(_get({"purpose": p}, "purpose", str) for p in purposes),
            otp_length=_get(body, "otp_length", int),
            otp_ttl_seconds=_get(body, "otp_ttl_seconds", int),
            limiter_keys=_get(body, "limiter_keys", int),
            codes=_counts(body, "codes"),
            messages=_counts(body, "messages"),
            version=_get(body, "version", str),
        )


@dataclass(frozen=True)
class QueuedMessage:
    """A plain message committed to otpd's outbox (or found by its idempotency key)."""

    message_id: int
    status: str
    segments: int
    encoding: str
    send_at: datetime
    replayed: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> QueuedMessage:
        return cls(
            message_id=_get(body, "message_id", int),
            status=_get(body, "status", str),
            segments=_get(body, "segments", int),
            encoding=_get(body, "encoding", str),
            send_at=_time(body, "send_at"),
            replayed=_get(body, "replayed", bool),
        )


@dataclass(frozen=True)
class MessageSummary:
    """One row of ``messages()``: what was sent, through which provider, how it went."""

    id: int
    otp_id: int | None
    created_at: datetime
    to: str
    channel: str
    provider: str
    sid: str | None
    status: str
    error_code: int | None
    error_message: str | None
    attempts: int | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> MessageSummary:
        return cls(
            id=_get(body, "id", int),
            otp_id=_opt_int(body, "otp_id"),
            created_at=_time(body, "created_at"),
            to=_get(body, "to", str),
            channel=_get(body, "channel", str),
            provider=_get(body, "provider", str),
            sid=_opt_str(body, "sid"),
            status=_get(body, "status", str),
            error_code=_opt_int(body, "error_code"),
            error_message=_opt_str(body, "error_message"),
            attempts=_opt_int(body, "attempts"),
        )


@dataclass(frozen=True)
class StatusChange:
    """One step of a message's history (queued, sending, sent, delivered, ...)."""

    at: datetime
    status: str
    error_code: int | None
    detail: str | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> StatusChange:
        return cls(
            at=_time(body, "at"),
            status=_get(body, "status", str),
            error_code=_opt_int(body, "error_code"),
            detail=_opt_str(body, "detail"),
        )


@dataclass(frozen=True)
class Message:
    """One message (a plain SMS or an OTP's) with its status history."""

    id: int
    kind: str
    channel: str
    otp_id: int | None
    to: str
    user_id: str | None
    status: str
    sid: str | None
    segments: int | None
    created_at: datetime
    send_at: datetime | None
    error_code: int | None
    error_message: str | None
    history: tuple[StatusChange, ...]
    media_urls: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Message:
        return cls(
            id=_get(body, "id", int),
            kind=_get(body, "kind", str),
            channel=_get(body, "channel", str),
            otp_id=_opt_int(body, "otp_id"),
            to=_get(body, "to", str),
            user_id=_opt_str(body, "user_id"),
            status=_get(body, "status", str),
            sid=_opt_str(body, "sid"),
            segments=_opt_int(body, "segments"),
            created_at=_time(body, "created_at"),
            send_at=_opt_time(body, "send_at"),
            error_code=_opt_int(body, "error_code"),
            error_message=_opt_str(body, "error_message"),
            history=tuple(
                StatusChange.from_json(_get({"h": h}, "h", dict))
                for h in _get(body, "history", list)
            ),
            media_urls=tuple(
                _get({"u": u}, "u", str) for u in (_get(body, "media_urls", list, optional=True) or [])
            ),
        )


@dataclass(frozen=True)
class Peer:
    """The process that made a request, from the socket's peer credentials."""

    uid: int
    gid: int
    pid: int | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Peer:
        return cls(uid=_get(body, "uid", int), gid=_get(body, "gid", int), pid=_opt_int(body, "pid"))


@dataclass(frozen=True)
class AuditEvent:
    """One event of the audit trail: generated, sent, verified, failed_attempt, ..."""

    id: int
    at: datetime
    otp_id: int | None
    event: str
    phone: str | None
    purpose: str | None
    user_id: str | None
    detail: str | None
    peer: Peer | None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AuditEvent:
        peer = body.get("peer")
        return cls(
            id=_get(body, "id", int),
            at=_time(body, "at"),
            otp_id=_opt_int(body, "otp_id"),
            event=_get(body, "event", str),
            phone=_opt_str(body, "phone"),
            purpose=_opt_str(body, "purpose"),
            user_id=_opt_str(body, "user_id"),
            detail=_opt_str(body, "detail"),
            peer=None if peer is None else Peer.from_json(_get(body, "peer", dict)),
        )


@dataclass(frozen=True)
class Purged:
    """Rows the retention job deleted."""

    codes: int
    messages: int
    audit: int

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Purged:
        deleted = _get(body, "deleted", dict)
        return cls(
            codes=_get(deleted, "codes", int),
            messages=_get(deleted, "messages", int),
            audit=_get(deleted, "audit", int),
        )


@dataclass(frozen=True)
class CallbackResult:
    """otpd accepted a forwarded Twilio status callback for this message."""

    message_id: int
    accepted: bool

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CallbackResult:
        return cls(message_id=_get(body, "message_id", int), accepted=_get(body, "accepted", bool))


def items(body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """The list of objects under ``key`` (``messages``, ``events``)."""
    rows = _get(body, key, list)
    return [_get({key: row}, key, dict) for row in rows]

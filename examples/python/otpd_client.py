"""A small client for otpd's API v1 over its Unix socket (HTTP/1.1 + JSON).

Every error answer becomes an exception that carries otpd's stable ``code``; the
class is chosen by HTTP status, so codes added to otpd later still land in the
right place::

    OtpdError                   any error; .code .message .details .status .payload
    ├── InvalidRequest          400 input errors (invalid_phone_number, invalid_purpose, ...),
    │                           422 country_not_allowed (the cost guard refuses the destination)
    ├── VerificationFailed      400 with "verified": false; .attempts_remaining
    ├── RateLimited             429; .retry_after (seconds), .limit (None for too_many_attempts)
    ├── ProviderRejected        502 twilio_rejected; .twilio_code
    └── ServiceUnavailable      503 (provider or channel down or not configured, store, outbox)
        └── OtpdUnreachable     no answer at all: daemon down, socket missing, timeout

Other statuses (404, 405, 408, 413: bugs in the caller) raise ``OtpdError`` itself.

A Django REST Framework view that forwards the request to otpd::

    from django.conf import settings
    from rest_framework import status
    from rest_framework.decorators import api_view, permission_classes
    from rest_framework.permissions import AllowAny
    from rest_framework.response import Response

    from otpd_client import (
        InvalidRequest, OtpdClient, OtpdError, ProviderRejected, RateLimited,
        ServiceUnavailable, VerificationFailed,
    )

    # One client per process: it keeps its connection to the socket open.
    otpd = OtpdClient(getattr(settings, "OTPD_SOCKET", "/run/otpd/otpd.sock"))

    def otpd_error_response(e: OtpdError) -> Response:
        body = {"error": e.message, "code": e.code, "details": e.details}
        if isinstance(e, VerificationFailed):
            body.update(verified=False, attempts_remaining=e.attempts_remaining)
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(e, InvalidRequest):
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(e, RateLimited):
            return Response(body, status=status.HTTP_429_TOO_MANY_REQUESTS,
                            headers={"Retry-After": str(e.retry_after)})
        if isinstance(e, ProviderRejected):
            return Response(body, status=status.HTTP_502_BAD_GATEWAY)
        if isinstance(e, ServiceUnavailable):  # includes OtpdUnreachable
            return Response({"error": "SMS service unavailable", "code": e.code},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"error": "Internal error", "code": e.code},
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)

    @api_view(["POST"])
    @permission_classes([AllowAny])
    def send_otp(request):
        user_id = request.user.pk if request.user.is_authenticated else None
        try:
            sent = otpd.send_otp(request.data.get("phone_number", ""),
                                 request.data.get("purpose", ""), user_id=user_id)
        except OtpdError as e:
            return otpd_error_response(e)
        return Response({"message": "OTP sent successfully", "otp_id": sent.otp_id,
                         "expires_at": sent.expires_at.isoformat()})

Requires httpx (see requirements.txt); Python 3.8 or later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Union

import httpx

__all__ = [
    "OtpdClient",
    "SentOtp",
    "QueuedMessage",
    "OtpdError",
    "InvalidRequest",
    "VerificationFailed",
    "RateLimited",
    "ProviderRejected",
    "ServiceUnavailable",
    "OtpdUnreachable",
]

DEFAULT_SOCKET = "/run/otpd/otpd.sock"
_API = "/api/v1/messaging"

UserId = Union[str, int]


@dataclass(frozen=True)
class SentOtp:
    """A code otpd has sent: its id and when it expires (timezone-aware)."""

    otp_id: int
    expires_at: datetime
    channel: str = "sms"


@dataclass(frozen=True)
class QueuedMessage:
    """A message otpd has committed to its outbox (or found by its idempotency key)."""

    message_id: int
    status: str
    segments: int
    encoding: str
    replayed: bool


class OtpdError(Exception):
    """An error answer from otpd, or no usable answer at all."""

    def __init__(
        self,
        code: str,
        message: str,
        details: str | None = None,
        status: int | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" ({details})" if details else ""))
        self.code = code
        self.message = message
        self.details = details
        self.status = status
        self.payload: dict[str, Any] = payload if payload is not None else {}


class InvalidRequest(OtpdError):
    """400: the input was rejected (bad phone number, purpose, user id, code format...)."""


class VerificationFailed(OtpdError):
    """400 with ``verified: false``: wrong, expired, used or unknown code."""

    @property
    def attempts_remaining(self) -> int | None:
        value = self.payload.get("attempts_remaining")
        return value if isinstance(value, int) else None


class RateLimited(OtpdError):
    """429: a rate limit, or too many wrong attempts; retry after ``retry_after`` s."""

    def __init__(self, *args: Any, retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after

    @property
    def limit(self) -> str | None:
        value = self.payload.get("limit")
        return value if isinstance(value, str) else None


class ProviderRejected(OtpdError):
    """502: Twilio refused the message; ``twilio_code`` is Twilio's error code."""

    @property
    def twilio_code(self) -> int | None:
        value = self.payload.get("twilio_code")
        return value if isinstance(value, int) else None


class ServiceUnavailable(OtpdError):
    """503: otpd cannot send or store right now (provider, database, outbox)."""


class OtpdUnreachable(ServiceUnavailable):
    """No HTTP answer: the socket is missing, refused, closed early or timed out."""


class OtpdClient:
    """A client for one otpd socket; thread-safe, reuse one per process."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 15.0) -> None:
        self.socket_path = socket_path
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=socket_path),
            base_url="http://otpd",
            timeout=timeout,
            headers={"Accept": "application/json"},
        )

    def send_otp(
        self,
        phone_number: str,
        purpose: str,
        user_id: UserId | None = None,
        *,
        locale: str | None = None,
        channel: str | None = None,
    ) -> SentOtp:
        """Sends a new code to ``phone_number`` for ``purpose``.

        ``channel`` is "sms" or "whatsapp"; without it otpd tries its configured order.
        """
        request = _body(phone_number, purpose, user_id)
        request.update(_present(locale=locale, channel=channel))
        body = self._post("send-otp", request)
        return SentOtp(
            otp_id=_int(body, "otp_id"),
            expires_at=_parse_time(body.get("expires_at")),
            channel=str(body.get("channel", "sms")),
        )

    def send_sms(
        self,
        to: str,
        body: str | None = None,
        *,
        template: str | None = None,
        variables: dict[str, str | int] | None = None,
        locale: str | None = None,
        user_id: UserId | None = None,
        idempotency_key: str | None = None,
        send_at: datetime | None = None,
        channel: str | None = None,
    ) -> QueuedMessage:
        """Queues a plain message: a ``body``, or a configured ``template`` with
        ``variables``. Answered once it is committed; otpd sends it (at ``send_at``)."""
        request: dict[str, Any] = {"to": to}
        request.update(
            _present(
                body=body,
                template=template,
                variables=variables,
                locale=locale,
                user_id=user_id,
                idempotency_key=idempotency_key,
                send_at=send_at.isoformat() if send_at is not None else None,
                channel=channel,
            )
        )
        answer = self._post("send-sms", request)
        return QueuedMessage(
            message_id=_int(answer, "message_id"),
            status=str(answer.get("status", "")),
            segments=_int(answer, "segments"),
            encoding=str(answer.get("encoding", "")),
            replayed=answer.get("replayed") is True,
        )

    def message(self, message_id: int) -> dict[str, Any]:
        """One message (SMS or OTP) with its status ``history``."""
        return self._request("GET", f"{_API}/messages/{int(message_id)}")

    def verify_otp(
        self,
        phone_number: str,
        otp_code: str,
        purpose: str,
        user_id: UserId | None = None,
    ) -> int:
        """Checks ``otp_code``; returns the code's otp_id, or raises VerificationFailed."""
        request = _body(phone_number, purpose, user_id)
        request["otp_code"] = otp_code
        body = self._post("verify-otp", request)
        if body.get("verified") is not True:
            raise OtpdError(
                "invalid_response",
                "verify-otp answered without verified: true",
                status=200,
                payload=body,
            )
        return _int(body, "otp_id")

    def status(self) -> dict[str, Any]:
        """The daemon's status document (``enabled``, ``provider``, counters...)."""
        return self._request("GET", f"{_API}/status/")

    def test_twilio(self) -> str:
        """Sends a test SMS to the configured test number; returns its message SID."""
        message = str(self._request("GET", f"{_API}/test-twilio/").get("message", ""))
        match = re.search(r"SID:\s*(\S+)", message)
        if not match:
            raise OtpdError("invalid_response", f"no SID in {message!r}", status=200)
        return match.group(1)

    def healthy(self) -> bool:
        """Whether otpd answers and its store works; never raises."""
        try:
            return self._request("GET", "/healthz").get("status") == "ok"
        except OtpdError:
            return False

    def close(self) -> None:
        """Closes the connection to the socket."""
        self._http.close()

    def __enter__(self) -> OtpdClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._request("POST", f"{_API}/{endpoint}/", body)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException as e:
            raise OtpdUnreachable(
                "otpd_timeout", f"no answer from otpd at {self.socket_path}", str(e)
            ) from e
        except httpx.TransportError as e:
            raise OtpdUnreachable(
                "otpd_unreachable", f"cannot reach otpd at {self.socket_path}", str(e)
            ) from e
        try:
            decoded: Any = response.json()
        except ValueError:
            decoded = None
        payload: dict[str, Any] | None = decoded if isinstance(decoded, dict) else None
        if response.is_success:
            if payload is None:
                raise OtpdError(
                    "invalid_response",
                    "otpd answered without a JSON object",
                    status=response.status_code,
                )
            return payload
        raise _error(response, payload or {})


def _body(phone_number: str, purpose: str, user_id: UserId | None) -> dict[str, Any]:
    body: dict[str, Any] = {"phone_number": phone_number, "purpose": purpose}
    if user_id is not None:
        body["user_id"] = user_id
    return body


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that were given: otpd reads an absent field as "use the default"."""
    return {k: v for k, v in fields.items() if v is not None}


def _error(response: httpx.Response, payload: dict[str, Any]) -> OtpdError:
    """The exception for an error answer, chosen by status (and ``verified``)."""
    status = response.status_code
    code = payload.get("code")
    code = code if isinstance(code, str) and code else f"http_{status}"
    message = payload.get("error")
    message = message if isinstance(message, str) and message else response.reason_phrase
    details = payload.get("details")
    details = details if isinstance(details, str) else None
    args = (code, message, details, status, payload)
    if status == 400:
        if payload.get("verified") is False:
            return VerificationFailed(*args)
        return InvalidRequest(*args)
    if status == 422:
        return InvalidRequest(*args)
    if status == 429:
        return RateLimited(*args, retry_after=_retry_after(response))
    if status == 502:
        return ProviderRejected(*args)
    if status == 503:
        return ServiceUnavailable(*args)
    return OtpdError(*args)


def _retry_after(response: httpx.Response) -> int:
    """Retry-After in whole seconds (otpd never sends 0); 1 if absent or unreadable."""
    try:
        return max(1, int(response.headers.get("retry-after", "1").strip()))
    except ValueError:
        return 1


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OtpdError(
            "invalid_response", f"{key} is not an integer: {value!r}", status=200, payload=body
        )
    return value


def _parse_time(value: Any) -> datetime:
    """RFC 3339 ("2025-01-02T03:04:05Z", optional fraction) to an aware datetime."""
    if not isinstance(value, str):
        raise OtpdError("invalid_response", f"expires_at is not a string: {value!r}", status=200)
    # datetime.fromisoformat before 3.11 takes neither "Z" nor more than 6 fraction digits.
    text = re.sub(r"[zZ]$", "+00:00", value.strip())
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    text = re.sub(r"\.(\d{1,5})(?=\D|$)", lambda m: "." + m.group(1).ljust(6, "0"), text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as e:
        raise OtpdError(
            "invalid_response", f"expires_at is not RFC 3339: {value!r}", status=200
        ) from e
    if parsed.tzinfo is None:
        raise OtpdError("invalid_response", f"expires_at has no offset: {value!r}", status=200)
    return parsed

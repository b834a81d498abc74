"""otpd's error answers as exceptions.

Every error answer carries a stable ``code``. The codes a caller is likely to handle on
their own have their own class; every other code still lands in the class of its HTTP
status, so a code otpd adds later is caught by the same ``except`` as its siblings::

    OtpdError                     .code .message .details .status .payload .retry_after
    ├── InvalidRequest            400 bad input, 422 country_not_allowed
    │   ├── InvalidPhoneNumber
    │   ├── InvalidPurpose
    │   └── CountryNotAllowed
    ├── VerificationFailed        400 with "verified": false; .attempts_remaining
    │   ├── InvalidOtp  OtpExpired  OtpAlreadyUsed  OtpNotFound
    ├── Forbidden                 403 forbidden (the caller's uid/gid), invalid_signature
    ├── MessageNotFound           404 message_not_found
    ├── IdempotencyKeyReused      409; .message_id
    ├── RateLimited               429; .retry_after (always set), .limit
    │   └── TooManyAttempts       the code is dead: send a new one
    ├── ProviderRejected          502 twilio_rejected; .twilio_code
    └── ServiceUnavailable        503 and 507: provider, store, outbox, daily cap
        ├── ProviderNotConfigured  TestPhoneNotConfigured  TwilioUnavailable
        ├── TwilioCircuitOpen  DailyCapReached  StoreFull
        └── OtpdUnreachable       no answer at all: socket missing, refused, timeout

Other statuses (404 ``not_found``, 405, 408, 413: a bug in the caller) raise
``OtpdError`` itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "OtpdError",
    "InvalidRequest",
    "InvalidPhoneNumber",
    "InvalidPurpose",
    "CountryNotAllowed",
    "VerificationFailed",
    "InvalidOtp",
    "OtpExpired",
    "OtpAlreadyUsed",
    "OtpNotFound",
    "Forbidden",
    "MessageNotFound",
    "IdempotencyKeyReused",
    "RateLimited",
    "TooManyAttempts",
    "ProviderRejected",
    "ServiceUnavailable",
    "ProviderNotConfigured",
    "TestPhoneNotConfigured",
    "TwilioUnavailable",
    "TwilioCircuitOpen",
    "DailyCapReached",
    "StoreFull",
    "OtpdUnreachable",
    "error_for",
]


class OtpdError(Exception):
    """An error answer from otpd, or no usable answer at all."""

    #: The stable codes this class stands for (empty: chosen by status only).
    codes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        code: str,
        message: str,
        details: str | None = None,
        status: int | None = None,
        payload: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" ({details})" if details else ""))
        self.code = code
        self.message = message
        self.details = details
        #: The HTTP status; ``None`` when otpd did not answer.
        self.status = status
        #: The whole JSON answer.
        self.payload: dict[str, Any] = payload if payload is not None else {}
        #: Seconds from the ``Retry-After`` header, when otpd sent one.
        self.retry_after = retry_after

    def _int(self, key: str) -> int | None:
        value = self.payload.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def _str(self, key: str) -> str | None:
        value = self.payload.get(key)
        return value if isinstance(value, str) else None


class InvalidRequest(OtpdError):
    """400 (or 422): otpd refused the input; sending it again will not help."""


class InvalidPhoneNumber(InvalidRequest):
    codes = ("invalid_phone_number",)


class InvalidPurpose(InvalidRequest):
    codes = ("invalid_purpose",)


class CountryNotAllowed(InvalidRequest):
    """422: the cost guard does not send to this destination's country."""

    codes = ("country_not_allowed",)

    @property
    def country(self) -> str | None:
        return self._str("country")


class VerificationFailed(OtpdError):
    """400 with ``verified: false``: a wrong, expired, used or unknown code."""

    @property
    def attempts_remaining(self) -> int | None:
        """Wrong attempts the code still takes (``invalid_otp`` only)."""
        return self._int("attempts_remaining")


class InvalidOtp(VerificationFailed):
    codes = ("invalid_otp",)


class OtpExpired(VerificationFailed):
    codes = ("otp_expired",)


class OtpAlreadyUsed(VerificationFailed):
    codes = ("otp_already_used",)


class OtpNotFound(VerificationFailed):
    codes = ("otp_not_found",)


class Forbidden(OtpdError):
    """403: this process may not use otpd (``server.allowed_uids``), or a status
    callback's signature is wrong (``invalid_signature``)."""

    codes = ("forbidden", "invalid_signature")


class MessageNotFound(OtpdError):
    codes = ("message_not_found",)


class IdempotencyKeyReused(OtpdError):
    """409: the key was used within 24 h for a different message."""

    codes = ("idempotency_key_reused",)

    @property
    def message_id(self) -> int | None:
        """The message the key was first used for."""
        return self._int("message_id")


class RateLimited(OtpdError):
    """429: a rate limit or the cost guard; ``retry_after`` says when (seconds)."""

    retry_after: int

    def __init__(
        self,
        code: str,
        message: str,
        details: str | None = None,
        status: int | None = None,
        payload: dict[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        # otpd always sends Retry-After with a 429; 1 s stands in if a proxy dropped it.
        super().__init__(code, message, details, status, payload, retry_after or 1)

    @property
    def limit(self) -> str | None:
        """The limit's name (``send_per_phone``, ...), for ``rate_limited``."""
        return self._str("limit")


class TooManyAttempts(RateLimited):
    """The code took ``otp.max_attempts`` wrong attempts and is dead."""

    codes = ("too_many_attempts",)

    @property
    def attempts_remaining(self) -> int:
        return 0


class ProviderRejected(OtpdError):
    """502: Twilio refused the message; ``twilio_code`` is Twilio's error code."""

    codes = ("twilio_rejected",)

    @property
    def twilio_code(self) -> int | None:
        return self._int("twilio_code")


class ServiceUnavailable(OtpdError):
    """503 (or 507): otpd cannot send or store right now."""


class ProviderNotConfigured(ServiceUnavailable):
    codes = ("provider_not_configured",)


class TestPhoneNotConfigured(ServiceUnavailable):
    codes = ("test_phone_not_configured",)
    # Not a pytest test class, whatever its name says.
    __test__ = False


class TwilioUnavailable(ServiceUnavailable):
    codes = ("twilio_unavailable",)


class TwilioCircuitOpen(ServiceUnavailable):
    codes = ("twilio_circuit_open",)


class DailyCapReached(ServiceUnavailable):
    codes = ("daily_cap_reached",)


class StoreFull(ServiceUnavailable):
    """507: the disk or ``store.max_size`` is full."""

    codes = ("store_full",)


class OtpdUnreachable(ServiceUnavailable):
    """No HTTP answer: the socket is missing or refused, the connection broke, or
    otpd did not answer in time (``otpd_timeout``: a code may have been sent)."""

    codes = ("otpd_unreachable", "otpd_timeout")


def _classes(base: type[OtpdError]) -> list[type[OtpdError]]:
    found = [base]
    for sub in base.__subclasses__():
        found.extend(_classes(sub))
    return found


_BY_CODE: dict[str, type[OtpdError]] = {
    code: cls for cls in _classes(OtpdError) for code in cls.codes
}


def error_for(
    status: int, payload: dict[str, Any], reason: str = "", retry_after: int | None = None
) -> OtpdError:
    """The exception for an error answer: by its code if it has its own class, else by
    its status (and ``verified: false``)."""
    code = payload.get("code")
    code = code if isinstance(code, str) and code else f"http_{status}"
    message = payload.get("error")
    message = message if isinstance(message, str) and message else (reason or code)
    details = payload.get("details")
    details = details if isinstance(details, str) else None
    cls = _BY_CODE.get(code)
    if cls is None or cls is OtpdUnreachable:
        if status in (400, 422):
            cls = VerificationFailed if payload.get("verified") is False else InvalidRequest
        elif status == 429:
            cls = RateLimited
        elif status == 502:
            cls = ProviderRejected
        elif status in (503, 507):
            cls = ServiceUnavailable
        else:
            cls = OtpdError
    return cls(code, message, details, status, payload, retry_after=retry_after)

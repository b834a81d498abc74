"""otpd: a client for the otpd daemon's API v1 over its Unix socket.

::

    import otpd

    client = otpd.Client("/run/otpd/otpd.sock")     # one per process
    sent = client.send_otp("+34600111222", "registration", user_id=42)
    try:
        client.verify_otp("+34600111222", "123456", "registration", user_id=42)
    except otpd.VerificationFailed as e:
        print(e.code, e.attempts_remaining)

``otpd.django`` is the Django app (``pip install otpd[django]``); ``otpd.testing`` has
a development-mode daemon, its outbox reader and a fake client for tests.
"""

from .client import DEFAULT_SOCKET, DEFAULT_TIMEOUT, AsyncClient, Client
from .errors import *  # noqa: F403 (the list is errors.__all__)
from .errors import __all__ as _errors
from .models import (
    AuditEvent,
    CallbackResult,
    Message,
    MessageSummary,
    Peer,
    Purged,
    QueuedMessage,
    SentOtp,
    Status,
    StatusChange,
    TestMessage,
    UserId,
    VerifiedOtp,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "AsyncClient",
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "AuditEvent",
    "CallbackResult",
    "Message",
    "MessageSummary",
    "Peer",
    "Purged",
    "QueuedMessage",
    "SentOtp",
    "Status",
    "StatusChange",
    "TestMessage",
    "UserId",
    "VerifiedOtp",
    *_errors,
]

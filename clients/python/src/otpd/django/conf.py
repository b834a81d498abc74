"""``settings.OTPD`` read in one place, and the process's one client built from it."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from ..client import DEFAULT_SOCKET, DEFAULT_TIMEOUT, Client

KEYS = ("SOCKET", "TIMEOUT", "CLIENT_CLASS", "ALLOW_ANONYMOUS", "DEFAULT_PURPOSE")


@dataclass(frozen=True)
class OtpdSettings:
    #: The daemon's socket.
    socket: str = DEFAULT_SOCKET
    #: Seconds per request; keep it above otpd's twilio.send_deadline.
    timeout: float = DEFAULT_TIMEOUT
    #: A dotted path to another client class, e.g. "otpd.testing.FakeClient" in tests.
    client_class: str | None = None
    #: Whether anonymous callers may send and verify codes (without a user_id).
    allow_anonymous: bool = False
    #: The purpose for requests that name none; None: the request must name one.
    default_purpose: str | None = None


def otpd_settings() -> OtpdSettings:
    raw: Any = getattr(settings, "OTPD", {})
    if not isinstance(raw, dict):
        raise TypeError("settings.OTPD must be a dict")
    unknown = set(raw) - set(KEYS)
    if unknown:
        raise ValueError(f"settings.OTPD has unknown keys: {', '.join(sorted(unknown))}")
    defaults = OtpdSettings()
    return OtpdSettings(
        socket=str(raw.get("SOCKET", defaults.socket)),
        timeout=float(raw.get("TIMEOUT", defaults.timeout)),
        client_class=raw.get("CLIENT_CLASS", defaults.client_class),
        allow_anonymous=bool(raw.get("ALLOW_ANONYMOUS", defaults.allow_anonymous)),
        default_purpose=raw.get("DEFAULT_PURPOSE", defaults.default_purpose),
    )


_lock = threading.Lock()
_client: Any = None


def get_client() -> Client:
    """The process's client: one connection pool shared by every request thread."""
    global _client
    with _lock:
        if _client is None:
            conf = otpd_settings()
            if conf.client_class:
                _client = import_string(conf.client_class)()
            else:
                _client = Client(conf.socket, timeout=conf.timeout)
        return _client  # type: ignore[no-any-return]


def reset_client() -> None:
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


@receiver(setting_changed)
def _settings_changed(setting: str, **kwargs: Any) -> None:
    # override_settings(OTPD=...) in tests must reach the next request.
    if setting == "OTPD":
        reset_client()

"""System checks: ``settings.OTPD`` is well formed (always), and otpd answers on its
socket (``manage.py check --deploy``: a development machine need not run otpd)."""

from __future__ import annotations

from typing import Any

from django.core import checks

from ..client import Client
from ..errors import OtpdError, OtpdUnreachable
from .conf import otpd_settings


@checks.register("otpd")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        conf = otpd_settings()
    except (TypeError, ValueError) as e:
        return [checks.Error(f"settings.OTPD is invalid: {e}", id="otpd.E001")]
    if conf.timeout <= 0:
        return [checks.Error("settings.OTPD['TIMEOUT'] must be positive", id="otpd.E001")]
    return []


@checks.register("otpd", deploy=True)
def check_daemon(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        conf = otpd_settings()
    except (TypeError, ValueError):
        return []  # check_settings says why
    if conf.client_class:
        return [
            checks.Warning(
                f"settings.OTPD['CLIENT_CLASS'] is {conf.client_class}: no code reaches otpd",
                id="otpd.W001",
            )
        ]
    with Client(conf.socket, timeout=min(conf.timeout, 5.0)) as client:
        try:
            client.healthz()
        except OtpdUnreachable as e:
            return [
                checks.Error(
                    f"otpd does not answer on {conf.socket}: {e.details or e.message}",
                    hint="Start otpd (systemctl start otpd), or set OTPD['SOCKET'] to its "
                    "socket; this process needs write access to it (the socket's group).",
                    id="otpd.E002",
                )
            ]
        except OtpdError as e:
            return [
                checks.Error(
                    f"otpd on {conf.socket} is not healthy: {e.code} ({e.message})",
                    hint="See `otpd status` and the daemon's log (journalctl -u otpd).",
                    id="otpd.E003",
                )
            ]
        status = client.status()
    if status.dev_mode:
        return [
            checks.Warning(
                f"otpd on {conf.socket} is in development mode: codes go to its outbox "
                "file, not to phones",
                id="otpd.W002",
            )
        ]
    if not status.enabled:
        return [checks.Error(f"otpd on {conf.socket} has no SMS provider", id="otpd.E004")]
    return []

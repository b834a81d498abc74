"""otpd's Django app: the backend's ``/api/v1/messaging/`` endpoints, forwarded to otpd.

::

    INSTALLED_APPS = [..., "otpd.django"]
    OTPD = {"SOCKET": "/run/otpd/otpd.sock", "TIMEOUT": 11}
    urlpatterns = [..., path("api/v1/messaging/", include("otpd.django.urls"))]

``get_client()`` is the process's one ``otpd.Client``, built from ``settings.OTPD``.
"""

from __future__ import annotations

from .conf import get_client, otpd_settings

__all__ = ["get_client", "otpd_settings"]

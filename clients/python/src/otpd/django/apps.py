from __future__ import annotations

from django.apps import AppConfig


class OtpdConfig(AppConfig):
    name = "otpd.django"
    # "django" would collide with Django's own labels.
    label = "otpd"
    verbose_name = "otpd phone verification"

    def ready(self) -> None:
        from . import checks  # noqa: F401 (registers the checks)

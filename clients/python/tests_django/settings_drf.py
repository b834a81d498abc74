"""The app in a project with Django REST Framework and its token authentication,
under the ``Authorization: Bearer`` header the seed's frontend sends."""

from .settings_plain import *  # noqa: F403

INSTALLED_APPS = INSTALLED_APPS + ["rest_framework", "rest_framework.authtoken"]  # noqa: F405
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "otpd.django.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
}

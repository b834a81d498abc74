"""``path("api/v1/messaging/", include("otpd.django.urls"))``: send-otp/, verify-otp/
and test-twilio/. With ``rest_framework`` in ``INSTALLED_APPS`` they are DRF views
(the project's authentication classes apply), else plain Django views."""

from __future__ import annotations

from django.conf import settings
from django.urls import path

app_name = "otpd"

if "rest_framework" in settings.INSTALLED_APPS:
    from .drf import SendOtpView, TestTwilioView, VerifyOtpView

    urlpatterns = [
        path("send-otp/", SendOtpView.as_view(), name="send-otp"),
        path("verify-otp/", VerifyOtpView.as_view(), name="verify-otp"),
        path("test-twilio/", TestTwilioView.as_view(), name="test-twilio"),
    ]
else:
    from . import views

    urlpatterns = [
        path("send-otp/", views.send_otp, name="send-otp"),
        path("verify-otp/", views.verify_otp, name="verify-otp"),
        path("test-twilio/", views.test_twilio, name="test-twilio"),
    ]

from django.urls import include, path

from verification.views import phone_page

urlpatterns = [
    path("", phone_page, name="phone"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/messaging/", include("otpd.django.urls")),
]

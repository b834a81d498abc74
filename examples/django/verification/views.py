from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from rest_framework.authtoken.models import Token


@login_required
def phone_page(request: HttpRequest) -> HttpResponse:
    """The seed's page: it calls the API with the user's token, as a single-page
    frontend would (here the token comes with the page instead of a login API)."""
    token, _ = Token.objects.get_or_create(user=request.user)
    return render(request, "verification/phone.html", {"token": token.key})

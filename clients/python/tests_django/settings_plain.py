"""The app in a project with Django's own authentication only (sessions)."""

SECRET_KEY = "tests-only"
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "otpd.django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "tests_django.urls"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The tests point this at their own daemon.
OTPD = {"SOCKET": "/nonexistent/otpd.sock", "TIMEOUT": 10}
# Tests create users: the default hasher's 1,000,000 rounds would be most of the run.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

import hashlib
import unicodedata

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpResponse
from django.utils.decorators import method_decorator
from django.views import View


def normalise_username(raw: str) -> str:
    """The username as authentication matches it, casefolded: the key of every per-username login counter.

    The login form strips the field (CharField) and NFKC-normalises it (UsernameField, as
    AbstractBaseUser.normalize_username), so " op", "op\u3000" and a full-width "ｏp" all authenticate as "op";
    a counter keyed on the raw text gave each spelling five fresh guesses. Casefolding merges "OP" with "op"
    (two accounts to the database, one counter here): the throttle must never be weaker than authentication.
    NFKC again after casefold, as casefold can leave a string that is not NFKC-normal (Unicode's NFKC_Casefold).
    """
    once = unicodedata.normalize("NFKC", raw.strip()).strip().casefold()
    return unicodedata.normalize("NFKC", once)


@method_decorator(login_not_required, name="dispatch")
class HealthView(View):
    def get(self, request):
        return HttpResponse("ok", content_type="text/plain")


class RateLimitedLoginView(LoginView):
    """Django's login with a per (username, client IP) failure counter in the shared cache (Redis)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def _key(self, request) -> str:
        # Hashed: a username may hold spaces or control characters, which are not valid cache keys.
        username = hashlib.sha256(normalise_username(request.POST.get("username", "")).encode()).hexdigest()[:32]
        return f"login-fail:{request.META.get('REMOTE_ADDR', '?')}:{username}"

    def post(self, request, *args, **kwargs):
        key = self._key(request)
        if cache.get(key, 0) >= settings.HFT_LOGIN_MAX_ATTEMPTS:
            form = self.get_form()
            form.add_error(None, "Too many failed attempts. Try again in a few minutes.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key(self.request)
        cache.add(key, 0, settings.HFT_LOGIN_WINDOW_SECONDS)
        cache.incr(key)
        return super().form_invalid(form)

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpResponse
from django.utils.decorators import method_decorator
from django.views import View


@method_decorator(login_not_required, name="dispatch")
class HealthView(View):
    def get(self, request):
        return HttpResponse("ok", content_type="text/plain")


class RateLimitedLoginView(LoginView):
    """Django's login with a per (username, client IP) failure counter in the shared cache (Redis)."""

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def _key(self, request) -> str:
        username = request.POST.get("username", "")[:150].lower()
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

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import LoginView
from django.http import HttpResponse
from django.utils.decorators import method_decorator
from django.views import View

from apps.accounts import throttle


@method_decorator(login_not_required, name="dispatch")
class HealthView(View):
    def get(self, request):
        return HttpResponse("ok", content_type="text/plain")


class RateLimitedLoginView(LoginView):
    """Django's login; the throttle itself runs in authentication (apps.accounts.backends).

    This view only says so (429 with Retry-After) and leaves a device cookie after a successful login, which
    lets this browser past the per-IP and per-username limits next time (apps/accounts/throttle.py).
    """

    template_name = "registration/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        throttle.device_cookie_set(response, form.get_user().get_username())
        return response

    def form_invalid(self, form):
        refused = getattr(self.request, "login_refused", None)
        if refused is None:
            return super().form_invalid(form)
        form.errors.clear()
        form.add_error(None, f"Too many failed attempts. Try again in {_wait_text(refused.retry_after)}.")
        response = self.render_to_response(self.get_context_data(form=form), status=429)
        response["Retry-After"] = str(refused.retry_after)
        return response


def _wait_text(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    return f"{round(seconds / 60)} minutes"

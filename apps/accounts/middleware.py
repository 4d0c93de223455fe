from django.conf import settings
from django.utils.deprecation import MiddlewareMixin


class CSPViewUpdatesMiddleware(MiddlewareMixin):
    """Widen the Content-Security-Policy for the few views named in ``settings.HFT_CSP_VIEW_UPDATES`` only.

    Through django-csp's per-response update (what its ``csp_update`` decorator sets), so every exception to the
    policy is listed beside the policy in settings rather than spread over the views' modules. Must sit after
    CSPMiddleware in MIDDLEWARE, so that this runs on the response first. Sync and async (MiddlewareMixin).
    """

    def process_response(self, request, response):
        match = getattr(request, "resolver_match", None)
        update = settings.HFT_CSP_VIEW_UPDATES.get(match.view_name) if match is not None else None
        if update and getattr(response, "_csp_update", None) is None:
            response._csp_update = update
        return response

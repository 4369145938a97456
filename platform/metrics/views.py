"""GET /metrics: Berth's own metrics for Prometheus, behind the bearer token BERTH_METRICS_TOKEN.

Never public: without the setting the route answers 404, and a missing or wrong token 401
(compared in constant time). Outside the dashboard's sign-in: Prometheus has no session.
"""

import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from metrics.exposition import render_berth


@login_not_required
@require_GET
def metrics(request):
    token = settings.BERTH_METRICS_TOKEN
    if token is None:
        return HttpResponse("Metrics are off: set BERTH_METRICS_TOKEN.\n", status=404, content_type="text/plain")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        response = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="berth-metrics"'
        return response
    return HttpResponse(render_berth(), content_type=CONTENT_TYPE_LATEST)

from django.http import HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

# htmx stops polling an element when a poll is answered with this status (the answer is
# still swapped in, so the last reply shows the settled state).
STOP_POLLING = 286

PAGE_SIZE = 50


def render_live(request, template: str, context: dict, *, in_flight: bool) -> HttpResponse:
    """A polled partial: 200 while work is in flight, 286 once settled so htmx stops asking."""
    return render(request, template, context, status=200 if in_flight else STOP_POLLING)


def safe_next(request, fallback: str) -> str:
    """The `next` the form carried, when it points into this site; else `fallback`."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback

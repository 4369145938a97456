from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from alerts.actions import add_channel, send_test
from alerts.models import Channel, Delivery, Incident
from dashboard.forms import ChannelForm

LOG_ROWS = 50


@require_http_methods(["GET", "POST"])
def alerts(request):
    """Channels with how their last message went, open incidents, the delivery log; add a channel."""
    form = ChannelForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            channel = add_channel(form.save(commit=False), actor=request.user)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"Added channel {channel.name}. Send it a test to see that it works.")
            return redirect("dashboard:alerts")
    context = {
        "form": form,
        "channels": Channel.objects.select_related("organization"),
        "incidents": Incident.objects.filter(resolved_at__isnull=True).select_related("organization")[:LOG_ROWS],
        "deliveries": Delivery.objects.select_related("channel", "incident")[:LOG_ROWS],
    }
    return render(request, "dashboard/alerts.html", context)


@require_POST
def test_channel(request, pk):
    channel = get_object_or_404(Channel, pk=pk)
    send_test(channel, actor=request.user)
    messages.success(request, f"A test message to {channel.name} is queued; the delivery log below shows how it went.")
    return redirect("dashboard:alerts")

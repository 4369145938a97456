from django.shortcuts import render
from django.views.decorators.http import require_GET

from projects.models import Project


@require_GET
def projects(request):
    project_list = Project.objects.live().select_related("host", "template_version")
    return render(request, "dashboard/projects.html", {"projects": project_list})

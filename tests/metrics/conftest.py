from unittest import mock

import pytest

from templating.actions import sync_templates
from templating.models import TemplateVersion


@pytest.fixture
def version():
    """The postgres template, registered."""
    with mock.patch("django_q.tasks.async_task"):
        sync_templates()
    return TemplateVersion.objects.latest_of("postgres")

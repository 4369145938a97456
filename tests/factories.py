"""Small helpers that build rows for tests with sensible defaults."""

import itertools

from hosts.models import RuntimeHost
from projects.models import Project
from templating.models import TemplateVersion

_counter = itertools.count(1)


def make_host(**fields) -> RuntimeHost:
    n = next(_counter)
    values = {
        "name": f"host{n}",
        "agent_url": "http://127.0.0.1:8470",
        "agent_token": "token",
        "port_range_start": 20000,
        "port_range_end": 20999,
        "block_size": 10,
    }
    values.update(fields)
    return RuntimeHost.objects.create(**values)


def make_template_version(**fields) -> TemplateVersion:
    n = next(_counter)
    values = {"name": "postgres", "revision": n, "digest": f"{n:064x}", "manifest": "", "files": {}}
    values.update(fields)
    return TemplateVersion.objects.create(**values)


def make_project(**fields) -> Project:
    n = next(_counter)
    if "template_version" not in fields:
        fields["template_version"] = make_template_version()
    values = {"name": f"Project {n}", "postgres_major": 15, "template": fields["template_version"].name}
    values.update(fields)
    return Project.objects.create(**values)

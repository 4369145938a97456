from django.urls import path

from dashboard.views import (
    audit,
    hosts,
    operations,
    organizations,
    project,
    projects,
    rollouts,
    runtime_templates,
    tokens,
)

app_name = "dashboard"

urlpatterns = [
    path("", projects.projects, name="projects"),
    path("projects/live/", projects.project_statuses, name="project_statuses"),
    path("projects/bulk/", projects.bulk_action, name="bulk_action"),
    path("projects/new/", projects.create, name="create_project"),
    path("projects/<str:ref>/", project.project, name="project"),
    path("projects/<str:ref>/status/", project.project_status, name="project_status"),
    path("projects/<str:ref>/timeline/", project.project_timeline, name="project_timeline"),
    path("projects/<str:ref>/act/", project.project_action, name="project_action"),
    path("projects/<str:ref>/secrets/", project.reveal_secrets, name="reveal_secrets"),
    path("projects/<str:ref>/resync-plan/", project.resync_plan, name="resync_plan"),
    path("hosts/", hosts.hosts, name="hosts"),
    path("hosts/<int:pk>/agent/", hosts.host_agent, name="host_agent"),
    path("hosts/<int:pk>/edit/", hosts.edit, name="edit_host"),
    path("hosts/<int:pk>/drain/", hosts.drain, name="drain_host"),
    path("templates/", runtime_templates.templates, name="templates"),
    path("templates/<str:name>/diff/", runtime_templates.diff, name="template_diff"),
    path("templates/<str:name>/migrate/", runtime_templates.migrate, name="migrate_template"),
    path("rollouts/", rollouts.rollout_list, name="rollouts"),
    path("rollouts/<int:rollout_id>/", rollouts.rollout, name="rollout"),
    path("rollouts/<int:rollout_id>/act/", rollouts.rollout_action, name="rollout_action"),
    path("rollouts/<int:rollout_id>/projects/<str:ref>/resolve/", rollouts.rollout_resolve, name="rollout_resolve"),
    path("rollouts/<int:rollout_id>/projects/<str:ref>/diff/", rollouts.rollout_diff, name="rollout_diff"),
    path("audit/", audit.audit, name="audit"),
    path("operations/", operations.operations, name="operations"),
    path("operations/<int:pk>/cancel/", operations.cancel, name="cancel_operation"),
    path("organizations/", organizations.organizations, name="organizations"),
    path("organizations/<str:slug>/", organizations.organization, name="organization"),
    path("organizations/<str:slug>/members/<int:pk>/remove/", organizations.remove_member, name="remove_member"),
    path("tokens/", tokens.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", tokens.revoke, name="revoke_token"),
]

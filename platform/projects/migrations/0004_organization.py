import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import orgs.models


def into_default_organization(apps, schema_editor):
    """Every existing project goes into the default organization, created here when missing."""
    Organization = apps.get_model("orgs", "Organization")
    Project = apps.get_model("projects", "Project")
    if not Project.objects.exists():
        return
    org, _ = Organization.objects.get_or_create(slug=orgs.models.DEFAULT_ORGANIZATION_SLUG, defaults={"name": "Default"})
    Project.objects.filter(organization__isnull=True).update(organization=org)


class Migration(migrations.Migration):
    dependencies = [
        ("hosts", "0003_runtimehost_region"),
        ("orgs", "0001_initial"),
        ("projects", "0003_alter_project_name"),
        ("templating", "0002_template_digest_may_recur"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="project",
            name="organization",
            field=models.ForeignKey(
                null=True, on_delete=django.db.models.deletion.PROTECT, related_name="projects", to="orgs.organization"
            ),
        ),
        migrations.RunPython(into_default_organization, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="project",
            name="organization",
            field=models.ForeignKey(
                default=orgs.models.default_organization_id,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="projects",
                to="orgs.organization",
            ),
        ),
        migrations.AddField(
            model_name="project",
            name="region",
            field=models.CharField(blank=True, max_length=32),
        ),
        migrations.AddIndex(
            model_name="project",
            index=models.Index(fields=["-created_at", "-id"], name="project_newest_first"),
        ),
        migrations.AddIndex(
            model_name="project",
            index=models.Index(fields=["organization", "-created_at"], name="project_org_newest_first"),
        ),
    ]

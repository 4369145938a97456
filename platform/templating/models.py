from django.db import models


class TemplateVersionQuerySet(models.QuerySet):
    def latest_of(self, name: str):
        return self.filter(name=name).order_by("-revision").first()


class TemplateVersion(models.Model):
    """One distinct content of a template under runtimes/<name>/, kept whole so any
    older version can still be rendered and compared."""

    name = models.CharField(max_length=63)
    revision = models.PositiveIntegerField()
    # sha256 over the manifest and every file (path and bytes), in path order.
    digest = models.CharField(max_length=64)
    manifest = models.TextField(help_text="The template's manifest.toml as registered")
    # Path -> file content (text as is; binary files as "base64:" + base64).
    files = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TemplateVersionQuerySet.as_manager()

    class Meta:
        ordering = ["name", "-revision"]
        constraints = [
            models.UniqueConstraint(fields=["name", "revision"], name="template_revision_unique"),
            models.UniqueConstraint(fields=["name", "digest"], name="template_digest_unique"),
        ]

    def __str__(self):
        return f"{self.name} r{self.revision}"

import base64
import re

from django.db import models

# Stored file contents: text as is; bytes that are not UTF-8 (or text that would read as
# this prefix) as the prefix plus base64, so decoding is never ambiguous.
BINARY_PREFIX = "base64:"


def encode_file(content: bytes) -> str:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or text.startswith(BINARY_PREFIX):
        return BINARY_PREFIX + base64.b64encode(content).decode("ascii")
    return text


def decode_file(stored: str) -> bytes:
    if stored.startswith(BINARY_PREFIX):
        return base64.b64decode(stored[len(BINARY_PREFIX) :])
    return stored.encode("utf-8")


# How a template's files read a project secret in Jinja.
SECRET_USE = re.compile(r"""secrets\.(\w+)|secrets\[["'](\w+)["']\]""")


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
        ]
        # A digest may recur: a template reverted to an earlier content becomes a new
        # revision, so "latest" is always what runtimes/ holds now.
        indexes = [models.Index(fields=["name", "digest"], name="template_name_digest")]

    def __str__(self):
        return f"{self.name} r{self.revision}"

    def secret_names(self) -> list[str]:
        """The project secrets this version's files read (`secrets.NAME` or `secrets["NAME"]`)."""
        names = set()
        for stored in [self.manifest, *self.files.values()]:
            names.update(match.group(1) or match.group(2) for match in SECRET_USE.finditer(stored))
        return sorted(names)

    def file_bytes(self) -> dict[str, bytes]:
        return {path: decode_file(stored) for path, stored in self.files.items()}

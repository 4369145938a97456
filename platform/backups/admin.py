from django import forms
from django.contrib import admin
from django.db import transaction

from audit.actions import record
from audit.models import Action
from backups.models import Backup, Protection, Repository
from berth.admin import ReadOnlyAdmin


class RepositoryForm(forms.ModelForm):
    """The credentials are written, never shown: blank keeps the stored ones."""

    access_key = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))
    secret_key = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False))

    class Meta:
        model = Repository
        fields = ["name", "url", "endpoint", "region", "host"]

    def save(self, commit=True):
        repository = super().save(commit=False)
        if self.cleaned_data["access_key"] or self.cleaned_data["secret_key"]:
            repository.credentials = {
                "access_key": self.cleaned_data["access_key"],
                "secret_key": self.cleaned_data["secret_key"],
            }
        if commit:
            repository.save()
        return repository


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    """A host's own repository (its projects' backups go there instead of BERTH_BACKUP_URL's)."""

    form = RepositoryForm
    list_display = ["name", "url", "endpoint", "host"]

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            detail = {"repository": obj.name, "url": obj.url, "host": obj.host.name if obj.host else None}
            record(request.user, Action.BACKUP_REPOSITORY_CHANGE, detail=detail)


@admin.register(Protection)
class ProtectionAdmin(ReadOnlyAdmin):
    list_display = ["project", "repository", "enabled", "last_backup_at", "last_archived_wal", "failure"]
    list_filter = ["enabled", "repository"]
    search_fields = ["project__ref", "project__name"]
    list_select_related = ["project", "repository"]


@admin.register(Backup)
class BackupAdmin(ReadOnlyAdmin):
    list_display = ["project", "kind", "trigger", "status", "size_bytes", "started_at", "finished_at"]
    list_filter = ["status", "trigger", "repository"]
    search_fields = ["project__ref", "label"]
    list_select_related = ["project"]

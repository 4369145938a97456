"""BERTH_BACKUP_URL, BERTH_BACKUP_SCHEDULE and the repository they make: a bad value stops
startup naming the variable (never echoing a secret), and credentials are encrypted at rest
and never in an operation's events."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from backups.models import Repository
from berth.env import env_interval_minutes, parse_repository_url

SECRET = "s3cr3t/with+chars"


def test_an_s3_url_carries_its_endpoint_region_and_credentials():
    parsed = parse_repository_url(
        "s3://AKIA123:s3cr3t%2Fwith%2Bchars@berth-backups/fleet/a?endpoint=http://127.0.0.1:8333&region=eu-west-1"
    )
    assert (parsed.bucket, parsed.prefix, parsed.endpoint, parsed.region) == (
        "berth-backups",
        "fleet/a",
        "http://127.0.0.1:8333",
        "eu-west-1",
    )
    assert (parsed.access_key, parsed.secret_key) == ("AKIA123", SECRET)
    assert SECRET not in parsed.display and "AKIA123" not in parsed.display


def test_a_folder_url_is_an_absolute_path():
    assert parse_repository_url("file:///mnt/backups/").path == "/mnt/backups"


@pytest.mark.parametrize(
    "value, says",
    [
        ("ftp://host/x", "use s3://bucket/prefix?endpoint=... or file:///path"),
        ("file://relative/path", "a folder repository is file:///absolute/path"),
        ("s3://B_ad/x", "is not an S3 bucket name"),
        ("s3://key:secretvalue@bucket/x?endpoint=ftp://h", "endpoint must start with http"),
        ("s3://bucket/x?color=red", "unknown option color"),
        ("s3://keyonly@bucket/x", "give both the access key and the secret"),
    ],
)
def test_a_bad_url_names_the_variable_and_what_is_wrong(value, says):
    with pytest.raises(ImproperlyConfigured, match="BERTH_BACKUP_URL=") as raised:
        parse_repository_url(value, name="BERTH_BACKUP_URL")
    assert says in str(raised.value)
    assert "secretvalue" not in str(raised.value)


@pytest.mark.parametrize("value, minutes", [("daily", 1440), ("hourly", 60), ("weekly", 10080), ("6h", 360)])
def test_a_schedule_is_a_name_or_an_interval(monkeypatch, value, minutes):
    monkeypatch.setenv("BERTH_BACKUP_SCHEDULE", value)
    assert env_interval_minutes("BERTH_BACKUP_SCHEDULE", "daily", minimum=5) == minutes


@pytest.mark.parametrize("value", ["twice a day", "1m", "0h"])
def test_a_bad_schedule_stops_startup(monkeypatch, value):
    monkeypatch.setenv("BERTH_BACKUP_SCHEDULE", value)
    with pytest.raises(ImproperlyConfigured, match="BERTH_BACKUP_SCHEDULE="):
        env_interval_minutes("BERTH_BACKUP_SCHEDULE", "daily", minimum=5)


@pytest.mark.django_db
def test_the_default_repository_keeps_its_credentials_encrypted(settings):
    settings.BERTH_BACKUP_URL = parse_repository_url(
        "s3://AKIA123:s3cr3t%2Fwith%2Bchars@berth-backups/fleet?endpoint=http://127.0.0.1:8333"
    )
    repository = Repository.objects.default()
    assert repository.location().secret_key == SECRET
    assert SECRET not in str(repository)
    with connection.cursor() as cursor:
        cursor.execute("select credentials, url from backups_repository where id = %s", [repository.pk])
        stored, url = cursor.fetchone()
    assert SECRET not in stored and "AKIA123" not in stored
    assert url == "s3://berth-backups/fleet"

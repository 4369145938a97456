"""Strict readers for settings that come from environment variables.

Each helper names the variable in its error, so a bad value stops startup with a
message an operator can act on instead of a misbehaving process later.
"""

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = env_str(name)
    if value is None:
        number = default
    else:
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum of {maximum}")
    return number


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    value = env_str(name)
    if value is None:
        number = default
    else:
        try:
            number = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum of {minimum}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default)
    items = [item.strip() for item in value.split(",")]
    if any(not item for item in items):
        raise ImproperlyConfigured(f"{name}={value!r} has an empty item; separate values with single commas")
    return items


def kept_secret(path: Path, generate: Callable[[], str]) -> str:
    """A secret generated once and kept in `path` (mode 600), read back on every later call:
    development's secrets under var/ (settings, `manage.py devsetup`)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate())
        path.chmod(0o600)
    return path.read_text().strip()


# Named schedules, in minutes; anything else is a number and a unit, such as 6h or 30m.
_SCHEDULES = {"hourly": 60, "daily": 24 * 60, "weekly": 7 * 24 * 60}
_INTERVAL = re.compile(r"(\d+)\s*([mhd])")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 24 * 60}


def env_interval_minutes(name: str, default: str, *, minimum: int = 1) -> int:
    """A schedule as minutes between runs: hourly, daily, weekly, or e.g. 6h, 30m, 2d."""
    value = (env_str(name) or default).strip().lower()
    if value in _SCHEDULES:
        return _SCHEDULES[value]
    match = _INTERVAL.fullmatch(value)
    if match is None:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a schedule; use hourly, daily, weekly or an interval such as 6h or 30m"
        )
    minutes = int(match.group(1)) * _UNIT_MINUTES[match.group(2)]
    if minutes < minimum:
        raise ImproperlyConfigured(f"{name}={value!r} is shorter than the minimum of {minimum} minutes")
    return minutes


@dataclass(frozen=True)
class RepositoryURL:
    """Where backups go: an S3-compatible bucket (with a prefix inside it), or a folder.

    `s3://KEY:SECRET@bucket/prefix?endpoint=http://host:8333&region=us-east-1` (the key and
    secret URL-encoded), or `file:///absolute/path`. The credentials are secrets: the
    repository keeps them encrypted, and `display` leaves them out."""

    scheme: str
    bucket: str = ""
    prefix: str = ""
    path: str = ""
    endpoint: str = ""
    region: str = ""
    access_key: str = ""
    secret_key: str = ""

    @property
    def display(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{where} at {self.endpoint}" if self.endpoint else where


def parse_repository_url(value: str, *, name: str = "the repository URL") -> RepositoryURL:
    """A backup repository URL, or ImproperlyConfigured naming `name` and what is wrong (never
    echoing the credentials)."""
    parts = urlsplit(value.strip())
    shown = parts._replace(netloc=parts.hostname or "").geturl() if parts.password else value
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ImproperlyConfigured(f"{name}={shown!r}: a folder repository is file:///absolute/path")
        return RepositoryURL("file", path=parts.path.rstrip("/"))
    if parts.scheme != "s3":
        raise ImproperlyConfigured(f"{name}={shown!r}: use s3://bucket/prefix?endpoint=... or file:///path")
    bucket = parts.hostname or ""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise ImproperlyConfigured(f"{name}={shown!r}: {bucket!r} is not an S3 bucket name")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise ImproperlyConfigured(f"{name}={shown!r}: unknown option {', '.join(sorted(unknown))}")
    endpoint = query.get("endpoint", "")
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"{name}={shown!r}: endpoint must start with http:// or https://")
    if bool(parts.username) != bool(parts.password):
        raise ImproperlyConfigured(f"{name}={shown!r}: give both the access key and the secret (KEY:SECRET@bucket)")
    return RepositoryURL(
        "s3",
        bucket=bucket,
        prefix=parts.path.strip("/"),
        endpoint=endpoint,
        region=query.get("region", ""),
        access_key=unquote(parts.username or ""),
        secret_key=unquote(parts.password or ""),
    )


def env_repository_url(name: str, default: str) -> RepositoryURL:
    return parse_repository_url(env_str(name) or default, name=name)

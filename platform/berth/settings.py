"""Berth settings, read from the environment through the strict helpers in berth.env.

Development (DEBUG=1) generates and keeps its secrets under var/; production
(DEBUG unset or 0) requires them and refuses to start without them.
"""

import secrets
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from berth.env import (
    env_bool,
    env_float,
    env_int,
    env_interval_minutes,
    env_list,
    env_repository_url,
    env_str,
    kept_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("BERTH_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)


def _kept_secret(env_name: str, filename: str, generate) -> str:
    """The variable's value; in development a value generated once and kept under var/."""
    value = env_str(env_name)
    if value is not None:
        return value
    if not DEBUG:
        raise ImproperlyConfigured(f"{env_name} is required when DEBUG is off (set DEBUG=1 for development)")
    return kept_secret(VAR_DIR / filename, generate)


SECRET_KEY = _kept_secret("SECRET_KEY", "secret-key", lambda: secrets.token_urlsafe(50))

# Fernet key for secrets stored in the database (agent tokens, project secrets).
BERTH_ENCRYPTION_KEY = _kept_secret("BERTH_ENCRYPTION_KEY", "encryption-key", lambda: Fernet.generate_key().decode())
try:
    Fernet(BERTH_ENCRYPTION_KEY)
except ValueError:
    raise ImproperlyConfigured(
        "BERTH_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes)"
    ) from None

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    # {% partialdef %}: one template per page, its live parts rendered alone as "page.html#name".
    "template_partials",
    "django_q",
    "hosts",
    "projects",
    "ports",
    "templating",
    "operations",
    "audit",
    "dashboard",
    "orgs",
    "api",
    "telemetry",
    "metrics",
    "alerts",
    "backups",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "dashboard.middleware.LoginRequiredOrHtmxRedirectMiddleware",
    "dashboard.middleware.StaffOnlyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "berth.urls"
WSGI_APPLICATION = "berth.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'berth.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The web process, the workers and the periodic tasks write one file at once (see
    # docs/architecture.md, "The embedded database"). A transaction takes the write lock
    # when it begins (BEGIN IMMEDIATE), so a writer waits its turn for up to `timeout`
    # seconds; one that read first and wrote later was refused "database is locked" at
    # once. WAL lets readers run beside the writer; synchronous=NORMAL is safe with WAL.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        transaction_mode="IMMEDIATE",
        timeout=20,
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:projects"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Berth: time budgets -----------------------------------------------------
# Order that keeps every wait bounded (checked below, refused at startup when broken):
#   agent call deadline < operation deadline < django-q2 task timeout < django-q2 retry
BERTH_AGENT_CALL_DEADLINE = env_float("BERTH_AGENT_CALL_DEADLINE", 30.0, minimum=0.1)
# Web pages that show live agent data wait at most this long, then say "agent unreachable".
BERTH_AGENT_PAGE_DEADLINE = env_float("BERTH_AGENT_PAGE_DEADLINE", 2.0, minimum=0.1)
BERTH_OPERATION_DEADLINE = env_int("BERTH_OPERATION_DEADLINE", 600, minimum=1)
# The deadline of the operations that wait on an agent's backup job (a base backup, a restore,
# a clone, a restore test): their time grows with the database, so they get their own,
# at most the agent's longest job (6 h) and never shorter than the other operations'.
BERTH_BACKUP_DEADLINE = env_int("BERTH_BACKUP_DEADLINE", 6 * 3600, minimum=1, maximum=6 * 3600)
# Seconds an operation keeps back from waiting for health, so a provisioning that never
# became healthy can still stop its runtime (one agent call) before its deadline.
BERTH_OPERATION_CLEANUP_RESERVE = 15
# A queued operation that no worker claimed within this long is failed by the reaper.
BERTH_QUEUE_DEADLINE = env_int("BERTH_QUEUE_DEADLINE", 900, minimum=1)
# django-q2 schedules run at minute granularity.
BERTH_REAPER_MINUTES = env_int("BERTH_REAPER_MINUTES", 1, minimum=1)
BERTH_HEALTH_REFRESH_MINUTES = env_int("BERTH_HEALTH_REFRESH_MINUTES", 1, minimum=1)
# How often hosts are asked whether managed files were edited there ("locally modified").
BERTH_DRIFT_CHECK_MINUTES = env_int("BERTH_DRIFT_CHECK_MINUTES", 15, minimum=1)
BERTH_PORT_REPAIR_MINUTES = env_int("BERTH_PORT_REPAIR_MINUTES", 60, minimum=1)
# The metrics pass: each host's agent reads its runtimes' database statistics (one call per
# host), and host and fleet counts are taken; samples are kept this many hours.
BERTH_METRICS_COLLECT_MINUTES = env_int("BERTH_METRICS_COLLECT_MINUTES", 5, minimum=1)
BERTH_METRICS_RETENTION_HOURS = env_int("BERTH_METRICS_RETENTION_HOURS", 24, minimum=1)
# Bearer token that /metrics asks for (16+ characters); unset, /metrics answers 404.
BERTH_METRICS_TOKEN = env_str("BERTH_METRICS_TOKEN")
# Alerts: a host is reported unreachable after this long without an answer; certificates
# this many days before they end; each message send is bounded, and given up after attempts.
BERTH_ALERT_HOST_UNREACHABLE_MINUTES = env_int("BERTH_ALERT_HOST_UNREACHABLE_MINUTES", 10, minimum=1)
BERTH_ALERT_CERT_DAYS = env_int("BERTH_ALERT_CERT_DAYS", 30, minimum=1)
BERTH_ALERT_SEND_TIMEOUT = env_float("BERTH_ALERT_SEND_TIMEOUT", 10.0, minimum=1.0)
BERTH_ALERT_MAX_ATTEMPTS = env_int("BERTH_ALERT_MAX_ATTEMPTS", 8, minimum=1, maximum=20)
# E-mail channels send through Django's mail settings (console output in development).
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "berth@localhost")
if DEBUG and env_str("EMAIL_HOST") is None:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
if BERTH_METRICS_TOKEN is not None and len(BERTH_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("BERTH_METRICS_TOKEN must be at least 16 characters")
# Consecutive failed refreshes before a healthy project is marked ACTIVE_UNHEALTHY.
BERTH_UNHEALTHY_AFTER = env_int("BERTH_UNHEALTHY_AFTER", 3, minimum=1)
# Health polling while an operation waits for a runtime: first delay, doubling up to the max.
BERTH_HEALTH_POLL_INITIAL = env_float("BERTH_HEALTH_POLL_INITIAL", 1.0, minimum=0.05)
BERTH_HEALTH_POLL_MAX = env_float("BERTH_HEALTH_POLL_MAX", 5.0, minimum=0.05)
# Placement trusts what a host's agent reported (driver, Postgres majors) for this long
# after its last answer, instead of asking it on every placement.
BERTH_HOST_INFO_MAX_AGE = env_int("BERTH_HOST_INFO_MAX_AGE", 60, minimum=0)
# Health refresh and drift check ask this many hosts' agents at once (one thread each).
BERTH_HOST_THREADS = env_int("BERTH_HOST_THREADS", 8, minimum=1, maximum=256)
BERTH_PORT_COOLDOWN = env_int("BERTH_PORT_COOLDOWN", 300, minimum=0)
# A major upgrade keeps the old cluster, stopped, this many days for a rollback; then the
# worker discards it (operations.upgrades.discard_expired).
BERTH_UPGRADE_KEEP_DAYS = env_int("BERTH_UPGRADE_KEEP_DAYS", 7, minimum=1, maximum=365)
# Backups (backups, operations.protection): the repository every project's WAL and base
# backups go to (a host may have its own, in the admin), how often a base backup is taken,
# how many days of them are kept, and the longest a finished WAL segment waits to be
# archived (archive_timeout: the most committed work a lost host can cost). Never on the
# runtime host's own runtime folder: a folder repository is a mount shared by the hosts.
BERTH_BACKUP_URL = env_repository_url("BERTH_BACKUP_URL", f"file://{VAR_DIR / 'backups'}")
BERTH_BACKUP_SCHEDULE_MINUTES = env_interval_minutes("BERTH_BACKUP_SCHEDULE", "daily", minimum=5)
BERTH_BACKUP_RETENTION_DAYS = env_int("BERTH_BACKUP_RETENTION_DAYS", 7, minimum=1, maximum=3650)
BERTH_WAL_ARCHIVE_TIMEOUT = env_int("BERTH_WAL_ARCHIVE_TIMEOUT", 60, minimum=1, maximum=3600)
# Each project's restore is tested into a scratch cluster this often.
BERTH_BACKUP_VERIFY_DAYS = env_int("BERTH_BACKUP_VERIFY_DAYS", 7, minimum=1, maximum=365)
# How often each runtime's WAL archiving is read (a failing archive shows within this).
BERTH_BACKUP_CHECK_MINUTES = env_int("BERTH_BACKUP_CHECK_MINUTES", 5, minimum=1)
BERTH_RUNTIMES_DIR = Path(env_str("BERTH_RUNTIMES_DIR", str(BASE_DIR / "runtimes")))

Q_TIMEOUT = env_int("Q_TIMEOUT", max(BERTH_OPERATION_DEADLINE, BERTH_BACKUP_DEADLINE) + 60, minimum=1)
Q_RETRY = env_int("Q_RETRY", Q_TIMEOUT + 60, minimum=1)
if not BERTH_AGENT_CALL_DEADLINE < BERTH_OPERATION_DEADLINE:
    raise ImproperlyConfigured("BERTH_AGENT_CALL_DEADLINE must be shorter than BERTH_OPERATION_DEADLINE")
if BERTH_OPERATION_DEADLINE < BERTH_OPERATION_CLEANUP_RESERVE + BERTH_AGENT_CALL_DEADLINE:
    raise ImproperlyConfigured(
        f"BERTH_OPERATION_DEADLINE={BERTH_OPERATION_DEADLINE} leaves no time to work: it must be at least "
        f"BERTH_AGENT_CALL_DEADLINE ({BERTH_AGENT_CALL_DEADLINE:g}) plus the {BERTH_OPERATION_CLEANUP_RESERVE} s "
        "an operation keeps back to stop a runtime that never became healthy"
    )
if BERTH_BACKUP_DEADLINE < BERTH_OPERATION_DEADLINE:
    raise ImproperlyConfigured("BERTH_BACKUP_DEADLINE must be at least BERTH_OPERATION_DEADLINE")
if not BERTH_OPERATION_DEADLINE < Q_TIMEOUT:
    raise ImproperlyConfigured("Q_TIMEOUT must be longer than BERTH_OPERATION_DEADLINE")
if not BERTH_BACKUP_DEADLINE < Q_TIMEOUT:
    raise ImproperlyConfigured("Q_TIMEOUT must be longer than BERTH_BACKUP_DEADLINE")
if not Q_TIMEOUT < Q_RETRY:
    raise ImproperlyConfigured("Q_RETRY must be longer than Q_TIMEOUT")

Q_CLUSTER = {
    "name": "berth",
    "orm": "default",
    "workers": env_int("Q_WORKERS", 2, minimum=1),
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    # An operation's outcome lives on its Operation row; a failed task is not re-run blindly.
    "max_attempts": 1,
    "save_limit": 1000,
    "catch_up": False,
    # The ORM broker looks for new tasks this often while its queue is empty: one indexed
    # query per cluster per poll, and on average half of it added to each task's pickup.
    "poll": env_float("Q_POLL", 0.1, minimum=0.05),
}
# With REDIS_URL, tasks travel through Redis instead (a blocking pop: a worker takes a task
# the moment it is queued). The trade-off is in docs/architecture.md ("Task broker"):
# a task Redis loses is an operation left queued until the reaper fails it.
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    del Q_CLUSTER["orm"]
    Q_CLUSTER["redis"] = REDIS_URL

# --- Berth: the Management API (/v1/) ----------------------------------------
# Requests per minute per access token; counted in the database, so it holds across web workers.
BERTH_API_RATE_LIMIT = env_int("BERTH_API_RATE_LIMIT", 120, minimum=1)
# The template POST /v1/projects creates projects from (the Management API has no template field).
BERTH_API_TEMPLATE = env_str("BERTH_API_TEMPLATE", "postgres")
# The DNS domain under which Berth publishes database endpoints (`db.<ref>.<domain>`, the pooler
# string the CLI's `--linked` commands read). The Supabase CLI's profile names its registrable
# domain as `pooler_host`. Names under `.localhost` resolve to loopback on most machines.
BERTH_DATABASE_DOMAIN = env_str("BERTH_DATABASE_DOMAIN", "berth.localhost")
# The pooler's host name (config/database/pooler) for hosts that name none of their own
# (RuntimeHost.pooler_host): its router ends TLS there and routes by the user `<role>.<ref>`.
# Empty: `pooler.<BERTH_DATABASE_DOMAIN>`.
BERTH_POOLER_HOST = env_str("BERTH_POOLER_HOST", "")
# cli/login-role: how long a temporary role may log in; the reaper drops it after.
BERTH_LOGIN_ROLE_TTL = env_int("BERTH_LOGIN_ROLE_TTL", 3600, minimum=60, maximum=86_400)
# database/query: how long one statement may run (the agent enforces it, and never allows more
# than its own BERTH_AGENT_DEADLINE), and how much it may return.
BERTH_API_QUERY_DEADLINE = env_float("BERTH_API_QUERY_DEADLINE", 15.0, minimum=1.0)
# Database settings (Postgres config, SSL enforcement, network restrictions, bans): how long the
# agent may take to apply them, a restart of the server included.
BERTH_API_SETTINGS_DEADLINE = env_float("BERTH_API_SETTINGS_DEADLINE", 60.0, minimum=5.0)
# At most 100,000 rows and 3 MiB: the agent refuses more (agent.api.QueryRequest; its replies
# must fit the client's 4 MiB cap).
BERTH_API_QUERY_MAX_ROWS = env_int("BERTH_API_QUERY_MAX_ROWS", 10_000, minimum=1, maximum=100_000)
BERTH_API_QUERY_MAX_BYTES = env_int("BERTH_API_QUERY_MAX_BYTES", 2 << 20, minimum=1024, maximum=3 << 20)

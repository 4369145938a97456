"""Settings for the test suite: always PostgreSQL when one is reachable.

TEST_DATABASE_URL wins over DATABASE_URL (default postgres://postgres@127.0.0.1:5432/berth).
When no PostgreSQL answers, tests fall back to SQLite and every test marked `postgres`
is skipped with a loud reason (see tests/conftest.py).
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DEBUG", "1")
if "BERTH_VAR_DIR" not in os.environ:
    # A folder of this run's own (development keys are generated into it), removed when the
    # process that made it exits; processes it starts inherit it and leave it alone.
    _var_dir = tempfile.mkdtemp(prefix="berth-test-var-")
    os.environ["BERTH_VAR_DIR"] = _var_dir
    atexit.register(shutil.rmtree, _var_dir, ignore_errors=True)

import dj_database_url  # noqa: E402
import psycopg  # noqa: E402

from berth.settings import *  # noqa: E402,F403

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/berth"


def _postgres_reachable(url: str) -> str | None:
    """None when a server answers at url, else why not."""
    config = dj_database_url.parse(url)
    try:
        psycopg.connect(
            host=config["HOST"] or None,
            port=config["PORT"] or None,
            user=config["USER"] or None,
            password=config["PASSWORD"] or None,
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


POSTGRES_UNREACHABLE_REASON = _postgres_reachable(TEST_DATABASE_URL)
if POSTGRES_UNREACHABLE_REASON is None:
    DATABASES = {"default": dj_database_url.parse(TEST_DATABASE_URL)}
    # Parallel test runs (several checkouts on one server) each get their own database.
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("BERTH_TEST_DB", "test_berth")}
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Tests serve static files through the finders; there is no collected STATIC_ROOT.
STATIC_ROOT = None

"""Browser tests: Playwright for Python driving Debian's Chromium (installed by scripts/browser).

No browser is ever downloaded (`playwright install` is never run); when /usr/bin/chromium
is missing every test here is skipped with that reason, loudly.
"""

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("BERTH_CHROMIUM", "/usr/bin/chromium")
BROWSER_DIR = Path(__file__).resolve().parent
SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "test-artifacts" / "screenshots"

# Playwright's sync API keeps an event loop running in the test thread for the whole session,
# which Django's async-safety check mistakes for async code calling the ORM.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


def pytest_collection_modifyitems(config, items):
    browser = [item for item in items if BROWSER_DIR in Path(item.fspath).parents]
    # Last: pytest-playwright's session keeps its event loop running in this thread until the
    # session ends, and code that runs its own loop (the agent client) cannot run beside it.
    items[:] = [item for item in items if item not in browser] + browser
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {CHROMIUM} is missing; run ./scripts/browser as root")
    for item in browser:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    # A laptop-sized window: the dashboard must be comfortable at this width.
    return {**browser_context_args, "viewport": {"width": 1366, "height": 860}}


@pytest.fixture
def screenshot(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def signed_in(page, live_server, django_user_model):
    """A page signed in through the login form as a staff member."""
    django_user_model.objects.create_user("staffer", password="staff-password-1", is_staff=True)
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/")
    page.fill("#id_username", "staffer")
    page.fill("#id_password", "staff-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    return page

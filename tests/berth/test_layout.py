import subprocess
import sys

from tests.stack import ROOT


def test_platform_folder_has_no_init():
    # An __init__.py would make `platform` a package that shadows the standard library.
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_and_uuid_still_import_from_project_root():
    code = "import platform, uuid; assert hasattr(platform, 'system'); print(uuid.uuid4())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

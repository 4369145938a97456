"""A real S3-compatible store (SeaweedFS, started by scripts/s3) and file:// repositories for the backup tests."""

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from agent.api import Repository
from tests.stack import PORT_BASE, ROOT, free_port_range, wait_for

BUCKET = "berth-backups"


class SeaweedFS:
    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="bat-s3-"))
        self.port = free_port_range(8, PORT_BASE + 300)
        self.access_key, self.secret_key = secrets.token_hex(10), secrets.token_urlsafe(24)
        env = {**os.environ, "BERTH_S3_ACCESS_KEY": self.access_key, "BERTH_S3_SECRET_KEY": self.secret_key}
        self.log = open(self.folder / "weed.log", "wb")
        self.process = subprocess.Popen(
            [ROOT / "scripts" / "s3", self.folder, str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"
        wait_for(self._bucket_made, timeout=90, interval=1, what=f"SeaweedFS S3 on {self.endpoint}")

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}),
        )

    def _bucket_made(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"scripts/s3 exited: {(self.folder / 'weed.log').read_text()[-2000:]}")
        try:
            self.client().create_bucket(Bucket=BUCKET)
        except Exception as exc:  # not up yet: connection refused, or the filer not ready
            if "BucketAlreadyExists" in str(exc) or "BucketAlreadyOwnedByYou" in str(exc):
                return True
            return False
        return True

    def repository(self, prefix: str) -> Repository:
        return Repository(
            url=f"s3://{BUCKET}/{prefix}",
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
        )

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweedfs():
    store = SeaweedFS()
    yield store
    store.stop()


@pytest.fixture
def file_repository(repository_folder):
    return Repository(url=f"file://{repository_folder}")


@pytest.fixture
def make_repository(request, file_repository):
    """A repository of a kind: `file` (a fresh folder) or `s3` (a fresh prefix in SeaweedFS)."""

    def make(kind: str) -> Repository:
        if kind == "file":
            return file_repository
        return request.getfixturevalue("seaweedfs").repository(secrets.token_hex(4))

    return make

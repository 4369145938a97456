"""The archive command's S3 client: HEAD, PUT and GET of one small object (a WAL file) over
http.client, signed by botocore's own SigV4 signer (botocore.auth), and nothing else.

Why not a boto3 client: PostgreSQL starts the archive command once per 16 MB segment, and
importing boto3 and making its client cost 0.2 CPU-s of the 0.3 each start took (botocore
parses its service models and lists every AWS service's folder), on the cores the served
cluster shares. Importing the signer alone costs 0.05 CPU-s more than the standard library
(0.11-0.12 against 0.06-0.08 CPU-s for the whole import, 5 starts each); the signing stays
with the library that keeps it right. Everything else (base backups' multipart uploads, ranged
reads, listings, deletes, and a repository without keys, which boto3 finds in its credential
chain) stays with agent.repository.S3Store.

It speaks to the same places as S3Store: path-style addressing, the endpoint given or AWS's
regional one, the same timeout. Invariants: a request that fails is retried (ATTEMPTS in all)
on a connection error or a 5xx answer, never on a 4xx; errors are RepositoryUnavailable with
the status and S3's error code, never the credentials.
"""

import http.client
import io
import re
import time
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import quote, urlsplit

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# Imported by agent.walstore.open_wal_store alone (the archive and restore commands, the docker shipper).
from agent.repository import S3_TIMEOUT_S, RepositoryUnavailable, Spec, Stored

ATTEMPTS = 3
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class LightS3Store:
    """An S3 repository's objects under `prefix`, for agent.wal (the Store calls it makes)."""

    def __init__(self, spec: Spec, bucket: str, prefix: str):
        endpoint = urlsplit(spec.endpoint or f"https://s3.{spec.region or 'us-east-1'}.amazonaws.com")
        self.https, self.host = endpoint.scheme == "https", endpoint.netloc
        self.base = endpoint.path.rstrip("/")
        self.origin = f"{endpoint.scheme}://{endpoint.netloc}"
        region = spec.region or "us-east-1"
        self.signer = S3SigV4Auth(Credentials(spec.access_key_id, spec.secret_access_key), "s3", region)
        self.bucket, self.prefix = bucket, prefix

    def __repr__(self) -> str:
        return f"LightS3Store(host={self.host!r}, bucket={self.bucket!r}, prefix={self.prefix!r})"

    def head(self, key: str) -> Stored | None:
        status, headers, _ = self._request("HEAD", key, f"looking up {key}", missing_ok=True)
        if status == 404:
            return None
        modified = datetime.strptime(headers["last-modified"], "%a, %d %b %Y %H:%M:%S %Z").replace(tzinfo=UTC)
        return Stored(key, int(headers["content-length"]), modified.timestamp())

    def put(self, key: str, source: BinaryIO) -> int:
        body = source.read()
        self._request("PUT", key, f"uploading {key}", body=body)
        return len(body)

    def open(self, key: str) -> BinaryIO:
        """The object read whole (a WAL file: at most a segment's size)."""
        status, _, body = self._request("GET", key, f"reading {key}", missing_ok=True)
        if status == 404:
            raise FileNotFoundError(key)
        return io.BytesIO(body)

    def _request(self, method: str, key: str, doing: str, body: bytes = b"", missing_ok: bool = False):
        path = quote(f"{self.base}/{self.bucket}/{self.prefix}/{key}" if self.prefix else f"/{self.bucket}/{key}")
        where = f"s3://{self.bucket}/{self.prefix}: {doing}"
        for attempt in range(ATTEMPTS):
            try:
                status, reason, headers, answer = self._send(method, path, body)
            except (OSError, http.client.HTTPException) as error:
                failure = f"{type(error).__name__}: {error}"
            else:
                if status < 300 or (missing_ok and status == 404):
                    return status, headers, answer
                found = _ERROR_CODE.search(answer)
                # A HEAD's answer has no body: its status and reason are all S3 says.
                failure = f"HTTP {status} {reason}" + (f" ({found.group(1).decode(errors='replace')})" if found else "")
                if status < 500:
                    break
            if attempt + 1 < ATTEMPTS:
                time.sleep(0.5 * (attempt + 1))
        raise RepositoryUnavailable(f"{where}: {failure}")

    def _send(self, method: str, path: str, body: bytes) -> tuple[int, str, dict[str, str], bytes]:
        # botocore's signer alone (no client, no service models): the body's SHA-256 is signed,
        # so S3 checks what it stores.
        request = AWSRequest(method=method, url=f"{self.origin}{path}", data=body)
        self.signer.add_auth(request)
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        connection = kind(self.host, timeout=S3_TIMEOUT_S)
        try:
            connection.request(
                method, path, body=body if method == "PUT" else None, headers=dict(request.headers.items())
            )
            response = connection.getresponse()
            answer = response.read()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, response.reason, headers, answer
        finally:
            connection.close()

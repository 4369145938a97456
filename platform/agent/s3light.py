"""The archive command's S3 client: HEAD, PUT and GET of one small object (a WAL file) over
http.client, signed with AWS Signature Version 4, and nothing else.

Why not boto3: PostgreSQL starts the archive command once per 16 MB segment, and importing
boto3 and making its client cost 0.2 CPU-s of the 0.3 each start took (botocore parses its
service models and lists every AWS service's folder), on the cores the served cluster shares.
This costs a few milliseconds. Everything else (base backups' multipart uploads, ranged
reads, listings, deletes, and a repository without keys, which boto3 finds in its credential
chain) stays with agent.repository.S3Store.

It speaks to the same places as S3Store: path-style addressing, the endpoint given or AWS's
regional one, the same timeout. Invariants: a request that fails is retried (ATTEMPTS in all)
on a connection error or a 5xx answer, never on a 4xx; errors are RepositoryUnavailable with
the status and S3's error code, never the credentials.
"""

import hashlib
import hmac
import http.client
import io
import re
import time
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import quote, urlsplit

# agent.repository imports this module only inside open_wal_store, once it is loaded itself.
from agent.repository import S3_TIMEOUT_S, RepositoryUnavailable, Spec, Stored

ATTEMPTS = 3
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


class LightS3Store:
    """An S3 repository's objects under `prefix`, for agent.wal (the Store calls it makes)."""

    def __init__(self, spec: Spec, bucket: str, prefix: str):
        endpoint = urlsplit(spec.endpoint or f"https://s3.{spec.region or 'us-east-1'}.amazonaws.com")
        self.https, self.host = endpoint.scheme == "https", endpoint.netloc
        self.base = endpoint.path.rstrip("/")
        self.region = spec.region or "us-east-1"
        self.access_key, self.secret_key = spec.access_key_id, spec.secret_access_key
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
        payload = hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256
        now = datetime.now(UTC)
        headers = {"host": self.host, "x-amz-content-sha256": payload, "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ")}
        headers["authorization"] = self._authorization(method, path, headers, now)
        kind = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        connection = kind(self.host, timeout=S3_TIMEOUT_S)
        try:
            connection.request(method, path, body=body if method == "PUT" else None, headers=headers)
            response = connection.getresponse()
            answer = response.read()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, response.reason, headers, answer
        finally:
            connection.close()

    def _authorization(self, method: str, path: str, headers: dict[str, str], now: datetime) -> str:
        """AWS Signature Version 4 of a request without a query string."""
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, path, "", *(f"{name}:{headers[name]}" for name in sorted(headers)), "", signed])
        canonical += "\n" + headers["x-amz-content-sha256"]
        day = now.strftime("%Y%m%d")
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", headers["x-amz-date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = f"AWS4{self.secret_key}".encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"

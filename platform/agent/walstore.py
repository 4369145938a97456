"""The store one WAL file is stored into or read from: by agent/wal.py (the archive and
restore commands, one process per segment) and by the docker driver's shipper (a thread of
the agent per segment). Apart from both: wal.py runs as a script and sets its own import
path when loaded, and agent.s3light imports agent.repository, which must not import it back.
"""

from urllib.parse import urlsplit

from agent.repository import Spec, Store, open_store


def open_wal_store(spec: Spec, stanza: str) -> Store:
    """The store a push or fetch uses: it only heads, puts and opens one WAL file per call.
    Into S3 with keys, agent.s3light's client (a boto3 client cost the archive command 0.2
    CPU-s per segment to start, and the shipper one client built per segment), imported only
    then: a push that finds its segment stored ahead returns before paying for it. Without
    keys, S3Store, for boto3's credential chain."""
    parts = urlsplit(spec.url)
    if parts.scheme == "s3" and spec.access_key_id and spec.secret_access_key:
        from agent.s3light import LightS3Store  # noqa: PLC0415

        prefix = "/".join(part for part in (parts.path.strip("/"), stanza) if part)
        return LightS3Store(spec, parts.netloc, prefix)
    return open_store(spec, stanza)

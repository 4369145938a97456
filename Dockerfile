# Berth's image: web (gunicorn + whitenoise), worker (qcluster) and, as target `agent`, the
# runtime agent with Debian's docker CLI and docker-compose. docker-compose.yml builds both.
#
#   docker build --network host -t berth/berth --target app .
#   docker build --network host -t berth/berth-agent --target agent .
#
# BASE_IMAGE is any Debian bookworm image: debian:bookworm-slim by default, or the locally
# debootstrapped berth/debian-base:bookworm (scripts/docker-images) where no registry is
# reachable. Python and pip come from Debian; the pinned requirements from PyPI.
ARG BASE_IMAGE=debian:bookworm-slim

# Python and the pinned dependencies, shared by both targets.
FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# Behind a TLS-intercepting proxy, pass its CA certificates (PEM text) to reach PyPI:
#   --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)"
ARG EXTRA_CA_CERTS=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && if [ -n "$EXTRA_CA_CERTS" ]; then \
      printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/berth-build-extra.crt \
      && update-ca-certificates >/dev/null; \
    fi

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv /opt/venv \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# web and worker: the code, static files collected, an unprivileged user.
FROM python AS app
WORKDIR /app
COPY manage.py pyproject.toml ./
COPY platform platform
COPY templates templates
COPY static static
COPY runtimes runtimes
COPY docker/berth/entrypoint.sh /usr/local/bin/berth-entrypoint
# Static files are collected into the image; whitenoise serves them from STATIC_ROOT.
# DEBUG=1 only so settings load without the runtime secrets; nothing of it is kept.
RUN DEBUG=1 BERTH_VAR_DIR=/tmp/collectstatic python manage.py collectstatic --noinput -v 0 \
 && rm -rf /tmp/collectstatic \
 && python -m compileall -q platform \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin berth
ENV STATIC_ROOT=/app/staticfiles \
    BERTH_VAR_DIR=/var/lib/berth/var
RUN install -d -o berth -g berth /var/lib/berth/var
USER berth
EXPOSE 8000
ENTRYPOINT ["berth-entrypoint"]
CMD ["web"]

# The agent drives the host's Docker engine through its socket, so it runs as root. It
# needs the docker CLI (taken alone from Debian's docker.io: no engine, containerd or runc)
# and compose (Debian's docker-compose, v1; the driver uses `docker compose` where it works),
# and for its database router PgBouncer (the pooler) and openssl (its self-signed certificate).
# The tools come before the code, so a code change does not re-run apt.
FROM python AS agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends docker-compose pgbouncer openssl \
 && cd /tmp && apt-get download docker.io \
 && dpkg-deb --fsys-tarfile docker.io_*.deb | tar -x -C / ./usr/bin/docker \
 && rm -f docker.io_*.deb \
 && docker --version && docker-compose version --short \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
WORKDIR /app
COPY --from=app /app /app
COPY --from=app /usr/local/bin/berth-entrypoint /usr/local/bin/berth-entrypoint
EXPOSE 8470
ENTRYPOINT ["berth-entrypoint"]
CMD ["agent"]

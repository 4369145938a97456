#!/bin/sh
# Berth's container entrypoint (Dockerfile; docker-compose.yml picks the role).
#
#   web      migrate, then gunicorn on 0.0.0.0:8000 (static files through whitenoise)
#   worker   manage.py qcluster (django-q2: operations, reaper, health refresh)
#   agent    the runtime agent (python platform/agent); needs the Docker socket
#   *        anything else runs as given, e.g. `python manage.py createsuperuser`
set -eu
cd /app

case "${1:-web}" in
  web)
    python manage.py migrate --noinput
    exec gunicorn --chdir platform --bind 0.0.0.0:8000 \
      --workers "${WEB_CONCURRENCY:-2}" --timeout "${GUNICORN_TIMEOUT:-60}" \
      --access-logfile - --error-logfile - berth.wsgi
    ;;
  worker) exec python manage.py qcluster ;;
  agent) exec python platform/agent ;;
  *) exec "$@" ;;
esac

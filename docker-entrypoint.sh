#!/bin/sh
# Container entry point: migrate the database, then serve with gunicorn.
# With arguments, run them instead (e.g. `docker run IMAGE authserver keys rotate`).
# With several replicas, run `authserver db upgrade` once as a job and set
# AUTHSERVER_SKIP_MIGRATE=1 here, so replicas do not race on the schema.
set -eu

# prometheus_client writes here from the first metric in any process; gunicorn.conf.py
# empties it again before the workers start.
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

if [ "${AUTHSERVER_SKIP_MIGRATE:-0}" != "1" ]; then
    authserver db upgrade
fi

exec gunicorn -c gunicorn.conf.py wsgi:app

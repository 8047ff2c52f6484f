# authserver: one image, gunicorn (gthread) serving wsgi:app on :8000 as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the runtime needs: never .venv, var/ (local keys, SQLite files) or tests.
# Built from a throw-away copy so the installed package is the only one on sys.path. The
# wheel carries the Cedar policies (authserver/policies links to policies/, copied beside it)
# and the conformance suite (`authserver conformance`).
COPY pyproject.toml README.md requirements.lock /tmp/src/
COPY authserver /tmp/src/authserver
COPY policies /tmp/src/policies
COPY conformance /tmp/src/conformance
# Runtime dependencies only, at the locked versions: no extras, no editable install.
RUN pip install -r /tmp/src/requirements.lock \
    && pip install --no-deps /tmp/src \
    && rm -rf /tmp/src

COPY wsgi.py gunicorn.conf.py docker-entrypoint.sh ./
RUN chmod 0755 /app/docker-entrypoint.sh

# Code stays root-owned and read-only to the service user; only its state directory is writable.
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin authserver \
    && mkdir -p /var/lib/authserver \
    && chown authserver:authserver /var/lib/authserver \
    && chmod 0700 /var/lib/authserver

# POLICY_DIR defaults to the policies inside the installed package; mount your own and set
# AUTHSERVER_POLICY_DIR to use them instead.
ENV AUTHSERVER_DATA_DIR=/var/lib/authserver \
    AUTHSERVER_BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

VOLUME ["/var/lib/authserver"]
USER authserver:authserver
EXPOSE 8000

# Liveness only (no DB/Redis): slim has no curl, so use the interpreter we already ship.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('AUTHSERVER_BIND', '0.0.0.0:8000').rsplit(':', 1)[1]; urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=4)"]

ENTRYPOINT ["/app/docker-entrypoint.sh"]

"""WSGI entry point for gunicorn (`gunicorn -c gunicorn.conf.py wsgi:app`); PEP 3333."""

from authserver import create_app

app = create_app()

"""authserver: an OAuth authorization server for AI agents acting on behalf of one user."""

from __future__ import annotations

from typing import Any


def create_app(config: Any = None, **kwargs: Any) -> Any:
    """The Flask application factory (see authserver.app)."""
    from authserver.app import create_app as _create_app

    return _create_app(config, **kwargs)


__all__ = ["create_app"]

"""`cimd_trusted_hosts` (issue 14): a client metadata document on a host the admin trusts is
shown on the consent page without the *unverified* mark; any other host keeps it."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.http_helpers import (  # noqa: F401
    app,
    client,
    redis_url,
    signed_in,
    user_id,
)
from tests.http_helpers import app_config as base_app_config  # noqa: F401
from tests.test_http_cimd import _authorize_page, _serve, cimd  # noqa: F401
from tests.tls_helpers import TLSServer, tls_server  # noqa: F401


@pytest.fixture(params=[("localhost",), ("LocalHost",), ("example.com",), ()],
                ids=["trusted", "trusted-any-case", "other-host", "none"])
def app_config(base_app_config: dict[str, Any], request: Any) -> dict[str, Any]:
    return {**base_app_config, "cimd_trusted_hosts": request.param}


def test_consent_marks_a_cimd_client_unverified_unless_its_host_is_trusted(
        client: FlaskClient, cimd: TLSServer, signed_in: str, app_config: dict[str, Any]
) -> None:
    registered = _serve(cimd)
    page = _authorize_page(client, registered["client_id"])
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "localhost" in html  # the document's host is shown either way
    trusted = "localhost" in [h.lower() for h in app_config["cimd_trusted_hosts"]]
    assert ("Unverified" in html) is not trusted
    assert ('badge warn">unverified' in html) is not trusted

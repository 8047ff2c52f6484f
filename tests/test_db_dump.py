"""A database dump holds no usable credential (README "Security notes": no secrets at rest).

After every foundation flow has run, every row of every table (found by reflection, so tables
added later are covered too) is rendered as text and searched for each secret the flows handled.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests.http_helpers import (  # noqa: F401
    PASSWORD,
    app,
    app_config,
    assertion_form,
    authorization_params,
    authorize,
    client,
    client_assertion,
    code_flow,
    confidential_client,
    ec_key,
    pkce_pair,
    public_client,
    public_jwks,
    redis_url,
    register_client,
    signed_in,
    token_request,
    user_id,
)


def dump(app: Flask) -> str:
    """Every row of every table, as one string."""
    engine = app.extensions["authserver"].db.engine
    metadata = sa.MetaData()
    metadata.reflect(engine)
    assert {"clients", "refresh_tokens", "authorization_codes", "signing_keys"} <= set(
        metadata.tables)
    lines = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                lines.append(f"{table.name}: {json.dumps([str(v) for v in row])}")
    return "\n".join(lines)


def test_database_dump_holds_no_usable_credential(app: Flask, client: FlaskClient,
                                                  signed_in: str, app_config: dict) -> None:
    secrets: dict[str, str] = {}

    basic = confidential_client(client)
    post = register_client(client, grant_types=["client_credentials"],
                           token_endpoint_auth_method="client_secret_post")
    secrets["basic client secret"] = basic["client_secret"]
    secrets["post client secret"] = post["client_secret"]

    key = ec_key()
    jwt_client = register_client(client, grant_types=["client_credentials"],
                                 token_endpoint_auth_method="private_key_jwt",
                                 jwks=public_jwks(key))
    assertion = client_assertion(key, jwt_client["client_id"])
    response = client.post("/token", data={"grant_type": "client_credentials",
                                           **assertion_form(assertion)})
    assert response.status_code == 200
    secrets["client assertion"] = assertion
    secrets["client private key"] = key.as_dict(private=True)["d"]

    # Code flow: redeemed code, refresh rotation, plus a code left unredeemed.
    verifier, challenge = pkce_pair()
    params = authorization_params(basic, challenge)
    code = authorize(client, params)
    first = token_request(client, basic, grant_type="authorization_code", code=code,
                          redirect_uri=params["redirect_uri"], code_verifier=verifier).get_json()
    second = token_request(client, basic, grant_type="refresh_token",
                           refresh_token=first["refresh_token"]).get_json()
    secrets["redeemed code"] = code
    secrets["code verifier"] = verifier
    secrets["rotated refresh token"] = first["refresh_token"]
    secrets["live refresh token"] = second["refresh_token"]
    secrets["access token"] = second["access_token"]
    secrets["unredeemed code"] = authorize(client, authorization_params(basic, pkce_pair()[1]))

    public = public_client(client)
    secrets["public client refresh token"] = code_flow(client, public)["refresh_token"]
    cc = token_request(client, post, grant_type="client_credentials").get_json()
    secrets["client credentials token"] = cc["access_token"]
    secrets["user password"] = PASSWORD

    services = app.extensions["authserver"]
    signing_key = services.keyring._active_key().as_dict(private=True)
    secrets["signing key d"] = signing_key["d"]
    kek = Path(services.settings.kek_file).read_text().strip()
    secrets["key-encryption key"] = kek
    secrets["key-encryption key (urlsafe)"] = base64.urlsafe_b64encode(
        base64.b64decode(kek)).decode().rstrip("=")
    secrets["session secret"] = (Path(app_config["data_dir"]) / "secret.key").read_text().strip()

    text = dump(app)
    assert "clients:" in text and "refresh_tokens:" in text and "signing_keys:" in text
    found = [name for name, value in secrets.items() if value in text]
    assert found == []


def test_client_secret_and_refresh_token_are_stored_as_sha256(app: Flask, client: FlaskClient,
                                                               signed_in: str) -> None:
    import hashlib

    basic = confidential_client(client)
    tokens = code_flow(client, basic)
    text = dump(app)
    assert hashlib.sha256(basic["client_secret"].encode()).hexdigest() in text
    assert hashlib.sha256(tokens["refresh_token"].encode()).hexdigest() in text

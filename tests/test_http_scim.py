"""SCIM 2.0 provisioning (RFC 7643 / RFC 7644 subset; docs/standards.md SCIM-01..07): the IdP
creates, finds, updates and deactivates users (and groups, whose members' `groups` follow) at
/scim/v2 with a bearer token of its own.
`active=false` and DELETE deprovision exactly as `authserver users deprovision` does."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import REDIS_URL, fresh_postgres_database
from tests.stack import Stack, make_stack

USER = "alice"
SCIM_TOKEN = secrets.token_urlsafe(32)
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_JSON = "application/scim+json"


def idp_settings() -> dict[str, Any]:
    return {"scim_token_sha256": hashlib.sha256(SCIM_TOKEN.encode()).hexdigest()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = make_stack(tmp_path_factory.mktemp("scim"), idp_settings=idp_settings())
    yield s
    s.close()


def scim(stack: Stack, method: str, path: str, *, token: str | None = SCIM_TOKEN,
         base_url: str | None = None, **kw: Any) -> requests.Response:
    headers = {"Accept": SCIM_JSON, **kw.pop("headers", {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if "json" in kw:
        import json

        kw["data"] = json.dumps(kw.pop("json"))
        headers.setdefault("Content-Type", SCIM_JSON)
    return requests.request(method, (base_url or stack.issuer) + "/scim/v2" + path,
                            headers=headers, timeout=30, **kw)


def new_user(stack: Stack, username: str | None = None, **attrs: Any) -> dict[str, Any]:
    name = username or f"u{secrets.token_hex(4)}@acme.example"
    body = {"schemas": [USER_SCHEMA], "userName": name,
            "externalId": attrs.pop("externalId", "ext-" + secrets.token_hex(6)),
            "name": {"formatted": "New Person"}, "displayName": "New Person",
            "emails": [{"value": name, "type": "work", "primary": True}],
            "active": True, **attrs}
    resp = scim(stack, "POST", "/Users", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()  # type: ignore[no-any-return]


def assert_scim_error(resp: requests.Response, status: int, scim_type: str | None = None
                      ) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith(SCIM_JSON)
    body = resp.json()
    assert body["schemas"] == [ERROR_SCHEMA]
    assert body["status"] == str(status)
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body  # type: ignore[no-any-return]


def patch_active(stack: Stack, scim_id: str, value: Any, **kw: Any) -> requests.Response:
    return scim(stack, "PATCH", f"/Users/{scim_id}", json={
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "active", "value": value}]}, **kw)


def our_user(stack: Stack, subject: str) -> Any:
    from sqlalchemy import select

    from authserver.models import User

    with stack.services.db.session() as session:
        user = session.scalars(select(User).where(User.idp_issuer == stack.idp.issuer,
                                                  User.idp_subject == subject)).one()
        session.expunge(user)
        return user


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong", SCIM_TOKEN + "x"])
def test_bearer_token_required(stack: Stack, token: str | None) -> None:
    resp = scim(stack, "GET", "/Users", token=token)
    assert_scim_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_not_served_without_a_scim_token(tmp_path: Path) -> None:
    s = make_stack(tmp_path)
    try:
        assert scim(s, "GET", "/ServiceProviderConfig").status_code == 401
    finally:
        s.close()


# --- discovery ----------------------------------------------------------------------------------


def test_service_provider_config(stack: Stack) -> None:
    resp = scim(stack, "GET", "/ServiceProviderConfig")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith(SCIM_JSON)
    body = resp.json()
    assert body["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"]
    assert body["patch"]["supported"] is True
    assert body["filter"]["supported"] is True
    assert body["bulk"]["supported"] is False
    assert body["authenticationSchemes"][0]["type"] == "oauthbearertoken"


def test_resource_types_and_schemas(stack: Stack) -> None:
    types = scim(stack, "GET", "/ResourceTypes").json()
    assert [t["id"] for t in types["Resources"]] == ["User", "Group"]
    assert types["Resources"][0]["schema"] == USER_SCHEMA
    assert types["Resources"][1]["schema"] == "urn:ietf:params:scim:schemas:core:2.0:Group"
    assert scim(stack, "GET", "/ResourceTypes/Group").json()["endpoint"] == "/Groups"
    schemas = scim(stack, "GET", "/Schemas").json()
    [user] = [s for s in schemas["Resources"] if s["id"] == USER_SCHEMA]
    names = {a["name"] for a in user["attributes"]}
    assert {"userName", "name", "displayName", "emails", "active"} <= names
    assert scim(stack, "GET", "/Schemas/" + USER_SCHEMA).json()["id"] == USER_SCHEMA
    group = scim(stack, "GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group").json()
    assert {a["name"] for a in group["attributes"]} == {"displayName", "externalId", "members"}


# --- users --------------------------------------------------------------------------------------


def test_create_and_get(stack: Stack) -> None:
    created = new_user(stack, "dave@acme.example", externalId="00u4dave")
    assert created["schemas"] == [USER_SCHEMA]
    assert created["userName"] == "dave@acme.example"
    assert created["externalId"] == "00u4dave"
    assert created["active"] is True
    assert created["meta"]["resourceType"] == "User"
    assert created["meta"]["location"] == f"{stack.issuer}/scim/v2/Users/{created['id']}"
    got = scim(stack, "GET", f"/Users/{created['id']}")
    assert got.status_code == 200
    assert got.json() == created
    # The user signs in at the IdP later: the same person (iss + sub = externalId).
    user = our_user(stack, "00u4dave")
    assert user.active and user.email == "dave@acme.example" and user.tenant == "acme"


def test_create_duplicate_user_name(stack: Stack) -> None:
    created = new_user(stack)
    resp = scim(stack, "POST", "/Users", json={"schemas": [USER_SCHEMA],
                                                "userName": created["userName"],
                                                "externalId": "other"})
    assert_scim_error(resp, 409, "uniqueness")


@pytest.mark.parametrize("body", [
    {"schemas": [USER_SCHEMA]},
    {"schemas": [USER_SCHEMA], "userName": ""},
    {"schemas": [USER_SCHEMA], "userName": "x", "active": "maybe"},
])
def test_create_invalid_value(stack: Stack, body: dict[str, Any]) -> None:
    assert_scim_error(scim(stack, "POST", "/Users", json=body), 400, "invalidValue")


def test_create_invalid_syntax(stack: Stack) -> None:
    assert_scim_error(scim(stack, "POST", "/Users", json={"userName": "x"}), 400, "invalidSyntax")
    resp = scim(stack, "POST", "/Users", data="{", headers={"Content-Type": SCIM_JSON})
    assert_scim_error(resp, 400, "invalidSyntax")


def test_get_unknown(stack: Stack) -> None:
    assert_scim_error(scim(stack, "GET", "/Users/no-such-id"), 404)


def test_filter_by_user_name_and_external_id(stack: Stack) -> None:
    created = new_user(stack)
    for flt in (f'userName eq "{created["userName"]}"',
                f'username EQ "{created["userName"].upper()}"',
                f'externalId eq "{created["externalId"]}"'):
        listed = scim(stack, "GET", "/Users", params={"filter": flt}).json()
        assert listed["schemas"] == [LIST_SCHEMA]
        assert listed["totalResults"] == 1, flt
        assert listed["Resources"][0]["id"] == created["id"]
    none = scim(stack, "GET", "/Users", params={"filter": 'userName eq "nobody@x"'}).json()
    assert none["totalResults"] == 0 and none["Resources"] == []


@pytest.mark.parametrize("flt", ['userName co "a"', 'emails eq "a"', "userName eq a",
                                 'userName eq "a" or userName eq "b"'])
def test_unsupported_filter(stack: Stack, flt: str) -> None:
    assert_scim_error(scim(stack, "GET", "/Users", params={"filter": flt}), 400, "invalidFilter")


def test_put_replaces(stack: Stack) -> None:
    created = new_user(stack)
    resp = scim(stack, "PUT", f"/Users/{created['id']}", json={
        "schemas": [USER_SCHEMA], "userName": created["userName"],
        "externalId": created["externalId"], "displayName": "Renamed",
        "emails": [{"value": "renamed@acme.example", "primary": True}], "active": True})
    assert resp.status_code == 200, resp.text
    assert resp.json()["displayName"] == "Renamed"
    assert resp.json()["emails"][0]["value"] == "renamed@acme.example"
    assert our_user(stack, created["externalId"]).email == "renamed@acme.example"


def test_patch_other_attributes(stack: Stack) -> None:
    created = new_user(stack)
    resp = scim(stack, "PATCH", f"/Users/{created['id']}", json={
        "schemas": [PATCH_SCHEMA], "Operations": [
            {"op": "replace", "path": "displayName", "value": "Patched"},
            {"op": "replace", "path": 'emails[type eq "work"].value',
             "value": "patched@acme.example"}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["displayName"] == "Patched"
    assert our_user(stack, created["externalId"]).email == "patched@acme.example"


def test_patch_unsupported_path(stack: Stack) -> None:
    created = new_user(stack)
    resp = scim(stack, "PATCH", f"/Users/{created['id']}", json={
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "replace", "path": "roles", "value": ["admin"]}]})
    assert_scim_error(resp, 400, "invalidPath")


def test_patch_active_false_then_true(stack: Stack) -> None:
    created = new_user(stack)
    # Entra ID sends the value as a string and the op capitalised.
    resp = scim(stack, "PATCH", f"/Users/{created['id']}", json={
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["active"] is False
    user = our_user(stack, created["externalId"])
    assert not user.active and user.tokens_valid_after > 0
    # Okta sends a boolean, without a path.
    resp = scim(stack, "PATCH", f"/Users/{created['id']}", json={
        "schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": True}}]})
    assert resp.status_code == 200 and resp.json()["active"] is True
    assert our_user(stack, created["externalId"]).active


def test_delete(stack: Stack) -> None:
    created = new_user(stack)
    resp = scim(stack, "DELETE", f"/Users/{created['id']}")
    assert resp.status_code == 204
    assert_scim_error(scim(stack, "GET", f"/Users/{created['id']}"), 404)
    assert not our_user(stack, created["externalId"]).active


def test_reenabled_user_signs_in_again(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    subject = stack.idp.users["bob"]["sub"]
    created = new_user(stack, "bob@acme.example", externalId=subject)
    stack.browser("bob")
    assert patch_active(stack, created["id"], False).status_code == 200
    with pytest.raises(AssertionError):
        stack.browser("bob")  # refused while deprovisioned
    assert patch_active(stack, created["id"], True).status_code == 200
    # What is issued in the second of the deprovisioning counts as before it (fail closed).
    stack.shift_clock(monkeypatch, 2)
    stack.browser("bob")


def test_changes_are_audited(stack: Stack) -> None:
    created = new_user(stack)
    patch_active(stack, created["id"], False)
    events = [(e["event"], e["outcome"]) for e in stack.audit(50)]
    assert ("scim_user", "allowed") in events
    assert ("deprovision", "revoked") in events


# --- deprovisioning across instances ------------------------------------------------------------


@pytest.fixture
def shared_stack(tmp_path: Path) -> Iterator[Stack]:
    with fresh_postgres_database() as database_url:
        s = make_stack(tmp_path, database_url=database_url, redis_url=REDIS_URL,
                       idp_settings=idp_settings())
        try:
            yield s
        finally:
            s.close()


@pytest.mark.services
def test_patch_active_false_kills_tokens_on_another_instance(shared_stack: Stack) -> None:
    stack = shared_stack
    stack.signed_in_and_connected(USER, ("crm", "projects"))
    other = stack.second_instance()
    created = new_user(stack, "alice@acme.example", externalId=stack.idp.users[USER]["sub"])
    assertion, key = stack.edge_mint(USER)
    cap = stack.agent_exchange(assertion, key, base_url=other)
    assert cap.status_code == 200, cap.text
    capability = cap.json()["access_token"]
    assert stack.gateway(capability, key, "GET", "crm/deals/acme-123",
                         base_url=other).status_code == 200
    revoked_before = stack.crm.stats["revoked"]

    assert patch_active(stack, created["id"], False).status_code == 200

    again = stack.agent_exchange(assertion, key, base_url=other)
    assert again.status_code == 400 and again.json()["error"] == "invalid_request"
    call = stack.gateway(capability, key, "GET", "crm/deals/acme-123", base_url=other)
    assert call.status_code == 401
    assert stack.crm.stats["revoked"] == revoked_before + 1
    assert stack.crm.stats["active_grants"] == 0


# --- Groups (SCIM-06/07) ------------------------------------------------------------------------

GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"


def new_group(stack: Stack, name: str | None = None, members: list[str] | None = None,
              **attrs: Any) -> dict[str, Any]:
    body = {"schemas": [GROUP_SCHEMA], "displayName": name or f"g-{secrets.token_hex(4)}",
            **({"members": [{"value": m} for m in members]} if members is not None else {}),
            **attrs}
    resp = scim(stack, "POST", "/Groups", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Content-Type"].startswith(SCIM_JSON)
    assert resp.headers["Location"] == resp.json()["meta"]["location"]
    return resp.json()  # type: ignore[no-any-return]


def groups_of(stack: Stack, user: dict[str, Any]) -> list[str]:
    return list(our_user(stack, user["externalId"]).groups)


def test_group_create_get_and_members_feed_the_users_groups(stack: Stack) -> None:
    ann, ben = new_user(stack), new_user(stack)
    group = new_group(stack, "Finance", [ann["id"]], externalId="okta-00g1")
    assert group["schemas"] == [GROUP_SCHEMA] and group["displayName"] == "Finance"
    assert group["externalId"] == "okta-00g1"
    assert [m["value"] for m in group["members"]] == [ann["id"]]
    assert group["members"][0]["display"] == ann["userName"]
    assert group["meta"]["resourceType"] == "Group"
    got = scim(stack, "GET", f"/Groups/{group['id']}")
    assert got.status_code == 200 and got.json() == group
    # What Cedar sees as principal.groups at the next exchange (claim_map's groups).
    assert "Finance" in groups_of(stack, ann) and "Finance" not in groups_of(stack, ben)


def test_group_patch_members_add_remove_rename(stack: Stack) -> None:
    ann, ben = new_user(stack), new_user(stack)
    group = new_group(stack, f"Sales-{secrets.token_hex(3)}")
    path = f"/Groups/{group['id']}"

    def patch(*ops: dict[str, Any]) -> requests.Response:
        return scim(stack, "PATCH", path, json={"schemas": [PATCH_SCHEMA],
                                                "Operations": list(ops)})

    added = patch({"op": "add", "path": "members",
                   "value": [{"value": ann["id"]}, {"value": ben["id"]}]})
    assert added.status_code == 200, added.text
    assert {m["value"] for m in added.json()["members"]} == {ann["id"], ben["id"]}
    assert group["displayName"] in groups_of(stack, ben)
    # Okta's remove, then Entra ID's (a value list), then a rename.
    removed = patch({"op": "remove", "path": f'members[value eq "{ann["id"]}"]'})
    assert [m["value"] for m in removed.json()["members"]] == [ben["id"]]
    assert group["displayName"] not in groups_of(stack, ann)
    renamed = patch({"op": "Replace", "path": "displayName", "value": group["displayName"] + "X"})
    assert renamed.json()["displayName"] == group["displayName"] + "X"
    assert group["displayName"] + "X" in groups_of(stack, ben)
    assert group["displayName"] not in groups_of(stack, ben)
    gone = patch({"op": "Remove", "path": "members", "value": [{"value": ben["id"]}]})
    assert gone.json()["members"] == []
    assert group["displayName"] + "X" not in groups_of(stack, ben)


def test_group_put_replaces_and_delete_removes(stack: Stack) -> None:
    ann, ben = new_user(stack), new_user(stack)
    group = new_group(stack, f"Ops-{secrets.token_hex(3)}", [ann["id"]])
    put = scim(stack, "PUT", f"/Groups/{group['id']}", json={
        "schemas": [GROUP_SCHEMA], "displayName": group["displayName"],
        "members": [{"value": ben["id"]}]})
    assert put.status_code == 200 and [m["value"] for m in put.json()["members"]] == [ben["id"]]
    assert "externalId" not in put.json()
    assert group["displayName"] not in groups_of(stack, ann)
    assert group["displayName"] in groups_of(stack, ben)
    deleted = scim(stack, "DELETE", f"/Groups/{group['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert group["displayName"] not in groups_of(stack, ben)
    assert_scim_error(scim(stack, "GET", f"/Groups/{group['id']}"), 404)


def test_group_filter_and_list(stack: Stack) -> None:
    name = f"Legal-{secrets.token_hex(3)}"
    group = new_group(stack, name)
    found = scim(stack, "GET", "/Groups", params={"filter": f'displayName eq "{name.upper()}"'})
    assert found.status_code == 200
    body = found.json()
    assert body["schemas"] == [LIST_SCHEMA] and body["totalResults"] == 1
    assert body["Resources"][0]["id"] == group["id"]
    none = scim(stack, "GET", "/Groups", params={"filter": 'externalId eq "nope"'})
    assert none.json()["totalResults"] == 0
    assert_scim_error(scim(stack, "GET", "/Groups", params={"filter": 'members co "x"'}), 400,
                      "invalidFilter")


def test_group_refusals(stack: Stack) -> None:
    group = new_group(stack, f"Dup-{secrets.token_hex(3)}")
    body = {"schemas": [GROUP_SCHEMA], "displayName": group["displayName"].lower()}
    assert_scim_error(scim(stack, "POST", "/Groups", json=body), 409, "uniqueness")
    assert_scim_error(scim(stack, "POST", "/Groups", json={"displayName": "x"}), 400,
                      "invalidSyntax")
    assert_scim_error(scim(stack, "POST", "/Groups", json={
        "schemas": [GROUP_SCHEMA], "displayName": ""}), 400, "invalidValue")
    assert_scim_error(scim(stack, "POST", "/Groups", json={
        "schemas": [GROUP_SCHEMA], "displayName": "ghosts",
        "members": [{"value": "not-a-user-of-this-idp"}]}), 400, "invalidValue")
    assert_scim_error(scim(stack, "PATCH", f"/Groups/{group['id']}", json={
        "schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "owner",
                                                   "value": "x"}]}), 400, "invalidPath")
    assert_scim_error(scim(stack, "GET", "/Groups/" + "0" * 32), 404)
    resp = scim(stack, "GET", f"/Groups/{group['id']}", token="wrong")
    assert_scim_error(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="scim"'
    # Nothing of the refused requests was kept.
    assert scim(stack, "GET", "/Groups", params={"filter": 'displayName eq "ghosts"'}
                ).json()["totalResults"] == 0


def test_group_changes_are_audited(stack: Stack) -> None:
    from tests.stack import correlation

    cid = correlation()
    resp = scim(stack, "POST", "/Groups", headers={"X-Request-ID": cid}, json={
        "schemas": [GROUP_SCHEMA], "displayName": f"Audit-{secrets.token_hex(3)}"})
    assert resp.status_code == 201
    [record] = stack.audit_for(cid)
    assert record["event"] == "scim_group" and record["outcome"] == "allowed"
    assert record["detail"]["action"] == "create" and record["detail"]["idp"] == "corp"

"""SCIM discovery (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas describe
exactly what authserver/scim.py (Users) and authserver/scim_groups.py (Groups) serve
(docs/standards.md SCIM-05). Split from authserver/scim.py.
"""

from __future__ import annotations

from typing import Any

from authserver.scim import (
    MAX_PAGE,
    RESOURCE_TYPE_SCHEMA,
    SCHEMA_SCHEMA,
    SPC_SCHEMA,
    USER_SCHEMA,
)
from authserver.scim_groups import GROUP_SCHEMA


def service_provider_config(base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SPC_SCHEMA],
        "documentationUri": "https://datatracker.ietf.org/doc/html/rfc7644",
        "patch": {"supported": True},
        "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": True, "maxResults": MAX_PAGE},
        "changePassword": {"supported": False},
        "sort": {"supported": False},
        "etag": {"supported": False},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "Bearer token",
            "description": "The IdP's SCIM token (Authorization: Bearer)", "primary": True,
        }],
        "meta": {"resourceType": "ServiceProviderConfig",
                 "location": f"{base_url}/ServiceProviderConfig"},
    }


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [{"schemas": [RESOURCE_TYPE_SCHEMA], "id": name, "name": name,
             "endpoint": f"/{name}s", "description": description, "schema": schema,
             "meta": {"resourceType": "ResourceType",
                      "location": f"{base_url}/ResourceTypes/{name}"}}
            for name, description, schema in (("User", "User Account", USER_SCHEMA),
                                              ("Group", "Group", GROUP_SCHEMA))]


def schemas(base_url: str) -> list[dict[str, Any]]:
    def attr(name: str, type_: str = "string", **kw: Any) -> dict[str, Any]:
        return {"name": name, "type": type_, "multiValued": False, "required": False,
                "caseExact": False, "mutability": "readWrite", "returned": "default",
                "uniqueness": "none", **kw}

    return [{
        "schemas": [SCHEMA_SCHEMA], "id": USER_SCHEMA, "name": "User",
        "description": "User Account (the attributes this server stores)",
        "attributes": [
            attr("userName", required=True, uniqueness="server"),
            attr("externalId", caseExact=True),
            attr("name", "complex", subAttributes=[attr("formatted")]),
            attr("displayName"),
            attr("emails", "complex", multiValued=True, subAttributes=[
                attr("value"), attr("type"), attr("primary", "boolean")]),
            attr("active", "boolean"),
        ],
        "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{USER_SCHEMA}"},
    }, {
        "schemas": [SCHEMA_SCHEMA], "id": GROUP_SCHEMA, "name": "Group",
        "description": "Group (its members' groups carry its displayName)",
        "attributes": [
            attr("displayName", required=True, uniqueness="server"),
            attr("externalId", caseExact=True),
            attr("members", "complex", multiValued=True, subAttributes=[
                attr("value", caseExact=True, mutability="immutable"),
                attr("display", mutability="readOnly")]),
        ],
        "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{GROUP_SCHEMA}"},
    }]

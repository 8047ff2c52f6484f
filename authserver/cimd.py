"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP's
preferred client registration): a `client_id` that is an https URL names the client's own
metadata document, which we fetch instead of requiring registration.

The rules (docs/standards.md CIMD-01..06):

- **The URL** (§3): `https`, a host, a path other than `/`, no dot segments (also
  percent-encoded), no fragment, no userinfo; a port may be given. A query is SHOULD NOT in
  the draft and refused here. At most 255 characters (our client id column).
- **The fetch** (§4, §6.5, §6.6): through authserver.outbound (the special-use address
  rule at connect time, no redirects, 200 only, at most `CIMD_MAX_BYTES`), cached for the
  document's Cache-Control lifetime within the fetcher's floor and ceiling; an error or a
  refused document is never cached (§4.3).
- **The document** (§4.1): a JSON object (a repeated member is refused) whose `client_id`
  is the URL by simple string comparison; no `client_secret` or `client_secret_expires_at`;
  `token_endpoint_auth_method` is `none` (the default here: a public client, PKCE required
  as always) or `private_key_jwt` with `jwks` or `jwks_uri`; any method built on a shared
  secret is refused. Grants: `authorization_code` and `refresh_token` only (nobody vetted a
  self-published client for client credentials or the agent exchange). The rest is validated
  as registration metadata is (authserver.clients, DCR-02..04): redirect URIs are then
  matched exactly, with the RFC 8252 §7.3 loopback port rule, as for registered clients.
- **The client** (§6.2, §6.4): the document becomes a `clients` row (grants and codes refer
  to it), marked `registration: cimd`; its metadata follows the document each time it is
  fetched again. A row an admin created for such a URL (pre-registration, §6.11) is used
  as it is and never fetched. The consent page shows the URL's host, marked unverified.

Every refusal is `InvalidClientError` (at the authorization endpoint a 400 page, never a
redirect: GEN-04; at the token endpoint 401, with one description for every failure).
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from authserver.clients import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    validate_client_metadata,
)
from authserver.encoding import loads_strict_json
from authserver.errors import InvalidClientError, OAuthError
from authserver.models import Client
from authserver.outbound import FetchResult, Outbound, OutboundError

if TYPE_CHECKING:
    from authserver.client_cache import RegistryCache
    from authserver.clients import ClientRecord

#: §6.6: "The recommended maximum response size for client metadata documents is 5 kilobytes."
CIMD_MAX_BYTES = 5 * 1024
CIMD_URL_MAX_LENGTH = 255
CIMD_AUTH_METHODS = ("none", "private_key_jwt")
CIMD_GRANT_TYPES = (GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN)
#: Marks the `clients` rows made from a document (`attributes["registration"]`).
REGISTRATION = "cimd"

_DOT_SEGMENT = re.compile(r"^\.{1,2}$")


def is_url_client_id(client_id: str) -> bool:
    """True for a client id that is meant as a URL (any scheme spelled like http(s)); those
    are never looked up as registered ids unless an admin created the row."""
    return client_id[:8].lower().startswith(("https://", "http://"))


def check_client_id_url(url: str) -> None:
    """§3; raises `InvalidClientError`."""
    def refuse(why: str) -> InvalidClientError:
        return InvalidClientError("client_id is not a valid client metadata document URL",
                                  debug=f"cimd url: {why}")

    if len(url) > CIMD_URL_MAX_LENGTH or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7e
                                             for c in url):
        raise refuse("too long or not printable ASCII")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise refuse("malformed") from e
    if parts.scheme != "https" or not url.startswith("https://"):
        raise refuse("not https")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise refuse("no host, or userinfo")
    if port == 0:
        raise refuse("port 0")
    if "#" in url:
        raise refuse("fragment")
    if "?" in url:
        raise refuse("query")
    if parts.path in ("", "/"):
        raise refuse("no path")
    if any(_DOT_SEGMENT.match(unquote(segment)) for segment in parts.path.split("/")):
        raise refuse("dot segment")


def parse_document(body: bytes, url: str, *, scopes: tuple[str, ...]) -> dict[str, Any]:
    """§4.1: the validated client metadata of the document at `url`; raises
    `InvalidClientError`."""
    def refuse(why: str) -> InvalidClientError:
        return InvalidClientError("The client metadata document is not acceptable",
                                  debug=f"cimd document: {why}")

    try:
        doc = loads_strict_json(body)
    except ValueError as e:  # UnicodeDecodeError is one
        raise refuse(f"not JSON, or not strict JSON: {e}") from e
    if not isinstance(doc, dict):
        raise refuse("not a JSON object")
    if doc.get("client_id") != url:
        raise refuse("client_id is not the document URL")
    if "client_secret" in doc or "client_secret_expires_at" in doc:
        raise refuse("client_secret is not allowed")
    method = doc.get("token_endpoint_auth_method", "none")
    if method not in CIMD_AUTH_METHODS:
        raise refuse("token_endpoint_auth_method must be none or private_key_jwt")
    grants = doc.get("grant_types", [GRANT_AUTHORIZATION_CODE])
    if not isinstance(grants, list) or any(g not in CIMD_GRANT_TYPES for g in grants):
        raise refuse("grant_types beyond authorization_code and refresh_token")
    raw = {k: v for k, v in doc.items() if k != "client_id"}
    raw["token_endpoint_auth_method"] = method
    try:
        return validate_client_metadata(raw, scopes=scopes)
    except OAuthError as e:
        raise refuse(f"metadata: {e.description}") from e


class CimdResolver:
    """Turns a URL client id into its `clients` row (fetching and caching its document)."""

    def __init__(self, outbound: Outbound, *, scopes: tuple[str, ...]) -> None:
        self.outbound = outbound
        self._scopes = tuple(scopes)
        self._documents = outbound.cache(self._parse, max_bytes=CIMD_MAX_BYTES)

    def _parse(self, result: FetchResult) -> dict[str, Any]:
        return parse_document(result.body, result.url, scopes=self._scopes)

    def metadata(self, url: str) -> dict[str, Any]:
        """The validated metadata of `url`'s document; raises `InvalidClientError`."""
        check_client_id_url(url)
        try:
            return copy.deepcopy(self._documents.get(url))
        except OutboundError as e:
            raise InvalidClientError("The client metadata document could not be retrieved",
                                     debug=f"cimd fetch: {e.reason}") from e

    def client(self, session: Session, client_id: str, *, now: int) -> Client:
        """The row for `client_id`: an admin's as it is, else one kept in step with the
        document. Raises `InvalidClientError`."""
        row = session.get(Client, client_id)
        if row is not None and row.attributes.get("registration") != REGISTRATION:
            return row  # pre-registered by an admin (§6.11): never fetched
        metadata = self.metadata(client_id)
        method = metadata["token_endpoint_auth_method"]
        if row is not None:
            if row.client_metadata != metadata or row.token_endpoint_auth_method != method:
                row.client_metadata = metadata
                row.token_endpoint_auth_method = method
                session.flush()
            return row
        row = Client(client_id=client_id, secret_hash=None, token_endpoint_auth_method=method,
                     client_metadata=metadata, attributes={"registration": REGISTRATION},
                     client_id_issued_at=now)
        try:
            with session.begin_nested():  # another request may be creating it right now
                session.add(row)
        except IntegrityError:
            existing = session.get(Client, client_id)
            if existing is None:
                raise
            return existing
        return row


def find_client(session: Session, client_id: str | None, *, cimd: CimdResolver | None,
                now: int) -> Client | None:
    """The one client lookup (authorization and token endpoints): a registered id, or a URL
    id through `cimd`. None: no such client; raises `InvalidClientError` when a URL id's
    document is refused."""
    if not isinstance(client_id, str) or not client_id or len(client_id) > CIMD_URL_MAX_LENGTH:
        return None
    if cimd is not None and is_url_client_id(client_id):
        return cimd.client(session, client_id, now=now)
    return session.get(Client, client_id)


def find_client_record(session: Session, client_id: str | None, *, cimd: CimdResolver | None,
                       registry: RegistryCache, now: int, generation: str | None = None
                       ) -> ClientRecord | None:
    """`find_client`, with a registered id's client from `registry`'s read-only snapshots
    (authserver.client_cache: no SQL while the shared generation holds; `generation` is one
    already read). A URL id is `find_client`'s as always: its row follows a fetched document."""
    if isinstance(client_id, str) and client_id and len(client_id) <= CIMD_URL_MAX_LENGTH \
            and not (cimd is not None and is_url_client_id(client_id)):
        return registry.client(session, client_id, now=now, generation=generation)
    return find_client(session, client_id, cimd=cimd, now=now)

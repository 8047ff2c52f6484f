"""SQL models (SQLAlchemy 2.0, typed). The database is the source of truth.

Times are integer Unix seconds supplied by the caller (`now`), never read here.
Secrets are never stored in usable form: client secrets, codes and our refresh tokens as
SHA-256 hashes, private keys and downstream tokens envelope-encrypted (authserver.kms).
"""

from authserver.models.approvals import Approval
from authserver.models.audit import AuditChainHead, AuditEvent
from authserver.models.base import Base
from authserver.models.broker import Connection
from authserver.models.oauth import (
    AgentRevocation,
    AuthorizationCode,
    Client,
    Grant,
    KeyCheck,
    RefreshToken,
    RevokedToken,
    SigningKey,
    User,
)
from authserver.models.resources import ResourceServer
from authserver.models.scim import ScimGroup, ScimGroupMember, ScimUser
from authserver.models.ssf import SsfStream

__all__ = [
    "AgentRevocation",
    "Approval",
    "AuditChainHead",
    "AuditEvent",
    "AuthorizationCode",
    "Base",
    "Client",
    "Connection",
    "Grant",
    "KeyCheck",
    "RefreshToken",
    "ResourceServer",
    "RevokedToken",
    "ScimGroup",
    "ScimGroupMember",
    "ScimUser",
    "SigningKey",
    "SsfStream",
    "User",
]

"""Resource servers an admin registered (`authserver resources add`, `POST /admin/resources`).

One row per resource, keyed by its URI in `authserver.urls.normalize_resource` form, so two
spellings of one URI cannot both be registered. `token_types` says which access tokens the
resource accepts: `dpop` (DPoP-bound), `bearer` (unbound), or both. `introspection_client_id`
is the client created for it to call `/introspect` (its `resources` attribute names this URI);
it is deleted with the resource.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from authserver.models.base import Base


class ResourceServer(Base):
    __tablename__ = "resource_servers"

    uri: Mapped[str] = mapped_column(String(2048), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    scopes: Mapped[list[str]] = mapped_column(default=list)
    token_types: Mapped[list[str]] = mapped_column(default=list)
    introspection_client_id: Mapped[str | None] = mapped_column(
        ForeignKey("clients.client_id", ondelete="SET NULL"))
    created_at: Mapped[int] = mapped_column(BigInteger)

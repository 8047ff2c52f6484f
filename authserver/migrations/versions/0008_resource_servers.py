"""resource_servers: resource servers an admin registered (`authserver resources add`, the
admin API), keyed by the normalised URI, with a display name, scopes, the token kinds they
accept (`dpop`, `bearer`) and the client created for them to introspect (issue 14).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resource_servers',
    sa.Column('uri', sa.String(length=2048), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('token_types', sa.JSON(), nullable=False),
    sa.Column('introspection_client_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['introspection_client_id'], ['clients.client_id'],
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('uri'),
    )


def downgrade() -> None:
    op.drop_table('resource_servers')

"""scim_users: the users an IdP provisioned over SCIM 2.0 (RFC 7643 §4.1), one row per
(IdP, user), with the SCIM id we assigned and the IdP's userName (unique per IdP, compared
case-insensitively), externalId and displayName (issue 15, item 2).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scim_users',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('idp', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('user_name', sa.String(length=255), nullable=False),
    sa.Column('user_name_key', sa.String(length=255), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('display_name', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idp', 'user_id', name='uq_scim_users_user'),
    sa.UniqueConstraint('idp', 'user_name_key', name='uq_scim_users_user_name'),
    )


def downgrade() -> None:
    op.drop_table('scim_users')

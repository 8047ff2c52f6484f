"""scim_groups and scim_group_members: SCIM 2.0 groups an IdP provisions (RFC 7643 §4.2),
displayName unique per IdP, members among that IdP's SCIM users (issue 15).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scim_groups',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('idp', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=255), nullable=False),
    sa.Column('display_name_key', sa.String(length=255), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idp', 'display_name_key', name='uq_scim_groups_display_name'),
    )
    op.create_table('scim_group_members',
    sa.Column('group_id', sa.String(length=64), nullable=False),
    sa.Column('scim_user_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['scim_groups.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scim_user_id'], ['scim_users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'scim_user_id'),
    )


def downgrade() -> None:
    op.drop_table('scim_group_members')
    op.drop_table('scim_groups')

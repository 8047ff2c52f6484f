"""refresh_tokens.successor_hash, rotated_jkt: what a rotation produced and which DPoP key (if
any) asked for it, so that the same client retrying within the reuse interval gets the same
successor back (issue 13, item 6). The successor itself is never stored: it is derived from the
presented token and a server secret (authserver/refresh_tokens.py); only its hash is kept.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('successor_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('rotated_jkt', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('rotated_jkt')
        batch_op.drop_column('successor_hash')

"""connections.access_obtained_at: when the current platform access token was obtained, so the
broker knows the token's own lifetime and never refreshes a short-lived token on every call
(issue 16). Existing rows are backfilled from updated_at, which the broker has so far written
exactly when it stored new tokens (connect, refresh) or parked the connection.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('access_obtained_at', sa.BigInteger(), nullable=True))
    op.execute("UPDATE connections SET access_obtained_at = updated_at")


def downgrade() -> None:
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_column('access_obtained_at')

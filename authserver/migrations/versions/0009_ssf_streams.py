"""ssf_streams: the Shared Signals streams we receive, one per IdP (`authserver ssf streams
add`): stream id, push or poll delivery, the transmitter's endpoints, events requested and
delivered, the status the transmitter last reported, and a pending verification's state
hash (issue 15).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ssf_streams',
    sa.Column('idp', sa.String(length=64), nullable=False),
    sa.Column('stream_id', sa.String(length=255), nullable=False),
    sa.Column('delivery', sa.String(length=8), nullable=False),
    sa.Column('poll_url', sa.String(length=2048), nullable=True),
    sa.Column('configuration_endpoint', sa.String(length=2048), nullable=True),
    sa.Column('status_endpoint', sa.String(length=2048), nullable=True),
    sa.Column('verification_endpoint', sa.String(length=2048), nullable=True),
    sa.Column('token_env', sa.String(length=255), nullable=True),
    sa.Column('events_requested', sa.JSON(), nullable=False),
    sa.Column('events_delivered', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.String(length=255), nullable=True),
    sa.Column('status_at', sa.BigInteger(), nullable=False),
    sa.Column('verification_state_sha256', sa.String(length=64), nullable=True),
    sa.Column('verification_requested_at', sa.BigInteger(), nullable=True),
    sa.Column('verified_at', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('idp'),
    sa.UniqueConstraint('stream_id'),
    )


def downgrade() -> None:
    op.drop_table('ssf_streams')

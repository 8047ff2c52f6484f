"""audit_events.shard and .shard_seq: the audit log becomes AUDIT_SHARDS hash chains plus an
anchor chain (shard 0), so appends no longer queue behind one head row (issue 18).

Existing records become shard 1 at their own position (shard_seq = seq): shard 1 keeps the
all-zero genesis, so their chain still verifies. Head rows are added for shard 0 (anchors)
and shards 2..8, each at its own genesis hash (authserver.models.audit.shard_genesis). On
PostgreSQL, the sequence `audit_event_seq` numbers records globally from max(seq) + 1.

Downgrade is refused while any record lies outside shard 1: one chain cannot hold them.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# Frozen here, as of this revision (authserver.audit.AUDIT_SHARDS may grow: appends create
# missing head rows themselves).
SHARDS = 8


def _genesis(shard: int) -> str:
    if shard == 1:
        return "0" * 64
    return hashlib.sha256(f"authserver-audit-shard:{shard}".encode("ascii")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shard', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('shard_seq', sa.BigInteger(), nullable=True))
    op.execute("UPDATE audit_events SET shard = 1, shard_seq = seq")
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.alter_column('shard', existing_type=sa.Integer(), nullable=False)
        batch_op.alter_column('shard_seq', existing_type=sa.BigInteger(), nullable=False)
        batch_op.create_unique_constraint('uq_audit_events_shard_seq', ['shard', 'shard_seq'])
    conn = op.get_bind()
    present = {int(i) for i in
               conn.execute(sa.text("SELECT id FROM audit_chain_head")).scalars()}
    heads = sa.table('audit_chain_head', sa.column('id', sa.Integer),
                     sa.column('seq', sa.BigInteger), sa.column('head_hash', sa.String))
    missing = [{"id": i, "seq": 0, "head_hash": _genesis(i)}
               for i in range(SHARDS + 1) if i not in present]
    if missing:
        op.bulk_insert(heads, missing)
    if conn.dialect.name == "postgresql":
        start = int(conn.execute(sa.text(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_events")).scalar_one())
        op.execute(f"CREATE SEQUENCE audit_event_seq START WITH {start}")


def downgrade() -> None:
    conn = op.get_bind()
    outside = conn.execute(sa.text(
        "SELECT COUNT(*) FROM audit_events WHERE shard <> 1")).scalar_one()
    if outside:
        raise RuntimeError(f"{outside} audit records lie outside shard 1: one chain cannot "
                           "hold them; keep revision 0011")
    if conn.dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS audit_event_seq")
    op.execute("DELETE FROM audit_chain_head WHERE id <> 1")
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_audit_events_shard_seq', type_='unique')
        batch_op.drop_column('shard_seq')
        batch_op.drop_column('shard')

"""connections.account_label and connections.sites: who the user is at the platform (as the
platform reported it at connect time) for the connections page (issue 12), and every site an
Atlassian grant covers (accessible-resources), so the gateway refuses a site the user did not
authorise (issue 19). Both NULL for existing rows: "not reported" and "reconnect to list the
sites".

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('account_label', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('sites', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_column('sites')
        batch_op.drop_column('account_label')

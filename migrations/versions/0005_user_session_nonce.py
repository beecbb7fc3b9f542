"""users: a random session nonce instead of a version counter, and ids never reused

A removed user's signed cookie named a user id and a version counter; SQLite handed the id to the next user added,
whose counter could match, so the old cookie signed in as someone else. Ids now come from AUTOINCREMENT and the
cookie carries a random nonce. Existing browser sessions end (everyone signs in again once).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 07:20:00

"""
import secrets

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None, recreate='always',
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.add_column(sa.Column('session_nonce', sa.String(length=32), nullable=False, server_default=''))
        batch_op.drop_column('auth_version')
    users = sa.table('users', sa.column('id', sa.Integer), sa.column('session_nonce', sa.String))
    connection = op.get_bind()
    for (user_id,) in connection.execute(sa.select(users.c.id)).fetchall():
        connection.execute(users.update().where(users.c.id == user_id).values(session_nonce=secrets.token_hex(16)))
    with op.batch_alter_table('users', schema=None, recreate='always',
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.alter_column('session_nonce', server_default=None)


def downgrade():
    with op.batch_alter_table('users', schema=None, recreate='always') as batch_op:
        batch_op.add_column(sa.Column('auth_version', sa.Integer(), nullable=False, server_default='1'))
        batch_op.drop_column('session_nonce')
    with op.batch_alter_table('users', schema=None, recreate='always') as batch_op:
        batch_op.alter_column('auth_version', server_default=None)

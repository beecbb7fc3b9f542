"""benchmark runs and their per-level results

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 06:45:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('benchmark_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('session_name', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('progress', sa.JSON(), nullable=False),
    sa.Column('where', sa.String(length=8), nullable=False),
    sa.Column('base_url', sa.String(length=300), nullable=True),
    sa.Column('model_id', sa.String(length=200), nullable=False),
    sa.Column('served_name', sa.String(length=100), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=True),
    sa.Column('plan', sa.String(length=64), nullable=True),
    sa.Column('region', sa.String(length=32), nullable=True),
    sa.Column('gpu', sa.String(length=64), nullable=True),
    sa.Column('gpus', sa.Integer(), nullable=True),
    sa.Column('hourly_price', sa.Double(), nullable=False),
    sa.Column('max_model_len', sa.Integer(), nullable=True),
    sa.Column('vllm_version', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('benchmark_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_benchmark_runs_session_id'), ['session_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_benchmark_runs_status'), ['status'], unique=False)

    op.create_table('benchmark_levels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('max_concurrency', sa.Integer(), nullable=True),
    sa.Column('request_rate', sa.Double(), nullable=True),
    sa.Column('results', sa.JSON(), nullable=False),
    sa.Column('requests', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['benchmark_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('benchmark_levels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_benchmark_levels_run_id'), ['run_id'], unique=False)


def downgrade():
    with op.batch_alter_table('benchmark_levels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_benchmark_levels_run_id'))
    op.drop_table('benchmark_levels')
    with op.batch_alter_table('benchmark_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_benchmark_runs_status'))
        batch_op.drop_index(batch_op.f('ix_benchmark_runs_session_id'))
    op.drop_table('benchmark_runs')

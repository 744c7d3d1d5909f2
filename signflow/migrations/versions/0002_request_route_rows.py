"""A request's route as rows: one per group, in signing order

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 01:10:00

Release 0.1 kept the route as a comma-separated string of group ids
(`requests.route`, empty for a one-group route). Each is copied into
`request_route` rows before the column goes.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_route",
        sa.Column("request_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_request_route_request",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["oncall_groups.id"], name="fk_request_route_group"),
        sa.PrimaryKeyConstraint("request_id", "position", name="pk_request_route"),
    )
    conn = op.get_bind()
    route = sa.table("request_route", sa.column("request_id", sa.Integer),
                     sa.column("position", sa.Integer), sa.column("group_id", sa.Integer))
    rows: list[dict[str, int]] = []
    for request_id, text, group_id in conn.execute(sa.text("SELECT id, route, group_id FROM requests")):
        groups = [int(g) for g in (text or "").split(",") if g.strip()] or [group_id]
        rows.extend({"request_id": request_id, "position": i, "group_id": g}
                    for i, g in enumerate(groups))
    if rows:
        op.bulk_insert(route, rows)
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("route")


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("route", sa.String(length=200), nullable=False, server_default=""))
    conn = op.get_bind()
    steps: dict[int, list[int]] = {}
    for request_id, group_id in conn.execute(
            sa.text("SELECT request_id, group_id FROM request_route ORDER BY request_id, position")):
        steps.setdefault(request_id, []).append(group_id)
    for request_id, groups in steps.items():
        conn.execute(sa.text("UPDATE requests SET route = :route WHERE id = :id"),
                     {"route": ",".join(map(str, groups)), "id": request_id})
    op.drop_table("request_route")

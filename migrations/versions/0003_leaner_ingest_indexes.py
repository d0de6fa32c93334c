"""leaner indexes on labels and structure_elements

* ``labels``: the partial unique index of ``ok`` labels is keyed ``(level_id, structure_id)``
  and so also serves "structures labelled at level L" scans; the separate
  ``(level_id, status, structure_id)`` index goes.
* ``structure_elements``: keyed ``(z, structure_id)`` only (the element filters' access
  path); the ``(structure_id, z)`` key goes. Per-structure composition is read from
  ``structures`` (``nelements``, ``numbers``) or by probing ``(z, structure_id)``.

One B-tree fewer on each of the two tables written hardest at ingest.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_OK = {"sqlite_where": sa.text("status = 'ok'"), "postgresql_where": sa.text("status = 'ok'")}


def _rebuild_elements_sqlite(key: tuple[str, str]) -> None:
    """SQLite cannot change a WITHOUT ROWID table's key in place: copy into a new table."""
    op.create_table(
        "structure_elements_new",
        sa.Column("structure_id", _ID, nullable=False),
        sa.Column("z", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_structure_elements"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO structure_elements_new (structure_id, z, count) "
               "SELECT structure_id, z, count FROM structure_elements")
    op.drop_table("structure_elements")
    op.rename_table("structure_elements_new", "structure_elements")


def upgrade() -> None:
    op.drop_index("ix_labels_level_id_status_structure_id", table_name="labels")
    op.drop_index("uq_labels_ok", table_name="labels", **_OK)
    op.create_index("uq_labels_ok", "labels", ["level_id", "structure_id"], unique=True, **_OK)
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_structure_elements_z_structure_id", table_name="structure_elements")
        _rebuild_elements_sqlite(("z", "structure_id"))
    else:
        op.drop_index("ix_structure_elements_z_structure_id", table_name="structure_elements")
        op.drop_constraint("pk_structure_elements", "structure_elements", type_="primary")
        op.create_primary_key("pk_structure_elements", "structure_elements",
                              ["z", "structure_id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_elements_sqlite(("structure_id", "z"))
    else:
        op.drop_constraint("pk_structure_elements", "structure_elements", type_="primary")
        op.create_primary_key("pk_structure_elements", "structure_elements",
                              ["structure_id", "z"])
    op.create_index("ix_structure_elements_z_structure_id", "structure_elements",
                    ["z", "structure_id"])
    op.drop_index("uq_labels_ok", table_name="labels", **_OK)
    op.create_index("uq_labels_ok", "labels", ["structure_id", "level_id"], unique=True, **_OK)
    op.create_index("ix_labels_level_id_status_structure_id", "labels",
                    ["level_id", "status", "structure_id"])

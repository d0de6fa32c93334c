"""access paths that follow the answer: element sets, and labels by (level, composition)

Two filters read far more rows than they return once a registry holds millions of
structures (benchmarks/scale.py):

* an element condition (``elements HAS ALL "C","N"``) was an ``EXISTS`` over
  ``composition_elements``, whose ``z`` ranges for common elements cover most compositions.
  Now each composition points at its set of elements (``compositions.element_set_id``,
  indexed with ``n_atoms``), and ``element_sets`` holds one row per distinct set with the set
  as bit masks of atomic numbers: the element test runs over the few element-set rows, then
  range scans fetch the compositions of the matching sets;
* a level combined with composition conditions met only at ``structures``: every structure of
  the matching compositions was visited to keep the few labelled at the level. Now labels
  carry their structure's composition (``labels.composition_id``, written with the label; a
  structure's composition never changes) and the partial index
  ``(level_id, composition_id, structure_id) WHERE status = 'ok'`` answers the combination
  from labels alone.

Existing rows are filled in (element sets from ``composition_elements``; label compositions
from their structures). On PostgreSQL ``composition_id`` gets a larger statistics sample.
Downgrade drops the columns, the index and the table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_STATISTICS = 2000  # ANALYZE samples 300 rows per unit: 600,000 rows
_OK = {"postgresql_where": sa.text("status = 'ok'"), "sqlite_where": sa.text("status = 'ok'")}
# The element-set masks of each composition: bit z-1 of lo (Z 1-63), bit z-64 of hi. A sum of
# distinct powers of two is their bitwise OR (each element appears once per composition).
_MASKS = ("SELECT c.id AS cid, "
          "COALESCE(SUM(CASE WHEN e.z < 64 THEN CAST(1 AS BIGINT) << (e.z - 1) END), 0) AS lo, "
          "COALESCE(SUM(CASE WHEN e.z >= 64 THEN CAST(1 AS BIGINT) << (e.z - 64) END), 0) "
          "AS hi, COUNT(e.z) AS n FROM compositions c "
          "LEFT JOIN composition_elements e ON e.composition_id = c.id GROUP BY c.id")


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _append_only(create: bool) -> None:
    """The append-only triggers of migrations 0002 / 0005, for ``element_sets``."""
    table = "element_sets"
    for name, when in (("no_delete", "DELETE"), ("fixed_id", "UPDATE OF id")):
        if not create:
            op.execute(f"DROP TRIGGER nnp_{table}_{name}" + ("" if _sqlite() else f" ON {table}"))
        elif _sqlite():
            cond = " WHEN OLD.id IS NOT NEW.id" if name == "fixed_id" else ""
            op.execute(f"CREATE TRIGGER nnp_{table}_{name} BEFORE {when} ON {table}{cond} "
                       f"BEGIN SELECT RAISE(ABORT, 'table \"{table}\" is append-only "
                       "(other rows reference its rows by id)'); END")
        elif name == "no_delete":
            op.execute(f"CREATE TRIGGER nnp_{table}_no_delete BEFORE DELETE OR TRUNCATE ON "
                       f"{table} FOR EACH STATEMENT EXECUTE FUNCTION nnp_append_only()")
        else:
            op.execute(f"CREATE TRIGGER nnp_{table}_fixed_id BEFORE UPDATE OF id ON {table} "
                       "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
                       "EXECUTE FUNCTION nnp_append_only()")


def _add_not_null(table: str, column: str) -> None:
    """Add ``table.column`` (an id) NOT NULL; filled by the caller before it is enforced
    (SQLite can only add a NOT NULL column with a default)."""
    if _sqlite():
        op.add_column(table, sa.Column(column, _ID, nullable=False,
                                       server_default=sa.text("0")))
    else:
        op.add_column(table, sa.Column(column, _ID, nullable=True))


def _enforce(table: str, column: str) -> None:
    if not _sqlite():
        op.alter_column(table, column, existing_type=_ID, nullable=False)


def upgrade() -> None:
    op.create_table(
        "element_sets",
        sa.Column("id", _ID, nullable=False),
        sa.Column("mask_lo", sa.BigInteger(), nullable=False),
        sa.Column("mask_hi", sa.BigInteger(), nullable=False),
        sa.Column("nelements", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_element_sets"),
        sa.UniqueConstraint("mask_lo", "mask_hi", name="uq_element_sets_mask_lo_mask_hi"),
    )
    op.execute(f"INSERT INTO element_sets (mask_lo, mask_hi, nelements) SELECT DISTINCT lo, hi, "
               f"n FROM ({_MASKS}) m ORDER BY lo, hi")
    _add_not_null("compositions", "element_set_id")
    op.execute(f"UPDATE compositions SET element_set_id = s.id FROM ({_MASKS}) m "
               "JOIN element_sets s ON s.mask_lo = m.lo AND s.mask_hi = m.hi "
               "WHERE m.cid = compositions.id")
    _enforce("compositions", "element_set_id")
    op.create_index("ix_compositions_element_set_id_n_atoms_id", "compositions",
                    ["element_set_id", "n_atoms", "id"])

    _add_not_null("labels", "composition_id")
    if not _sqlite():  # the reference check would re-verify every row; none changes
        op.execute("ALTER TABLE labels DISABLE TRIGGER nnp_labels_refs_update")
    op.execute("UPDATE labels SET composition_id = s.composition_id FROM structures s "
               "WHERE s.id = labels.structure_id")
    if not _sqlite():
        op.execute("ALTER TABLE labels ENABLE TRIGGER nnp_labels_refs_update")
    _enforce("labels", "composition_id")
    op.create_index("ix_labels_ok_level_composition", "labels",
                    ["level_id", "composition_id", "structure_id"], **_OK)
    if not _sqlite():
        # Structures (and labels) per composition vary by orders of magnitude; the default
        # sample of ANALYZE saw ~24,000 of 550,000 compositions at 10 M structures, so the
        # planner expected 425 structures per composition (actual ~18) and scanned every
        # composition rather than probe the element-set index.
        for table in ("structures", "labels"):
            op.execute(f"ALTER TABLE {table} ALTER COLUMN composition_id "
                       f"SET STATISTICS {_STATISTICS}")
        # The planner then knows the compositions of each element set exactly (the common
        # values list holds up to 1,000 sets); with the default 100 a rare set was guessed
        # at the average of the others, ~13x too many, and got a parallel scan.
        op.execute("ALTER TABLE compositions ALTER COLUMN element_set_id SET STATISTICS 1000")
    _append_only(True)


def downgrade() -> None:
    _append_only(False)
    if not _sqlite():
        op.execute("ALTER TABLE structures ALTER COLUMN composition_id SET STATISTICS -1")
    op.drop_index("ix_labels_ok_level_composition", table_name="labels", **_OK)
    op.drop_index("ix_compositions_element_set_id_n_atoms_id", table_name="compositions")
    for table, column in (("labels", "composition_id"), ("compositions", "element_set_id")):
        if _sqlite():
            op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        else:
            op.drop_column(table, column)
    op.drop_table("element_sets")

"""compositions: element counts and formulas once per distinct formula

A structure's composition (element counts; Hill, reduced and anonymous formulas; number of
atoms and of elements) moves to ``compositions``, one row per distinct Hill formula, with its
element counts in ``composition_elements`` keyed ``(z, composition_id)``. ``structures`` keeps
``n_atoms`` (array shapes) and points at its composition (``composition_id``, indexed).

Before, every structure wrote ~4 ``structure_elements`` rows and three formula strings and fed
four secondary B-trees (``structure_elements``' key, ``n_atoms``, ``formula_reduced``); those
index insertions were about half of the database server's work in a bulk ingest. Now it feeds
one (``(composition_id, id)``), and the composition filters run over the far smaller
composition table, then select structure ids from that index alone (index-only scans).

Existing rows are carried over (compositions from the distinct Hill formulas; element counts
from ``structure_elements``); the downgrade rebuilds the 0004 layout from them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 01:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_FORMULA = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")
_FORMULAS = ("formula_hill", "formula_reduced", "formula_anonymous")
# (column, type, SQLite default for ADD COLUMN ... NOT NULL on an existing table)
_MOVED = [("nelements", sa.SmallInteger(), "0")] + [(c, _FORMULA, "''") for c in _FORMULAS]


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _append_only(create: bool) -> None:
    """The append-only triggers of migration 0002, for ``compositions``."""
    table = "compositions"
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


def _add_not_null(column: str, type_, sqlite_default: str, fill: str) -> None:
    """Add ``structures.column`` NOT NULL, filled by the scalar sub-query ``fill``. SQLite can
    only add a NOT NULL column with a default (its rows are rewritten by the UPDATE)."""
    if _sqlite():
        op.add_column("structures", sa.Column(column, type_, nullable=False,
                                              server_default=sa.text(sqlite_default)))
    else:
        op.add_column("structures", sa.Column(column, type_, nullable=True))
    op.execute(f"UPDATE structures SET {column} = ({fill})")
    if not _sqlite():
        op.alter_column("structures", column, existing_type=type_, nullable=False)


def _drop_structure_column(column: str) -> None:
    if _sqlite():
        op.execute(f"ALTER TABLE structures DROP COLUMN {column}")
    else:
        op.drop_column("structures", column)


def upgrade() -> None:
    op.create_table(
        "compositions",
        sa.Column("id", _ID, nullable=False),
        sa.Column("formula_hill", _FORMULA, nullable=False),
        sa.Column("formula_reduced", _FORMULA, nullable=False),
        sa.Column("formula_anonymous", _FORMULA, nullable=False),
        sa.Column("n_atoms", sa.Integer(), nullable=False),
        sa.Column("nelements", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_compositions"),
        sa.UniqueConstraint("formula_hill", name="uq_compositions_formula_hill"),
    )
    op.create_index("ix_compositions_formula_reduced", "compositions", ["formula_reduced"])
    op.create_table(
        "composition_elements",
        sa.Column("z", sa.SmallInteger(), nullable=False),
        sa.Column("composition_id", _ID, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("z", "composition_id", name="pk_composition_elements"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO compositions (formula_hill, formula_reduced, formula_anonymous, "
               "n_atoms, nelements) SELECT formula_hill, MIN(formula_reduced), "
               "MIN(formula_anonymous), MIN(n_atoms), MIN(nelements) FROM structures "
               "GROUP BY formula_hill ORDER BY formula_hill")
    _add_not_null("composition_id", _ID, "0", "SELECT c.id FROM compositions c "
                  "WHERE c.formula_hill = structures.formula_hill")
    op.execute("INSERT INTO composition_elements (z, composition_id, count) "
               "SELECT DISTINCT e.z, s.composition_id, e.count FROM structure_elements e "
               "JOIN structures s ON s.id = e.structure_id")
    op.create_index("ix_structures_composition_id_id", "structures", ["composition_id", "id"])
    op.drop_index("ix_structures_n_atoms", table_name="structures")
    op.drop_index("ix_structures_formula_reduced", table_name="structures")
    op.drop_table("structure_elements")
    for column, _, _ in _MOVED:
        _drop_structure_column(column)
    _append_only(True)


def downgrade() -> None:
    _append_only(False)
    for column, type_, default in _MOVED:
        _add_not_null(column, type_, default, f"SELECT c.{column} FROM compositions c "
                      "WHERE c.id = structures.composition_id")
    op.create_table(
        "structure_elements",
        sa.Column("structure_id", _ID, nullable=False),
        sa.Column("z", sa.SmallInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("z", "structure_id", name="pk_structure_elements"),
        sqlite_with_rowid=False,
    )
    op.execute("INSERT INTO structure_elements (structure_id, z, count) "
               "SELECT s.id, e.z, e.count FROM structures s "
               "JOIN composition_elements e ON e.composition_id = s.composition_id")
    op.create_index("ix_structures_formula_reduced", "structures", ["formula_reduced"])
    op.create_index("ix_structures_n_atoms", "structures", ["n_atoms"])
    op.drop_index("ix_structures_composition_id_id", table_name="structures")
    _drop_structure_column("composition_id")
    op.drop_table("composition_elements")
    op.drop_index("ix_compositions_formula_reduced", table_name="compositions")
    op.drop_table("compositions")

"""one-pass reference checks; labels.supersedes_id checked by them; "C" formulas

PostgreSQL only (SQLite keeps its declarative foreign keys and its BINARY comparisons):

* ``labels.supersedes_id`` was the last declarative foreign key of ``labels``: a row trigger
  queued for every inserted row (NULL or not), about a tenth of the server's time for a bulk
  COPY of labels. ``labels`` is append-only (migration 0002), so it joins the statement-level
  check.
* The statement-level check functions read the transition table once for all the references
  of a table (one ``array_agg(DISTINCT ...)`` per column in one scan) instead of once per
  column. NULL references are not checked, as with a foreign key.
* ``formula_reduced``, ``formula_hill`` and ``formula_anonymous`` compare bytewise (``COLLATE
  "C"``), as on SQLite; formulas are ASCII, so orderings are unchanged, and the index on the
  reduced formula no longer compares through ``strcoll``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SUPERSEDES = ("fk_labels_supersedes_id_labels", "supersedes_id", "labels")
# child table -> [(column, parent table)] checked by its statement trigger
_REFS = {
    "labels": [("structure_id", "structures"), ("level_id", "levels_of_theory")],
    "dataset_members": [("label_id", "labels"), ("structure_id", "structures"),
                        ("version_id", "dataset_versions")],
}
_FORMULAS = ("formula_hill", "formula_reduced", "formula_anonymous")


def _check_fn(child: str, refs: list[tuple[str, str]]) -> str:
    """The statement trigger function of ``child``: the distinct non-NULL ids of every
    reference, gathered in one scan of the transition table, each probed through its
    parent's primary key as one array; a missing id raises ``foreign_key_violation``."""
    cols = [c for c, _ in refs]
    decls = " ".join(f"{c}s bigint[];" for c in cols)
    aggs = ", ".join(f"array_agg(DISTINCT {c}) FILTER (WHERE {c} IS NOT NULL)" for c in cols)
    into = ", ".join(f"{c}s" for c in cols)
    body = [f"\n  SELECT {aggs}\n    INTO {into} FROM nnp_new;"]
    for column, parent in refs:
        body.append(f"""
  IF {column}s IS NOT NULL AND
     (SELECT count(*) FROM {parent} WHERE id = ANY ({column}s)) < cardinality({column}s) THEN
    SELECT x INTO missing FROM unnest({column}s) AS x
     WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = x) LIMIT 1;
    RAISE EXCEPTION 'insert or update on table "{child}" violates foreign key reference '
      '{column}=%: no such {parent} row', missing
      USING ERRCODE = 'foreign_key_violation', TABLE = '{child}';
  END IF;""")
    return (f"CREATE OR REPLACE FUNCTION nnp_check_{child}_refs() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$\nDECLARE {decls} missing bigint;\nBEGIN{''.join(body)}\n"
            "  RETURN NULL;\nEND $$")


def _formulas(collation: str | None) -> None:
    for column in _FORMULAS:
        op.alter_column("structures", column, existing_type=sa.String(255),
                        existing_nullable=False, type_=sa.String(255, collation=collation))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    name, column, parent = _SUPERSEDES
    op.drop_constraint(name, "labels", type_="foreignkey")
    op.execute(_check_fn("labels", [*_REFS["labels"], (column, parent)]))
    op.execute(_check_fn("dataset_members", _REFS["dataset_members"]))
    _formulas("C")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    _formulas(None)
    op.execute(_check_fn("dataset_members", _REFS["dataset_members"]))
    op.execute(_check_fn("labels", _REFS["labels"]))
    name, column, parent = _SUPERSEDES
    op.create_foreign_key(name, "labels", parent, [column], ["id"])

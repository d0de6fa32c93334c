"""set-based reference checks for the bulk tables on PostgreSQL

On PostgreSQL a declarative foreign key is checked by a row trigger that runs one
``SELECT ... FOR KEY SHARE`` per inserted row; for ``labels`` that was about a quarter of the
server's bulk-ingest work, and for ``dataset_members`` most of the time it takes to create a
dataset version. The references of these two tables are checked instead by one
statement-level trigger per INSERT / UPDATE: the distinct ids of the statement's new rows (a
transition table) are probed through the parents' primary keys as one array, and a missing one
raises ``foreign_key_violation`` naming it. Such a check takes no row locks, so it is only sound
while the parents cannot disappear: ``structures``, ``levels_of_theory``, ``labels`` and
``dataset_versions`` become append-only (DELETE and TRUNCATE refused, ids never updated), which
is what the registry has always done (labels are retracted, never deleted; versions are
immutable). SQLite keeps its declarative foreign keys (cheap there) and gets the same
append-only triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# child table -> [(constraint, column, parent table, ON DELETE)]
CHECKED = {
    "labels": [
        ("fk_labels_structure_id_structures", "structure_id", "structures", None),
        ("fk_labels_level_id_levels_of_theory", "level_id", "levels_of_theory", None),
    ],
    "dataset_members": [
        ("fk_dataset_members_label_id_labels", "label_id", "labels", None),
        ("fk_dataset_members_structure_id_structures", "structure_id", "structures", None),
        ("fk_dataset_members_version_id_dataset_versions", "version_id", "dataset_versions",
         "CASCADE"),
    ],
}
APPEND_ONLY = ("structures", "levels_of_theory", "labels", "dataset_versions")

_APPEND_ONLY_FN = """
CREATE FUNCTION nnp_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'table "%" is append-only (other rows reference its rows by id)',
    TG_TABLE_NAME USING ERRCODE = 'restrict_violation', TABLE = TG_TABLE_NAME;
END $$"""


def _check_fn(child: str) -> str:
    """A trigger function checking every reference of ``child``'s new rows. The distinct ids
    are probed through the parent's primary key as one array (an index scan with array keys):
    the cost grows with the rows inserted, never with the size of the parent table."""
    decls, body = [], []
    for _, column, parent, _ in CHECKED[child]:
        decls.append(f"{column}s bigint[];")
        body.append(f"""
  SELECT array_agg(DISTINCT {column}) INTO {column}s FROM nnp_new;
  IF {column}s IS NOT NULL AND
     (SELECT count(*) FROM {parent} WHERE id = ANY ({column}s)) < cardinality({column}s) THEN
    SELECT x INTO missing FROM unnest({column}s) AS x
     WHERE NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = x) LIMIT 1;
    RAISE EXCEPTION 'insert or update on table "{child}" violates foreign key reference '
      '{column}=%: no such {parent} row', missing
      USING ERRCODE = 'foreign_key_violation', TABLE = '{child}';
  END IF;""")
    return (f"CREATE FUNCTION nnp_check_{child}_refs() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"DECLARE {' '.join(decls)} missing bigint;\nBEGIN{''.join(body)}\n"
            "  RETURN NULL;\nEND $$")


def _sqlite_append_only(create: bool) -> None:
    for table in APPEND_ONLY:
        for name, when in (("no_delete", "DELETE"), ("fixed_id", "UPDATE OF id")):
            if not create:
                op.execute(f"DROP TRIGGER nnp_{table}_{name}")
                continue
            cond = " WHEN OLD.id IS NOT NEW.id" if name == "fixed_id" else ""
            op.execute(f"CREATE TRIGGER nnp_{table}_{name} BEFORE {when} ON {table}{cond} "
                       f"BEGIN SELECT RAISE(ABORT, 'table \"{table}\" is append-only "
                       "(other rows reference its rows by id)'); END")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_append_only(True)
        return
    op.execute(_APPEND_ONLY_FN)
    for child, refs in CHECKED.items():
        for name, _, _, _ in refs:
            op.drop_constraint(name, child, type_="foreignkey")
        op.execute(_check_fn(child))
        for event in ("INSERT", "UPDATE"):
            op.execute(f"CREATE TRIGGER nnp_{child}_refs_{event.lower()} AFTER {event} ON "
                       f"{child} REFERENCING NEW TABLE AS nnp_new FOR EACH STATEMENT "
                       f"EXECUTE FUNCTION nnp_check_{child}_refs()")
    for table in APPEND_ONLY:
        op.execute(f"CREATE TRIGGER nnp_{table}_no_delete BEFORE DELETE OR TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION nnp_append_only()")
        op.execute(f"CREATE TRIGGER nnp_{table}_fixed_id BEFORE UPDATE OF id ON {table} "
                   "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) "
                   "EXECUTE FUNCTION nnp_append_only()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        _sqlite_append_only(False)
        return
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER nnp_{table}_fixed_id ON {table}")
        op.execute(f"DROP TRIGGER nnp_{table}_no_delete ON {table}")
    for child, refs in CHECKED.items():
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER nnp_{child}_refs_{event} ON {child}")
        op.execute(f"DROP FUNCTION nnp_check_{child}_refs()")
        for name, column, parent, ondelete in refs:
            op.create_foreign_key(name, child, parent, [column], ["id"], ondelete=ondelete)
    op.execute("DROP FUNCTION nnp_append_only()")

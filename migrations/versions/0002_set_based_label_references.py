"""set-based label reference checks on PostgreSQL

On PostgreSQL a declarative foreign key is checked by a row trigger that runs one
``SELECT ... FOR KEY SHARE`` per inserted row; for ``labels`` that was about a quarter of the
server's bulk-ingest work. Its two core references (``structure_id -> structures``,
``level_id -> levels_of_theory``) are checked instead by one statement-level trigger per
INSERT / UPDATE over the statement's new rows (a transition table), which raises the same
``foreign_key_violation``. Such a check takes no row locks, so it is only sound while the
parents cannot disappear: ``structures`` and ``levels_of_theory`` become append-only (DELETE and
TRUNCATE refused, ids never updated), which is what the registry has always done. SQLite keeps
its declarative foreign keys (cheap there).

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

_FKS = (
    ("fk_labels_structure_id_structures", "structure_id", "structures"),
    ("fk_labels_level_id_levels_of_theory", "level_id", "levels_of_theory"),
)

_UP = [
    # The distinct ids of the statement's rows are probed through the primary keys as one
    # array (an index scan with array keys): cost grows with the rows inserted, never with
    # the size of the parent table (a NOT EXISTS here was planned as a hash of all ids).
    """
    CREATE FUNCTION nnp_check_label_refs() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE sids bigint[]; lids bigint[]; missing bigint;
    BEGIN
      SELECT array_agg(DISTINCT structure_id), array_agg(DISTINCT level_id)
        INTO sids, lids FROM nnp_new;
      IF sids IS NULL THEN
        RETURN NULL;
      END IF;
      IF (SELECT count(*) FROM structures WHERE id = ANY (sids)) < cardinality(sids) THEN
        SELECT x INTO missing FROM unnest(sids) AS x
         WHERE NOT EXISTS (SELECT 1 FROM structures s WHERE s.id = x) LIMIT 1;
        RAISE EXCEPTION 'insert or update on table "labels" violates foreign key reference '
          'structure_id=%: no such structures row', missing
          USING ERRCODE = 'foreign_key_violation', TABLE = 'labels';
      END IF;
      IF (SELECT count(*) FROM levels_of_theory WHERE id = ANY (lids)) < cardinality(lids) THEN
        SELECT x INTO missing FROM unnest(lids) AS x
         WHERE NOT EXISTS (SELECT 1 FROM levels_of_theory v WHERE v.id = x) LIMIT 1;
        RAISE EXCEPTION 'insert or update on table "labels" violates foreign key reference '
          'level_id=%: no such levels_of_theory row', missing
          USING ERRCODE = 'foreign_key_violation', TABLE = 'labels';
      END IF;
      RETURN NULL;
    END $$""",
    """
    CREATE FUNCTION nnp_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'table "%" is append-only (labels reference its rows by id)',
        TG_TABLE_NAME USING ERRCODE = 'restrict_violation', TABLE = TG_TABLE_NAME;
    END $$""",
    "CREATE TRIGGER nnp_label_refs_insert AFTER INSERT ON labels REFERENCING NEW TABLE AS "
    "nnp_new FOR EACH STATEMENT EXECUTE FUNCTION nnp_check_label_refs()",
    "CREATE TRIGGER nnp_label_refs_update AFTER UPDATE ON labels REFERENCING NEW TABLE AS "
    "nnp_new FOR EACH STATEMENT EXECUTE FUNCTION nnp_check_label_refs()",
]
for _table in ("structures", "levels_of_theory"):
    _UP += [
        f"CREATE TRIGGER nnp_{_table}_no_delete BEFORE DELETE OR TRUNCATE ON {_table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION nnp_append_only()",
        f"CREATE TRIGGER nnp_{_table}_fixed_id BEFORE UPDATE OF id ON {_table} FOR EACH ROW "
        "WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION nnp_append_only()",
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, _, _ in _FKS:
        op.drop_constraint(name, "labels", type_="foreignkey")
    for stmt in _UP:
        op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("structures", "levels_of_theory"):
        op.execute(f"DROP TRIGGER nnp_{table}_fixed_id ON {table}")
        op.execute(f"DROP TRIGGER nnp_{table}_no_delete ON {table}")
    op.execute("DROP TRIGGER nnp_label_refs_update ON labels")
    op.execute("DROP TRIGGER nnp_label_refs_insert ON labels")
    op.execute("DROP FUNCTION nnp_append_only()")
    op.execute("DROP FUNCTION nnp_check_label_refs()")
    for name, column, parent in _FKS:
        op.create_foreign_key(name, "labels", parent, [column], ["id"])

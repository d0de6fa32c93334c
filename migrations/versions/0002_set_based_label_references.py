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
    """
    CREATE FUNCTION nnp_check_label_refs() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE bad record;
    BEGIN
      SELECT n.structure_id, n.level_id,
             EXISTS (SELECT 1 FROM structures s WHERE s.id = n.structure_id) AS has_s
        INTO bad FROM nnp_new n
       WHERE NOT EXISTS (SELECT 1 FROM structures s WHERE s.id = n.structure_id)
          OR NOT EXISTS (SELECT 1 FROM levels_of_theory v WHERE v.id = n.level_id)
       LIMIT 1;
      IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "labels" violates foreign key reference '
          '%', CASE WHEN bad.has_s THEN format('level_id=%s: no such levels_of_theory row',
                                              bad.level_id)
                    ELSE format('structure_id=%s: no such structures row', bad.structure_id)
               END
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

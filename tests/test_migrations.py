"""Alembic: upgrade -> downgrade -> upgrade on both backends."""

from sqlalchemy import inspect

from registry.store.engine import current_revision, downgrade, head_revision, make_engine, upgrade
from registry.store.schema import Base


def test_upgrade_downgrade_upgrade(empty_db_url):
    engine = make_engine(empty_db_url)
    upgrade(empty_db_url)
    assert current_revision(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    downgrade(empty_db_url, "base")
    assert set(inspect(engine).get_table_names()) & set(Base.metadata.tables) == set()
    upgrade(empty_db_url)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_schema_revision_constant_is_head():
    from registry.store.engine import SCHEMA_REVISION

    assert SCHEMA_REVISION == head_revision()


def test_schema_matches_models(db_url):
    """The migrations create exactly what the ORM declares (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from registry.store.schema import PG_SET_CHECKED_FKS

    engine = make_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    pg = engine.dialect.name == "postgresql"
    engine.dispose()
    # On PostgreSQL the bulk tables' foreign keys are set-based triggers (migration 0002).
    replaced = sorted(d[1].name for d in diff if pg and d[0] == "add_fk")
    assert replaced == (sorted(PG_SET_CHECKED_FKS) if pg else [])
    assert [d for d in diff if d[0] != "add_fk" or not pg] == []


def _insert_label(conn, structure_id: int, level_id: int, supersedes: int | None = None,
                  status: str = "ok") -> None:
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from registry.store.schema import Label

    conn.execute(insert(Label).values(structure_id=structure_id, level_id=level_id, hash="0" * 64,
                                      energy=1.0, status=status, supersedes_id=supersedes,
                                      composition_id=0, created_at=datetime.now(UTC)))


def test_label_references_are_enforced(registry):
    """A label pointing at a missing structure or level is refused on both backends, and
    structures / levels cannot be deleted from under their labels."""
    import pytest
    from ase import Atoms
    from sqlalchemy import delete, func, select, update
    from sqlalchemy.exc import IntegrityError

    from registry.store.schema import Label, LevelOfTheory, Structure

    a = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    a.info["energy"] = -1.0
    registry.ingest([a], level="pbe/sz")
    with registry.engine.connect() as conn:
        sid = conn.execute(select(func.max(Structure.id))).scalar()
        lid = conn.execute(select(func.max(LevelOfTheory.id))).scalar()
        n_labels = conn.execute(select(func.count()).select_from(Label)).scalar()
    for bad in ((sid + 1000, lid), (sid, lid + 1000)):
        with pytest.raises(IntegrityError, match="(?i)foreign key"):
            with registry.engine.begin() as conn:
                _insert_label(conn, *bad)
    with pytest.raises(IntegrityError, match="(?i)foreign key"):
        with registry.engine.begin() as conn:
            conn.execute(update(Label).values(structure_id=sid + 1000))
    with registry.engine.connect() as conn:
        label_id = conn.execute(select(func.max(Label.id))).scalar()
    with pytest.raises(IntegrityError, match="(?i)foreign key"):  # supersedes a missing label
        with registry.engine.begin() as conn:
            _insert_label(conn, sid, lid, supersedes=label_id + 1000, status="failed")
    with registry.engine.begin() as conn:  # superseding an existing label is fine
        _insert_label(conn, sid, lid, supersedes=label_id, status="failed")
    n_labels += 1
    for table in (Structure, LevelOfTheory, Label):
        with pytest.raises(IntegrityError, match="(?i)foreign key|append-only"):
            with registry.engine.begin() as conn:
                conn.execute(delete(table))
    with registry.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Label)).scalar() == n_labels
        assert conn.execute(select(func.count()).select_from(Structure)).scalar() == 1


def test_registry_creates_the_schema_of_a_new_database(empty_db_url):
    """A new database is initialised on first use (an old or foreign one is refused:
    tests/test_schema_init.py)."""
    from registry.core import Registry
    from registry.store.engine import SCHEMA_REVISION, current_revision

    with Registry(empty_db_url) as reg:
        assert reg.created_schema and current_revision(reg.engine) == SCHEMA_REVISION
        assert reg.count() == 0


def test_dataset_member_references_are_enforced(registry):
    """Members must point at existing labels, structures and versions (both backends)."""
    import pytest
    from ase import Atoms
    from sqlalchemy import func, insert, select
    from sqlalchemy.exc import IntegrityError

    from registry.store.schema import DatasetMember, DatasetVersion, Label

    for k in range(3):
        a = Atoms("H2", positions=[[0, 0, 0], [0.7 + 0.01 * k, 0, 0]])
        a.info["energy"] = -1.0 - k
        registry.ingest([a], level="pbe/sz")
    v = registry.create_dataset_version("d", levels=["pbe/sz"], split="1,0,0")
    a = Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]])  # a label outside the version
    a.info["energy"] = -4.0
    registry.ingest([a], level="pbe/sz")
    with registry.engine.connect() as conn:
        vid = conn.execute(select(DatasetVersion.id)).scalar()
        lab, sid = conn.execute(select(Label.id, Label.structure_id)
                                .order_by(Label.id.desc())).first()
        n = conn.execute(select(func.count()).select_from(DatasetMember)).scalar()
    assert n == v["n_structures"] == 3
    for bad in ({"version_id": vid + 99}, {"label_id": lab + 99}, {"structure_id": sid + 99}):
        row = {"version_id": vid, "label_id": lab, "structure_id": sid, "split": 0} | bad
        with pytest.raises(IntegrityError, match="(?i)foreign key"):
            with registry.engine.begin() as conn:
                conn.execute(insert(DatasetMember).values(**row))
    with registry.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(DatasetMember)).scalar() == 3


def test_upgrade_keeps_data_of_a_0001_database(empty_db_url):
    """Rows written under revision 0001 survive 0002/0003 (the SQLite table rebuild too) and
    the upgraded registry finds them through the new keys."""
    from sqlalchemy import text

    from registry.core import Registry

    upgrade(empty_db_url, "0001")
    engine = make_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO levels_of_theory (id, name, method, hash, fidelity_rank, created_at) "
            "VALUES (1, 'pbe/sz', 'pbe', :h, 0, CURRENT_TIMESTAMP)"), {"h": "1" * 64})
        conn.execute(text(
            "INSERT INTO structures (id, hash, hash_version, n_atoms, nelements, numbers, "
            "positions, pbc, nperiodic, charge, multiplicity, formula_hill, formula_reduced, "
            "formula_anonymous, created_at) VALUES (1, :h, 1, 3, 2, :z, :p, 0, 0, 0, 1, 'H2O', "
            "'H2O', 'A2B', CURRENT_TIMESTAMP)"),
            {"h": "a" * 64, "z": bytes([1, 1, 8]), "p": bytes(72)})
        conn.execute(text("INSERT INTO structure_elements (structure_id, z, count) VALUES "
                          "(1, 1, 2), (1, 8, 1)"))
        conn.execute(text(
            "INSERT INTO labels (structure_id, level_id, hash, energy, status, created_at) "
            "VALUES (1, 1, :h, -1.5, 'ok', CURRENT_TIMESTAMP)"), {"h": "b" * 64})
    engine.dispose()
    upgrade(empty_db_url)
    with Registry(empty_db_url) as reg:
        assert reg.count('elements HAS ALL "H","O"') == 1
        assert reg.count('elements HAS ONLY "H","O"') == 1
        assert reg.count('elements HAS ONLY "H"') == 0
        assert reg.count('_nnp_levels HAS "pbe/sz"') == 1


def test_backend_settings_after_upgrade(empty_db_url):
    """SQLite: a new file has 32 KiB pages (set before WAL, at creation), WAL and foreign keys
    on. PostgreSQL: the set-based reference and append-only triggers of migration 0002 exist."""
    from sqlalchemy import text

    upgrade(empty_db_url)
    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = conn.connection.driver_connection
            assert raw.execute("PRAGMA page_size").fetchone()[0] == 32768
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert raw.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            names = {r[0] for r in conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger'"))}
        else:
            names = {r[0] for r in conn.execute(text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"))}
            assert {"nnp_labels_refs_insert", "nnp_labels_refs_update",
                    "nnp_dataset_members_refs_insert"} <= names
    engine.dispose()
    for table in ("structures", "levels_of_theory", "labels", "dataset_versions"):
        assert f"nnp_{table}_no_delete" in names and f"nnp_{table}_fixed_id" in names


def test_compositions_survive_downgrade_and_upgrade(empty_db_url):
    """0005 <-> 0004 carries the data both ways: the 0004 layout (formula columns and
    ``structure_elements`` rows per structure) is rebuilt from the compositions, and the
    upgrade builds one composition per distinct Hill formula from it again."""
    from ase import Atoms
    from sqlalchemy import text

    from registry.core import Registry

    upgrade(empty_db_url)
    mols = [Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
            Atoms("H2O", positions=[[0, 0, 0], [0.97, 0, 0], [-0.25, 0.93, 0]]),
            Atoms("CH4", positions=[[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0],
                                    [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89]])]
    with Registry(empty_db_url) as reg:
        reg.ingest(mols)
    downgrade(empty_db_url, "0004")
    engine = make_engine(empty_db_url)
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.formula_hill, s.formula_reduced, s.formula_anonymous, s.nelements, "
            "e.z, e.count FROM structures s JOIN structure_elements e ON e.structure_id = s.id "
            "ORDER BY s.id, e.z")).all()
    engine.dispose()
    assert sorted(tuple(r) for r in rows) == [
        ("CH4", "CH4", "A4B", 2, 1, 4), ("CH4", "CH4", "A4B", 2, 6, 1),
        ("H2O", "H2O", "A2B", 2, 1, 2), ("H2O", "H2O", "A2B", 2, 1, 2),
        ("H2O", "H2O", "A2B", 2, 8, 1), ("H2O", "H2O", "A2B", 2, 8, 1)]
    upgrade(empty_db_url)
    with Registry(empty_db_url) as reg:
        assert reg.count('chemical_formula_hill = "H2O"') == 2
        assert reg.count('elements HAS ONLY "C","H" AND nsites = 5') == 1
        with reg.session() as s:
            comps = s.execute(text("SELECT formula_hill, n_atoms, nelements FROM compositions "
                                   "ORDER BY formula_hill")).all()
        assert [tuple(r) for r in comps] == [("CH4", 5, 2), ("H2O", 3, 2)]
        assert reg.ingest(mols).structures_new == 0


def test_0006_drops_the_unused_al_selections_table(empty_db_url):
    engine = make_engine(empty_db_url)
    upgrade(empty_db_url)
    assert "al_selections" not in inspect(engine).get_table_names()
    downgrade(empty_db_url, "0005")
    assert "al_selections" in inspect(engine).get_table_names()
    upgrade(empty_db_url)
    assert "al_selections" not in inspect(engine).get_table_names()
    engine.dispose()


def test_0007_active_learning_tables_up_down_up(empty_db_url):
    """0007 creates the campaign, iteration, trajectory and candidate tables (their keys
    enforced), 0006 drops them, and upgrading again restores them."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    al = {"al_campaigns", "al_iterations", "al_trajectories", "al_candidates"}
    engine = make_engine(empty_db_url)
    upgrade(empty_db_url, "0006")
    assert al & set(inspect(engine).get_table_names()) == set()
    upgrade(empty_db_url, "0007")
    assert al <= set(inspect(engine).get_table_names())
    with pytest.raises(IntegrityError, match="(?i)foreign key"):
        with engine.begin() as conn:  # an iteration of a campaign that does not exist
            conn.execute(text(
                "INSERT INTO al_iterations (campaign_id, iteration, phase, "
                "dataset_version_id, started_at) VALUES (99, 0, 'train', 99, "
                "CURRENT_TIMESTAMP)"))
    downgrade(empty_db_url, "0006")
    assert al & set(inspect(engine).get_table_names()) == set()
    upgrade(empty_db_url)
    assert al <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_0008_fills_in_existing_rows(db_url):
    """Down to 0007 and up again: element sets and label compositions are rebuilt from the
    rows, equal to what the writers stored (heavy elements included)."""
    from ase import Atoms
    from sqlalchemy import select

    from registry.core import Registry
    from registry.store.tables import compositions, element_sets, labels

    mols = [Atoms(f, positions=[[0.9 * i, 0.1 * i, 0] for i in range(len(Atoms(f)))])
            for f in ("CH4", "UO2", "GdH3", "H2O", "C2N2U")]
    for i, m in enumerate(mols):
        m.info["energy"] = -float(i + 1)

    def snapshot(engine):
        C, E, L = compositions.c, element_sets.c, labels.c
        with engine.connect() as c:
            comp = {r[0]: tuple(r[1:]) for r in c.execute(
                select(C.formula_hill, E.mask_lo, E.mask_hi, E.nelements)
                .join(element_sets, E.id == C.element_set_id))}
            lab = sorted(c.execute(select(L.id, C.formula_hill).join(
                compositions, C.id == L.composition_id)).all())
        return comp, lab

    with Registry(db_url) as reg:
        reg.ingest(mols, level="a")
        reg.ingest(mols[1:3], level="b")
        before = snapshot(reg.engine)
    downgrade(db_url, "0007")
    upgrade(db_url)
    engine = make_engine(db_url)
    after = snapshot(engine)
    engine.dispose()
    assert before == after
    assert before[0]["O2U"] == (1 << 7, 1 << 28, 2) and len(before[1]) == 7

"""Shared pieces of the fuzz suite: hypothesis profiles, case counts, row counts.

CI runs the ``ci`` profile: derandomized (the same cases on every machine and run, so a
failure reproduces), no example database, no deadline (a PostgreSQL round trip can be slow on
a busy runner). Each test runs its CI default number of cases unless ``NNP_FUZZ_EXAMPLES=N``
asks for about N cases of each kind (extxyz files, filters, CLI argument vectors) per backend,
split over the kind's parametrized tests (fault kinds, commands):

    NNP_FUZZ_EXAMPLES=5000 python -m pytest tests/fuzz             # more derandomized cases
    NNP_FUZZ_PROFILE=explore NNP_FUZZ_EXAMPLES=2000 python -m pytest tests/fuzz  # new cases

``explore`` draws random cases (hypothesis prints the seed of a failure; rerun it with
``--hypothesis-seed=N``). The profiles are applied per test (:func:`fuzz_settings`), never
loaded globally, so hypothesis tests elsewhere keep their own settings.
"""

from __future__ import annotations

import collections
import contextlib
import os
import warnings

import pytest
from hypothesis import HealthCheck, event, settings

PROFILES = ("ci", "explore")

# Cases run in this session, by (kind, outcome): printed at the end (conftest.py), so the
# counts in docs/robustness.md are measured, not estimated.
TALLY: collections.Counter = collections.Counter()


def tally(kind: str, outcome: str) -> None:
    TALLY[kind, outcome] += 1
    event(outcome)


def register_profiles() -> None:
    common = dict(
        deadline=None,
        database=None,
        print_blob=True,
        # The registry fixtures are function-scoped on purpose: all cases of a test share one
        # database, and each compares row counts before and after itself.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.large_base_example,
                               HealthCheck.filter_too_much],
    )
    settings.register_profile("nnp-fuzz-ci", derandomize=True, **common)
    settings.register_profile("nnp-fuzz-explore", derandomize=False, **common)


def examples(ci_default: int, parts: int = 1) -> int:
    """Cases one fuzz test runs: ``ci_default``; or, when ``NNP_FUZZ_EXAMPLES=N`` is set, its
    share of N cases for the kind (per backend), split over ``parts`` parametrized tests."""
    value = os.environ.get("NNP_FUZZ_EXAMPLES", "").strip()
    return max(1, round(int(value) / parts)) if value else ci_default


def fuzz_settings(ci_default: int, parts: int = 1) -> settings:
    """The ``@settings`` of a fuzz test running :func:`examples` cases."""
    register_profiles()
    profile = os.environ.get("NNP_FUZZ_PROFILE", "ci").strip() or "ci"
    if profile not in PROFILES:
        raise ValueError(f"NNP_FUZZ_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}")
    return settings(settings.get_profile(f"nnp-fuzz-{profile}"),
                    max_examples=examples(ci_default, parts))


TABLES = ("Structure", "Label", "Composition", "LevelOfTheory", "ReferenceEnergy", "Dataset",
          "DatasetVersion", "DatasetMember", "DatasetAlias", "Model", "ModelVersion",
          "ModelAlias")


def table_counts(reg) -> dict[str, int]:
    """Row counts of every data table (runs excluded: a refused command records its run),
    plus the number of ``ok`` labels (a refused retraction must change no status); one
    query."""
    from sqlalchemy import func, select

    from registry.store import schema

    def n(table, *where):
        return select(func.count()).select_from(table).where(*where).scalar_subquery()

    cols = [n(getattr(schema, name)).label(name) for name in TABLES]
    cols.append(n(schema.Label, schema.Label.status == "ok").label("ok labels"))
    with reg.session() as s:
        return dict(s.execute(select(*cols)).one()._mapping)


def consistency_problems(reg) -> list[str]:
    """What is inconsistent in the stored data (empty when nothing is): a dataset version
    whose member count differs from its recorded size, a structure without its composition,
    a run still marked running after its command returned."""
    from sqlalchemy import distinct, func, select

    from registry.store.schema import Composition, DatasetMember, DatasetVersion, Run, Structure

    problems = []
    with reg.session() as s:
        sizes = dict(s.execute(select(DatasetMember.version_id,
                                      func.count(distinct(DatasetMember.structure_id)))
                               .group_by(DatasetMember.version_id)).all())
        for vid, n in s.execute(select(DatasetVersion.id, DatasetVersion.n_structures)):
            if sizes.get(vid, 0) != n:
                problems.append(f"dataset version {vid}: {sizes.get(vid, 0)} members, "
                                f"n_structures {n}")
        orphans = s.scalar(select(func.count()).select_from(Structure).where(
            ~select(Composition.id).where(Composition.id == Structure.composition_id)
            .exists()))
        if orphans:
            problems.append(f"{orphans} structures without their composition")
        running = s.scalars(select(Run.id).where(Run.status == "running")).all()
        if running:
            problems.append(f"runs still running: {running}")
    return problems


@contextlib.contextmanager
def backend_registry(backend: str, tmp_path_factory):
    """A :class:`registry.core.Registry` on a new database upgraded to head: a SQLite file or
    a throwaway PostgreSQL database on the test server (tests/conftest.py), dropped after.
    For module-scoped fixtures: a fuzz test's cases share one database per backend."""
    import conftest as root  # tests/conftest.py: the PostgreSQL test server helpers

    from registry.core import Registry
    from registry.store.engine import upgrade

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'registry.db'}"
    else:
        err = root._pg_available()
        if err:
            msg = f"PostgreSQL test server unreachable at {root.PG_URL}: {err}"
            if os.environ.get("CI") == "true":
                pytest.fail(msg + " (CI=true requires it)")
            warnings.warn(msg, stacklevel=1)
            pytest.skip("!!! " + msg)
        url = root.new_pg_database()
    try:
        upgrade(url)
        reg = Registry(url)
        try:
            yield reg
        finally:
            reg.close()
    finally:
        if backend != "sqlite":
            root.drop_pg_database(url)


# Files in the CLI workspace: name -> content. The bad ones are the inputs of the table of
# bad inputs in docs/robustness.md (test_robustness_doc.py runs every row).
def _frame(z="0.1", extra="", pbc="F F F", energy="-10.5", symbol="O", props="pos:R:3",
           forces=""):
    return (f'3\n{extra}Properties=species:S:1:{props} energy={energy} pbc="{pbc}"\n'
            f"{symbol} 0.0 0.0 {z}{forces}\nH 0.0 0.7 -0.5{forces}\nH 0.0 -0.7 -0.5{forces}\n")


GOOD_FRAME = _frame(z="0.35")
BAD_FILES = {
    "bad-line.xyz": GOOD_FRAME + "3\ncomment\nO 0 0\nH 0 0 1\nH 1 0 0\n",
    "count.xyz": GOOD_FRAME + "seven\n",
    "energy-text.xyz": _frame(energy="abc"),
    "cut.xyz": GOOD_FRAME + "3\ncomment\nO 0 0 0\n",
    "empty.xyz": "",
    "nan.xyz": GOOD_FRAME + _frame(energy="nan"),
    "inf-forces.xyz": _frame(props="pos:R:3:forces:R:3", forces=" 0.0 inf 0.0"),
    "xx.xyz": GOOD_FRAME + _frame(symbol="Xx"),
    "nan-cell.xyz": GOOD_FRAME + _frame(extra='Lattice="nan 0 0 0 3 0 0 0 3" ', pbc="T T T"),
    "far.xyz": GOOD_FRAME + _frame(z="1e16"),
    "huge-cell.xyz": GOOD_FRAME + _frame(extra='Lattice="1e16 0 0 0 3 0 0 0 3" ', pbc="T T T"),
    "flat.xyz": _frame(extra='Lattice="3 0 0 0 3 0 3 3 0" ', pbc="T T T"),
    "half-charge.xyz": GOOD_FRAME + _frame(extra="charge=0.5 "),
    "big-charge.xyz": GOOD_FRAME + _frame(extra="charge=99999999999999999999 "),
    "mult0.xyz": GOOD_FRAME + _frame(extra="multiplicity=0 "),
    "no-energy.xyz": GOOD_FRAME + GOOD_FRAME.replace(" energy=-10.5", "").replace("0.35",
                                                                                  "0.45"),
    "conflict.xyz": _frame(symbol="S", energy="-1.0") + _frame(symbol="S", energy="-2.0"),
    "garbage.cif": "garbage garbage\n",
    "notes.db": "just text, not SQLite\n" * 10,
    "notes.txt": "not a structure\n",
}


def make_workspace(reg, work) -> None:
    """A registry and working folder for CLI tests: molecules at pbe (good.xyz), dataset d1
    with two versions (alias production), model m1 (alias production, bundle m1.nnp.zip), new
    and bad input files (:data:`BAD_FILES`), a folder ``sub`` and ``folder.xyz``."""
    import ase.io
    import numpy as np
    from helpers import crystal, labelled_molecules
    from safetensors.numpy import save_file

    mols = labelled_molecules()
    ase.io.write(work / "good.xyz", mols, format="extxyz")
    reg.ingest(mols, "pbe", source="good.xyz")
    ase.io.write(work / "new.xyz", labelled_molecules(("C6H6", "NH3"), seed=5),
                 format="extxyz")
    bad = labelled_molecules(("H2O",), seed=9)
    bad[0].info["energy"] = float("nan")
    ase.io.write(work / "bad.xyz", bad, format="extxyz")
    cu = crystal()
    cu.info["energy"] = -3.0
    ase.io.write(work / "crystal.xyz", [cu], format="extxyz")
    for name, text in BAD_FILES.items():
        (work / name).write_text(text)
    (work / "w.pt").write_bytes(b"\x80\x04not a pickle you want")
    (work / "sub").mkdir()
    (work / "folder.xyz").mkdir()
    save_file({"w": np.arange(6, dtype=np.float32)}, work / "w.safetensors")
    reg.create_dataset_version("d1", levels="pbe", seed=1)
    reg.create_dataset_version("d1", levels="pbe", filter="nsites < 8", seed=2)
    reg.alias_dataset("d1:1", "production")
    reg.register_model("m1", [work / "w.safetensors"], architecture="mlp",
                       dataset_version="d1:1")
    reg.set_model_alias("m1:1", "production")
    reg.export_model("m1:1", work / "m1.nnp.zip")

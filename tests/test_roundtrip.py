"""ingest -> export -> ingest is exact for extxyz, ASE .db and ANI HDF5, on both backends."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import counts, crystal, labelled_molecules

LEVELS = ("wb97x/6-31g*", "ccsd(t)/cc-pvdz")


def rich_frames():
    """Molecules (one charged doublet, one in a box) and two crystals with awkward floats:
    every frame at level 0 (energy, forces, dipole, charges; stress on the crystals), two
    frames also at level 1 (``energy_hi``/``forces_hi``)."""
    mols = labelled_molecules()
    mols[1].info["charge"], mols[1].info["multiplicity"] = 1, 2
    mols[2].cell = [8.0, 9.0, 10.0]
    rng = np.random.default_rng(7)
    frames = mols + [crystal(), crystal(1)]
    for a in frames:
        a.positions *= 1 + 1e-13 * np.pi  # 17 significant digits matter
        a.info["energy"] = float(rng.normal(-100, 10)) / 3
        a.arrays["forces"] = rng.normal(size=(len(a), 3)) / 3
        a.info["dipole"] = rng.normal(size=3)
        a.arrays["charges"] = rng.normal(size=len(a)) / 7
    for a in frames[5:]:
        a.info["stress"] = rng.normal(size=6) / 11
    for i in (0, 5):
        frames[i].info["energy_hi"] = rng.normal() * 1e3
        frames[i].arrays["forces_hi"] = rng.normal(size=(len(frames[i]), 3)) * 1e-7
    return frames


def ingest_rich(reg, frames):
    reg.ingest(frames[:5], LEVELS[0])
    reg.ingest(frames[5:], LEVELS[0])
    reg.ingest(frames, LEVELS[1], energy_key="energy_hi", skip_missing=True)


def snapshot(reg):
    """Every stored structure and label as comparable bytes, keyed by structure hash."""
    from sqlalchemy import select

    from registry.store.schema import Label, LevelOfTheory, Structure

    with reg.session() as s:
        st = {r.hash: (r.numbers, r.positions, r.cell, r.pbc, r.charge, r.multiplicity)
              for r in s.execute(select(Structure)).scalars()}
        lab = {(h, name): (np.float64(e).tobytes(), f, d, q, st_, lh)
               for h, name, e, f, d, q, st_, lh in s.execute(
                   select(Structure.hash, LevelOfTheory.name, Label.energy, Label.forces,
                          Label.dipole, Label.charges, Label.stress, Label.hash)
                   .join(Label, Label.structure_id == Structure.id)
                   .join(LevelOfTheory, LevelOfTheory.id == Label.level_id))}
    return st, lab


def reingest(reg, path, fmt):
    energy = "energies" if fmt == "h5" else "energy"
    reg.ingest_files([path])
    for lv in LEVELS:
        tag = "wb97x_6_31g" if lv == LEVELS[0] else "ccsd_t_cc_pvdz"
        reg.ingest_files([path], lv, energy_key=f"{energy}_{tag}", skip_missing=True)


@pytest.mark.parametrize("fmt", ["xyz", "db", "h5"])
def test_roundtrip_two_levels(registry, tmp_path, fmt):
    from registry.core import Registry
    from registry.store.engine import upgrade

    ingest_rich(registry, rich_frames())
    before = snapshot(registry)
    n = counts(registry)
    assert n == (7, 9)
    out = tmp_path / f"out.{fmt}"
    summary = registry.export(out)
    assert summary["structures"] == 7 and out.exists()
    assert summary["levels"][LEVELS[0]]["forces"] == "forces_wb97x_6_31g"
    reingest(registry, str(out), fmt)
    assert counts(registry) == n
    # into a fresh database: identical bytes
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    with Registry(url) as fresh:
        reingest(fresh, str(out), fmt)
        assert snapshot(fresh) == before


@pytest.mark.parametrize("fmt", ["xyz", "extxyz", "db", "hdf5"])
def test_roundtrip_single_level_plain_keys(registry, tmp_path, fmt):
    frames = rich_frames()
    for a in frames:
        a.info.pop("stress", None)
    registry.ingest(frames, LEVELS[0])
    before = snapshot(registry)
    out = tmp_path / f"one.{fmt}"
    s = registry.export(out, [LEVELS[0]])
    assert s["levels"][LEVELS[0]]["energy"] in ("energy", "energies")
    n = counts(registry)
    res = registry.ingest_files([out], LEVELS[0])
    assert (res.labels_existing, res.labels_new, res.structures_new) == (7, 0, 0)
    assert counts(registry) == n and snapshot(registry) == before


def test_export_cli_refuses_unknown_extension_and_existing_file(registry, nnp, capsys,
                                                                tmp_path):
    registry.ingest(labelled_molecules(), "pbe")
    assert nnp("export", "-o", tmp_path / "x.csv") == 2
    assert "unknown extension '.csv'" in capsys.readouterr().err
    assert nnp("export", "-o", tmp_path / "no" / "x.xyz") == 2
    assert "does not exist" in capsys.readouterr().err
    assert nnp("export", "-o", tmp_path / "x.xyz") == 0
    assert nnp("export", "-o", tmp_path / "x.xyz") == 2
    assert "exists" in capsys.readouterr().err
    assert nnp("export", "-o", tmp_path / "x.xyz", "--force", "--level", "nope") == 2
    assert "unknown level of theory 'nope'" in capsys.readouterr().err
    assert nnp("export", "-o", tmp_path / "x.xyz", "--force", "--json") == 0
    assert '"structures": 5' in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

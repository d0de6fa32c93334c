"""OPTIMADE structure fields beyond the composition ones, on both backends, against the
reference implementation's own test structures (shipped with the ``optimade`` package): for
each filter the expected structures are worked out here from the JSON entries themselves."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from ase import Atoms

from registry.errors import BadInput
from registry.io.atoms import atoms_to_batch
from registry.query.fields import RATIO_TOLERANCE


def _entries() -> list[dict]:
    import optimade

    path = os.path.join(os.path.dirname(optimade.__file__), "server", "data",
                        "test_structures.json")
    with open(path) as f:
        return json.load(f)


@pytest.fixture
def optimade_data(registry):
    entries = _entries()
    for e in entries:
        symbols = {sp["name"]: sp["chemical_symbols"][0] for sp in e["species"]}
        atoms = Atoms([symbols[s] for s in e["species_at_sites"]],
                      positions=e["cartesian_site_positions"], cell=e["lattice_vectors"],
                      pbc=[bool(d) for d in e["dimension_types"]])
        atoms.info["chemical_formula_descriptive"] = e["pretty_formula"]
        batch, _ = atoms_to_batch([atoms], source=e["task_id"])
        registry.ingest_batch(batch)
    # one molecule (no cell) so that dimension_types and lattice_vectors tell things apart
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    registry.ingest_batch(atoms_to_batch([water], source="water")[0])
    entries.append({"task_id": "water", "elements": ["H", "O"], "nsites": 3,
                    "elements_ratios": [2 / 3, 1 / 3], "dimension_types": [0, 0, 0],
                    "species_at_sites": ["O", "H", "H"], "lattice_vectors": None,
                    "pretty_formula": "H2O", "structure_features": []})
    return registry, entries


def _ids(reg, text: str) -> set[str]:
    return {r["source"] for r in reg.query(text)}


def _near(ratios, x) -> bool:
    return any(abs(r - x) <= RATIO_TOLERANCE for r in ratios)


CASES = [
    ("elements_ratios HAS 0.25", lambda e: _near(e["elements_ratios"], 0.25)),
    ("elements_ratios HAS 0.333", lambda e: _near(e["elements_ratios"], 1 / 3)),
    ("elements_ratios HAS ALL 0.5, 0.25", lambda e: _near(e["elements_ratios"], 0.5)
     and _near(e["elements_ratios"], 0.25)),
    ("elements_ratios HAS ANY 0.6, 0.625", lambda e: _near(e["elements_ratios"], 0.6)
     or _near(e["elements_ratios"], 0.625)),
    ("elements_ratios HAS ONLY 0.5, 0.25", lambda e: all(
        abs(r - 0.5) <= RATIO_TOLERANCE or abs(r - 0.25) <= RATIO_TOLERANCE
        for r in e["elements_ratios"])),
    ("elements_ratios LENGTH 3", lambda e: len(e["elements_ratios"]) == 3),
    ("elements_ratios HAS 1.0 AND nsites = 1", lambda e: e["nsites"] == 1),
    ("dimension_types HAS 1", lambda e: 1 in e["dimension_types"]),
    ("dimension_types HAS ONLY 0", lambda e: set(e["dimension_types"]) == {0}),
    ("NOT dimension_types HAS 0", lambda e: 0 not in e["dimension_types"]),
    ("dimension_types LENGTH 3", lambda e: True),
    ("lattice_vectors IS KNOWN AND nsites >= 44", lambda e: e["lattice_vectors"] is not None
     and e["nsites"] >= 44),
    ("lattice_vectors IS UNKNOWN", lambda e: e["lattice_vectors"] is None),
    ("structure_features LENGTH > 0", lambda e: False),
    ("structure_features LENGTH 0", lambda e: True),
    ('structure_features HAS "disorder"', lambda e: False),
    ("cartesian_site_positions LENGTH > 43", lambda e: e["nsites"] > 43),
    ("species_at_sites LENGTH > 43", lambda e: len(e["species_at_sites"]) > 43),
    ('species_at_sites HAS "Ti"', lambda e: "Ti" in e["elements"]),
    ('species_at_sites HAS ONLY "Ac", "Mg"', lambda e: set(e["elements"]) <= {"Ac", "Mg"}),
    ('chemical_formula_descriptive CONTAINS "c2Ag"', lambda e: "c2Ag" in e["pretty_formula"]),
    ('chemical_formula_descriptive STARTS WITH "Ag2CClNO4"',
     lambda e: e["pretty_formula"].startswith("Ag2CClNO4")),
    ('chemical_formula_descriptive ENDS WITH "NO4S"',
     lambda e: e["pretty_formula"].endswith("NO4S")),
    ('chemical_formula_descriptive = "H2O"', lambda e: e["pretty_formula"] == "H2O"),
    ('chemical_formula_anonymous = "A2BC" AND NOT chemical_formula_descriptive = "Ac2AgPb"',
     lambda e: e.get("formula_anonymous") == "A2BC" and e["pretty_formula"] != "Ac2AgPb"),
    ("chemical_formula_descriptive IS KNOWN AND nsites >= 44", lambda e: e["nsites"] >= 44),
]


def test_optimade_fields_match_the_reference_data(optimade_data):
    reg, entries = optimade_data
    wrong = {}
    for text, want in CASES:
        expected = {e["task_id"] for e in entries if want(e)}
        got = _ids(reg, text)
        if got != expected:
            wrong[text] = {"missing": expected - got, "extra": got - expected}
    assert not wrong


def test_descriptive_formula_falls_back_to_hill(registry):
    registry.ingest_batch(atoms_to_batch([Atoms("CH4", positions=np.eye(5, 3) * 1.1)])[0])
    assert [r["formula"] for r in registry.query('chemical_formula_descriptive = "CH4"')] \
        == ["CH4"]


@pytest.mark.parametrize("text,says", [
    ('elements:elements_ratios HAS "Ag":0.2', "zipped HAS"),
    ("dimension_types HAS < 1", "HAS with an operator"),
    ('elements_ratios HAS "a"', "elements_ratios needs a number"),
    ("dimension_types HAS 0.5", "dimension_types needs an integer"),
    ("lattice_vectors = 3", "comparison is not supported on lattice_vectors"),
    ("cartesian_site_positions HAS 1", "HAS is not supported on cartesian_site_positions"),
    ('species HAS "x"', "unknown field 'species'"),
])
def test_unsupported_forms_say_so(text, says):
    from registry.query import parse

    with pytest.raises(BadInput, match=says):
        parse(text)

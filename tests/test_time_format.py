"""Every timestamp the CLI prints as JSON (and writes into model manifests) is ISO 8601 UTC
with a ``Z``, the same on SQLite (which stores naive UTC) and PostgreSQL (zoned)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
from helpers import labelled_molecules
from safetensors.numpy import save_file

from registry.times import iso_utc, json_default

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
DATE_LIKE = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:")


def times_in(obj, found: list) -> list:
    """Every string in ``obj`` that starts like a date and time."""
    if isinstance(obj, dict):
        for v in obj.values():
            times_in(v, found)
    elif isinstance(obj, list):
        for v in obj:
            times_in(v, found)
    elif isinstance(obj, str) and DATE_LIKE.match(obj):
        found.append(obj)
    return found


def test_iso_utc_reads_naive_as_utc_and_converts_zones():
    t = datetime(2026, 12, 3, 16, 22, 5, 123456)
    assert iso_utc(t) == "2026-12-03T16:22:05.123456Z"
    assert iso_utc(t.replace(tzinfo=UTC)) == "2026-12-03T16:22:05.123456Z"
    plus2 = t.replace(tzinfo=timezone(timedelta(hours=2)))
    assert iso_utc(plus2) == "2026-12-03T14:22:05.123456Z"
    assert iso_utc(datetime(2026, 1, 1)) == "2026-01-01T00:00:00.000000Z"
    assert json.dumps({"t": t}, default=json_default) == '{"t": "2026-12-03T16:22:05.123456Z"}'


def test_json_output_times_are_iso_utc_with_z(registry, nnp, capsys, tmp_path):
    registry.ingest(labelled_molecules(), "pbe", source="mols.xyz")
    registry.create_dataset_version("d", levels="pbe", seed=1)
    weights = tmp_path / "w.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32)}, str(weights))
    assert nnp("models", "register", "m", weights, "--architecture", "ani") == 0
    capsys.readouterr()
    found = []
    for argv in (["query", "nsites > 0", "--format", "json"], ["models", "show", "m", "--json"],
                 ["models", "list", "m", "--json"], ["runs", "list", "--json"],
                 ["dataset", "show", "d", "--json"], ["dataset", "list", "--json"]):
        assert nnp(*argv) == 0, argv
        out = json.loads(capsys.readouterr().out)
        got = times_in(out, [])
        assert got, argv  # each of these prints at least one time
        found += got
    assert nnp("models", "pull", "m", "-o", tmp_path / "pulled") == 0
    manifest = json.loads((tmp_path / "pulled" / "model.json").read_text())
    found += times_in(manifest, [])
    assert manifest["created_at"].endswith("Z")
    bad = [t for t in found if not ISO_Z.match(t)]
    assert not bad, bad

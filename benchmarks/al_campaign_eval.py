"""A campaign's committees scored on a fixed test set, with its per-iteration numbers.

    NNP_DATABASE_URL=... python benchmarks/al_campaign_eval.py CAMPAIGN aluminium|organic

The test set (built and ingested once into the campaign's registry as dataset
``SYSTEM-test``): for aluminium EMT MD of bulk at 300 and 900 K, the (111) slab at 600 K, the
(100) slab at 900 K and the melt at 2500 K, 20 frames each
(``systems.aluminium_test_set``); for the organic campaign, MD of the six seed molecules
at 300 and 600 K with GFN2-xTB, 8 frames each (``systems.organic_test_set``). Every
iteration's committee is scored on all of it (``pipelines.training.evaluate.evaluate``);
the table (markdown) adds the iteration's candidates, ρ, selections, labels, early MD stops
and wall time per phase from ``nnp al status``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")


def test_set(reg, system: str) -> str:
    from pipelines.active_learning import systems

    name = f"{system}-test"
    if not any(d["name"] == name for d in reg.list_datasets()):
        frames = (systems.aluminium_test_set() if system == "aluminium"
                  else systems.organic_test_set())
        level = systems.SYSTEMS[system][0]
        reg.ingest(frames, level, source=f"{system} test set")
        reg.create_dataset_version(name, levels=[level], split="0,0,1", group_by="none",
                                   filter=f'_nnp_source = "{system} test set"')
    return f"{name}@latest"


def main() -> None:
    from pipelines.active_learning.report import status
    from pipelines.training.evaluate import evaluate
    from registry.core import Registry

    campaign, system = sys.argv[1], sys.argv[2]
    with Registry() as reg:
        ref = test_set(reg, system)
        report = status(reg, campaign)
        print(f"campaign {campaign}: {report['state']} ({report['stop_reason']}); test set "
              f"{reg.resolve_dataset(ref)['ref']}")
        print("| iter | trained on | candidates | ρ median (max), eV/√atom | selected | "
              "labeled (failed) | MD stops | train s | sample s | label s | rest s | "
              "bookkeeping s | test E MAE (meV/atom) | test F MAE (meV/Å) |")
        print("|---" * 14 + "|")
        for it in report["iterations"]:
            m = evaluate(reg, it["model_version"], ref, split="test")["metrics"]["test"]
            sec = it["seconds"]
            rest = sum(sec.get(k, 0.0) for k in ("select", "ingest", "dataset"))
            rho = it["rho"] or {}
            n = reg.resolve_dataset(it["dataset_version"])["n_structures"]
            print(f"| {it['iteration']} | {it['dataset_version']} ({n}) | "
                  f"{it['n_candidates']} | {rho.get('median', float('nan')):.3f} "
                  f"({rho.get('max', float('nan')):.3f}) | {it['n_selected']} | "
                  f"{it['n_labeled']} ({it['n_failed']}) | {it['n_md_stops']} | "
                  f"{sec.get('train', 0):.0f} | {sec.get('sample', 0):.0f} | "
                  f"{sec.get('label', 0):.1f} | {rest:.1f} | "
                  f"{sec.get('bookkeeping', 0):.1f} | "
                  f"{1000 * m['energy_mae_ev_per_atom']:.1f} | "
                  f"{1000 * m['forces_mae_ev_per_a']:.0f} |")


if __name__ == "__main__":
    main()

"""A two-iteration campaign for ``nnp demo``: :func:`run_demo_campaign`.

Starts from the demo's dataset version of small molecules, samples MD of a few of them with
the committee at two temperatures, labels the most uncertain frames at the dataset's level
(``labeler``) and retrains (warm start) once; writes the campaign's plot and returns its status.
"""

from __future__ import annotations

from pathlib import Path

SEEDS = ("CH3OH", "C2H6", "CH3CN")


def run_demo_campaign(reg_url, dataset_ref: str, *, name: str = "demo-al",
                      labeler: str = "gfn2-xtb", out_dir=Path(".nnp/demo"), client=None,
                      console=None, iterations: int = 2, ensemble: int = 2,
                      epochs: int = 40, per_iteration: int = 12, seed: int = 7,
                      train_config: dict | None = None) -> dict:
    """Run (or, when it exists unfinished, resume) campaign ``name`` from ``dataset_ref``
    (a version labeled at ``labeler``'s level, covering H, C, N, O); returns its status
    with ``png`` (the plot's path). ``reg_url``: a URL or an open registry; ``client``: a
    Dask client (default: a local cluster); ``console``: a rich console for progress;
    ``train_config``: the committee's training keys (``nnp demo`` passes its small network)."""
    import ase.io
    from ase.build import molecule

    from registry.active_learning.campaigns import campaign_exists, get_campaign

    from .campaign import registry_of, resume, start
    from .report import status, status_png
    from .settings import Settings

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = out_dir / "al_seeds.extxyz"
    ase.io.write(seeds, [molecule(m) for m in SEEDS], format="extxyz")
    settings = Settings(ensemble=ensemble, temperatures=[300.0, 800.0], steps=100,
                        interval=10, timestep_fs=0.5, threshold=0.005,
                        per_iteration=per_iteration, iterations=iterations, epochs=epochs,
                        warm_epochs=max(10, epochs // 2), patience=max(10, epochs // 4),
                        train_config=dict(train_config or {}), seed=seed)
    on_event = _printer(console) if console is not None else None
    with registry_of(reg_url) as reg:
        if not campaign_exists(reg, name):
            start(reg, name, dataset_ref, labeler, seeds, settings, client=client,
                  on_event=on_event)
        elif get_campaign(reg, name)["state"] != "finished":
            resume(reg, name, client=client, on_event=on_event)
        report = status(reg, name)
        png = out_dir / "al.png"
        png.write_bytes(status_png(reg, report))
    report["png"] = str(png)
    if console is not None:
        for it in report["iterations"]:
            test = ((it["metrics"] or {}).get("test") or {})
            console.print(f"AL iteration {it['iteration']}: {it['model_version']} "
                          f"{it['n_candidates']} candidates, {it['n_selected']} selected "
                          f"(ρ > {it['threshold']:g} eV/√atom: "
                          f"{(it['fraction_above'] or 0):.0%}), {it['n_labeled']} labeled, "
                          f"test E MAE {test.get('energy_mae_ev', float('nan')):.3f} eV "
                          f"→ {it['new_dataset_version'] or '(unchanged)'}", highlight=False)
        console.print(f"campaign {name}: {report['state']} ({report['stop_reason']}); "
                      f"plot {png}", highlight=False)
    return report


def _printer(console):
    def on_event(ev: dict) -> None:
        if ev["event"] in ("selected", "ingested", "trained"):
            text = {"trained": lambda: f"AL iteration {ev['iteration']}: trained "
                                       f"{ev['model']}",
                    "selected": lambda: f"AL iteration {ev['iteration']}: "
                                        f"{ev['n_selected']} of {ev['n_candidates']} "
                                        f"candidates selected",
                    "ingested": lambda: f"AL iteration {ev['iteration']}: "
                                        f"{ev['labels']} labels ingested"}[ev["event"]]()
            console.print(text, highlight=False)

    return on_event

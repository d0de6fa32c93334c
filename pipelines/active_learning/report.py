"""``nnp al status``: the campaign's report (JSON) and its plot (PNG).

Each iteration carries the diversity numbers stored for the dataset version it made (by
``nnp diversity``, ``nnp al status --diversity`` or ``nnp demo``; docs/diversity.md): a
list, one entry per feature source and reference, empty when none were computed.
"""

from __future__ import annotations

from io import BytesIO


def status(reg, name: str, *, compute_diversity: bool = False, client=None) -> dict:
    """:func:`registry.active_learning.status.campaign_status` plus, per iteration, the
    stored diversity numbers of its new dataset version; ``compute_diversity`` first computes
    (AEV features, every element; stored) those that are missing."""
    from registry.active_learning.status import campaign_status

    from ..diversity.store import stored_numbers

    out = campaign_status(reg, name)
    for it in out["iterations"]:
        ref = it["new_dataset_version"]
        if ref and compute_diversity:
            from ..diversity import diversity_numbers

            diversity_numbers(reg, ref, client=client)
        it["diversity"] = stored_numbers(reg, ref) if ref else []
    return out


def status_png(reg, report: dict) -> bytes:
    """Four panels per iteration: ρ of the candidates (selected ones marked) against the
    threshold, the fraction above it, labels (ok and failed, cumulative), and the committee's
    validation and test errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from registry.active_learning.candidates import rho_values
    from registry.active_learning.iterations import list_iterations

    its = report["iterations"]
    rows = {r["iteration"]: r for r in list_iterations(reg, _campaign_id(reg, report))}
    ks = [it["iteration"] for it in its]
    fig, ax = plt.subplots(2, 2, figsize=(10, 7.5))
    a = ax[0, 0]
    for it in its:
        vals = rho_values(reg, rows[it["iteration"]]["id"])
        k = it["iteration"]
        if vals["all"]:
            jitter = np.random.default_rng(k).uniform(-0.25, 0.25, len(vals["all"]))
            a.scatter(k + jitter, vals["all"], s=4, color="0.6", alpha=0.6,
                      label="candidates" if k == ks[0] else None)
        if vals["selected"]:
            a.scatter([k] * len(vals["selected"]), vals["selected"], s=14, color="C3",
                      label="selected" if k == ks[0] else None)
        if it["threshold"] is not None:
            a.hlines(it["threshold"], k - 0.4, k + 0.4, color="k", lw=1.5,
                     label="threshold" if k == ks[0] else None)
    a.set_yscale("log")
    a.set(xlabel="iteration", ylabel="ρ = σ(E) / √atoms (eV)", title="committee disagreement")
    if ks:
        a.legend(fontsize=8)
    a = ax[0, 1]
    frac = [it["fraction_above"] if it["fraction_above"] is not None else np.nan for it in its]
    a.plot(ks, frac, "o-")
    a.set(xlabel="iteration", ylabel="fraction above threshold", ylim=(0, 1.05),
          title="sampled frames above threshold")
    a = ax[1, 0]
    a.plot(ks, np.cumsum([it["n_labeled"] for it in its]), "o-", label="ok labels")
    a.plot(ks, np.cumsum([it["n_failed"] for it in its]), "s--", label="failed labels")
    a.set(xlabel="iteration", ylabel="labels (cumulative)", title="labels")
    a.legend(fontsize=8)
    a = ax[1, 1]
    for split, style in (("val", "o-"), ("test", "s--")):
        for key, unit in (("energy_mae_ev_per_atom", "E MAE/atom (eV)"),
                          ("forces_mae_ev_per_a", "F MAE (eV/Å)")):
            ys = [((it["metrics"] or {}).get(split) or {}).get(key) for it in its]
            if any(y is not None for y in ys):
                a.plot(ks, [np.nan if y is None else y for y in ys], style,
                       label=f"{split} {unit}")
    a.set(xlabel="iteration", ylabel="error", title="committee on its dataset version")
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=8)
        a.set_yscale("log")
    for a in ax.flat:
        if ks:
            a.set_xticks(ks)
    fig.suptitle(f"active learning {report['name']}: {report['state']}"
                 f"{' (' + report['stop_reason'] + ')' if report['stop_reason'] else ''}",
                 fontsize=10)
    fig.tight_layout()
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _campaign_id(reg, report: dict) -> int:
    from registry.active_learning.campaigns import get_campaign

    return get_campaign(reg, report["name"])["id"]

"""``nnp evaluate``: a registered model scored on a dataset version, recorded as a run.

Energies are compared as totals (the model's residual plus its stored reference energies
against the version's energies), so a model may be scored on another version of the same
level. Metrics have the shape ``nnp train --json`` prints, for the ensemble mean and for each
member; force errors appear when the chosen split has forces. Bad input (unknown model or
dataset, an empty split, elements the model lacks, a Δ model scored on a Δ version of another
target, a Δ model whose base level has no calculator) is refused before the run.

A Δ model (HIGH − LOW) is scored on a plain version (e.g. at HIGH) as totals: the base level's
energy and forces, from its reference calculator, are added to every prediction (recorded as
``base_level`` in the run's result). On a Δ version of its own target it is scored as the
correction it learned (the base cancels, so no calculator is needed).
"""

from __future__ import annotations

import numpy as np

from registry.errors import BadInput

from .data import SPLITS, TrainingData, training_data

SPLIT_CHOICES = (*SPLITS, "all")


def evaluate(reg, model_ref: str, dataset_ref: str, *, split: str = "test",
             device: str = "cpu", batch_size: int = 64, strict: bool = False) -> dict:
    """Score ``model_ref`` on ``dataset_ref``'s ``split`` (train, val, test or all).

    Returns ``{"model", "dataset", "run_id", "metrics": {split: ...}, "members": [...],
    "parity_png": bytes}``."""
    from registry.chem.elements import SYMBOLS, symbol_to_z

    from .archs import check_model_arch, load_ensemble
    from .device import resolve_device
    from .loop import torch_dtype
    from .metrics import split_metrics
    from .plots import parity_png
    from .torch_io import load_state_dicts

    if split not in SPLIT_CHOICES:
        raise BadInput(f"--split {split!r}: expected one of {', '.join(SPLIT_CHOICES)}")
    dev = resolve_device(device)
    pulled = reg.pull_model(model_ref, strict=strict)
    cfg = pulled.config or {}
    arch = check_model_arch(pulled, "evaluate")
    info = reg.resolve_dataset(dataset_ref)
    base = None
    if cfg.get("delta"):
        ddelta = (info["params"] or {}).get("delta")
        if ddelta and f"{ddelta['high']}-{ddelta['low']}" != cfg.get("target"):
            raise BadInput(f"model {pulled.ref} predicts {cfg.get('target')}; dataset "
                           f"{info['ref']} holds {ddelta['high']}-{ddelta['low']}")
        if not ddelta:
            from .calculator import base_calculator

            base = base_calculator(cfg, pulled.ref)
    data = training_data(reg.materialize(info["ref"]))
    if arch == "hipnn":
        from .hipnn import check_periodic

        check_periodic(g.pbc for g in data.groups if g.pbc is not None)
    splits = SPLITS if split == "all" else (split,)
    chosen = np.isin(data.split, [SPLITS.index(s) for s in splits])
    if not chosen.any():
        raise BadInput(f"dataset {info['ref']} has no structures in its {split} split")
    if not np.isfinite(data.column("energy")[chosen]).any():
        raise BadInput(f"dataset {info['ref']} has no energies in its {split} split")
    lacking = sorted(set(data.elements) - {symbol_to_z(s) for s in cfg["elements"]})
    if lacking:
        raise BadInput(f"model {pulled.ref} handles {', '.join(cfg['elements'])}; dataset "
                       f"{info['ref']} has {', '.join(SYMBOLS[z] for z in lacking)}")
    forces = any(data.n_with_forces(s) for s in splits)
    params = {"model": pulled.ref, "dataset": info["ref"], "split": split, "device": dev}
    if base is not None:
        params["base_level"] = cfg["base_level"]
    with reg.run("evaluate", params) as run:
        run.consumed("model_version", pulled.info["id"], ref=pulled.ref,
                     sha256=pulled.info["content_hash"])
        run.consumed("dataset_version", info["id"], ref=info["ref"], sha256=info["hash"])
        dtype = torch_dtype(cfg.get("dtype", "float32"))
        states = load_state_dicts(pulled)
        model = load_ensemble(cfg, states).to(dev, dtype).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        e_members, f_members = predict_members(model, data, splits, dev, dtype, forces,
                                               batch_size, n_members=len(states))
        if base is not None:
            e_base, f_base = base_predictions(base, data, splits, forces)
            e_members = e_members + e_base
            if f_members is not None:
                f_members = f_members + f_base
        refs = np.zeros(256)
        for s, e in (cfg.get("reference_energies_ev") or {}).items():
            refs[symbol_to_z(s)] = e
        model_ref_sum = data.atom_sum(refs)
        e_true = data.column("energy") + data.energy_ref
        f_true = data.flat_forces() if forces else None
        off = data.atom_offsets()

        def score(e_res, f_pred):
            return split_metrics(e_res + model_ref_sum, e_true, data.n_atoms, data.split,
                                 f_pred, f_true, off, splits)

        metrics = score(e_members.mean(axis=0), None if f_members is None
                        else f_members.mean(axis=0))
        members = [{"member": k, "metrics": score(e_members[k], None if f_members is None
                                                  else f_members[k])}
                   for k in range(len(e_members))]
        run.result = {"metrics": metrics}
        if base is not None:
            run.result["base_level"] = cfg["base_level"]
    mean_e = e_members.mean(axis=0) + model_ref_sum
    energy = {s: ((e_true - model_ref_sum)[data.split == SPLITS.index(s)],
                  (mean_e - model_ref_sum)[data.split == SPLITS.index(s)])
              for s in splits if (data.split == SPLITS.index(s)).any()}
    fpanel = None
    if f_members is not None:
        from .metrics import atom_mask

        fm = f_members.mean(axis=0)
        fpanel = {s: (f_true[atom_mask(off, data.split == SPLITS.index(s))],
                      fm[atom_mask(off, data.split == SPLITS.index(s))])
                  for s in splits if (data.split == SPLITS.index(s)).any()}
    png = parity_png(energy, f"{pulled.ref} on {info['ref']} ({split})", fpanel,
                     energy_label="energy − Σ reference (eV)")
    return {"model": pulled.ref, "dataset": info["ref"], "run_id": run.id,
            "metrics": metrics, "members": members, "parity_png": png}


def predict_members(model, data: TrainingData, splits, device, dtype, forces: bool,
                    batch_size: int, *, n_members: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Each member's residual energies (K = ``n_members``, N) in eV and forces (K, M, 3) for
    the structures of ``splits`` (NaN elsewhere); ``model`` is an ensemble of either
    architecture (:func:`.archs.load_ensemble`)."""
    import torch

    from .ani import HARTREE_EV
    from .periodic import model_energies

    k = n_members
    off = data.atom_offsets()
    e_out = np.full((k, data.n_structures), np.nan)
    f_out = np.full((k, int(off[-1]), 3), np.nan) if forces else None
    for split in splits:
        for b in data.batches(split, batch_size, device=device, dtype=dtype):
            coords = b.coordinates.detach().requires_grad_(forces)
            with torch.set_grad_enabled(forces):
                e = model_energies(model, b.species, coords, b.cell, b.pbc,
                                   ensemble_values=True) * HARTREE_EV
            e_out[:, b.index] = e.detach().double().cpu().numpy()
            if forces:
                for m in range(k):
                    (g,) = torch.autograd.grad(e[m].sum(), coords, retain_graph=m < k - 1)
                    fa = -g.double().cpu().numpy()
                    for i, row in enumerate(b.index):
                        f_out[m, off[row]:off[row + 1]] = fa[i, :off[row + 1] - off[row]]
    return e_out, f_out


def base_predictions(calc, data: TrainingData, splits, forces: bool
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """The base level's energies (N,) and forces (M, 3) from the ASE calculator ``calc`` for
    the structures of ``splits`` (NaN elsewhere)."""
    from ase import Atoms

    off = data.atom_offsets()
    e_out = np.full(data.n_structures, np.nan)
    f_out = np.full((int(off[-1]), 3), np.nan) if forces else None
    codes = [SPLITS.index(s) for s in splits]
    for g in data.groups:
        for i, row in enumerate(g.index):
            if g.split[i] not in codes:
                continue
            n = int(g.n_atoms[i])
            a = Atoms(numbers=g.numbers[i, :n], positions=g.positions[i, :n],
                      cell=g.cell if g.cell is not None else None,
                      pbc=g.pbc if g.pbc is not None else False)
            a.calc = calc
            e_out[row] = a.get_potential_energy()
            if forces:
                f_out[off[row]:off[row + 1]] = a.get_forces()
    return e_out, f_out

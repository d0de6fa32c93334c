"""Demo training step: materialize a dataset version, fit the radial potential, register it.

The training run is recorded in provenance (consumes the dataset version, produces the model
version); the parity plot is stored with the model version as an extra file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def unbucket(mat) -> tuple[list, list, np.ndarray, np.ndarray]:
    """Materialized buckets -> ragged (numbers, positions) lists, energies and splits."""
    numbers, positions, energies, splits = [], [], [], []
    for b in mat.buckets:
        for i in range(len(b["structure_id"])):
            n = int(b["n_atoms"][i])
            numbers.append(b["numbers"][i, :n].astype(np.int64))
            positions.append(b["positions"][i, :n])
        energies.append(b["energy"])
        splits.append(b["split"])
    return numbers, positions, np.concatenate(energies), np.concatenate(splits)


def train_and_register(reg, dataset_ref: str, model_name: str, level: str, out_dir: Path,
                       *, epochs: int = 150, seed: int = 0, on_epoch=None) -> dict:
    """Fit :class:`RadialPotential` to ``dataset_ref`` and register it as ``model_name``."""
    from ..reporting import parity_plot
    from .fit import fit_energies
    from .torch_io import register_torch_model

    params = {"dataset": dataset_ref, "epochs": epochs, "seed": seed, "model": model_name,
              "architecture": "radial-aev-mlp"}
    with reg.run("train", params) as run:
        mat = reg.materialize(dataset_ref)
        run.consumed("dataset_version", reg.resolve_dataset(dataset_ref)["id"],
                     ref=dataset_ref, sha256=mat.hash)
        numbers, positions, energies, split = unbucket(mat)
        fit = fit_energies(numbers, positions, energies, split, epochs=epochs, seed=seed,
                           on_epoch=on_epoch)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot = out_dir / f"{model_name}-parity.png"
        parity_plot(fit.predictions, plot, f"{model_name} on {dataset_ref}")
        version = register_torch_model(
            reg, model_name, fit.model, architecture="radial-aev-mlp",
            config=fit.model.config, elements=fit.model.elements, cutoff=fit.model.config[
                "cutoff"], units={"energy": "eV", "length": "Å"}, level=level,
            dataset_version=dataset_ref, metrics=fit.metrics,
            extras={"parity.png": plot.read_bytes()}, run=run,
            description="ANI-style radial AEV + per-element MLP (demo)")
        run.result = {"metrics": fit.metrics, "model": version["ref"]}
    return {"model": version, "metrics": fit.metrics, "parity_png": str(plot)}

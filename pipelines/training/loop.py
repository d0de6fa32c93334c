"""Training one ensemble member: AdamW, ANI-style loss, plateau schedule, early stopping.

Loss per batch (eV units): ``energy_weight · mean(ΔE² / √n)`` over structures with an energy
(torchani's per-atom normalisation) ``+ forces_weight · mean(Σ|ΔF|² / n)`` over structures with
forces, the predicted forces being −∂E/∂x (double backward in training): for ANI from the AEVs
and position Jacobians cached per dataset version (:mod:`.aev_cache`, the default), else by
autograd through the whole model. After
each epoch the validation loss (the same expression on the validation split; the training loss
when that split is empty) drives ``ReduceLROnPlateau`` and early stopping with ``patience``;
the weights of the best validation epoch are the result.

Reproducibility: the member's initial weights come from its seed alone
(:func:`.archs.new_member`, ANI or HIP-NN), batches are shuffled by a ``numpy`` generator
seeded from it, and on CPU the task runs with one torch thread and
``torch.use_deterministic_algorithms(True)``; the same data, config and seed then give
bit-identical weights. The one-thread setting stays on for the process (a training worker
uses one core, as the design has it).
"""

from __future__ import annotations

import time

import numpy as np

from .aev_cache import energies_forces, features_for
from .ani import AUTO_FORCES_WEIGHT, HARTREE_EV
from .archs import new_member
from .data import SPLITS, TrainingData
from .metrics import split_metrics
from .periodic import model_energies


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def forces_weight(config: dict, data: TrainingData) -> float:
    """The configured forces weight, or the automatic one (0.1 when the data has forces)."""
    w = config.get("forces_weight")
    if w is None:
        return AUTO_FORCES_WEIGHT if data.n_with_forces("train") else 0.0
    return float(w)


def pin_determinism(device: str) -> None:
    """One torch thread and, on CPU, ``torch.use_deterministic_algorithms(True)``, for the
    whole process: switching either back while another member trains in the same process
    (a threaded worker) would change that member's arithmetic mid-run."""
    import torch

    torch.set_num_threads(1)
    if str(device).startswith("cpu"):
        torch.use_deterministic_algorithms(True)


def energies_ev(model, batch, forces: bool, create_graph: bool = False):
    """(energies eV (B,), forces eV/Å (B, n, 3) or None) of a batch: from its cached AEVs
    and Jacobians when it carries them (:mod:`.aev_cache`), else by the model and autograd."""
    import torch

    if getattr(batch, "cached", None) is not None:
        e, f = energies_forces(model, batch, forces, create_graph)
        return e * HARTREE_EV, (None if f is None else f * HARTREE_EV)
    coords = batch.coordinates
    if forces:
        coords = coords.detach().requires_grad_(True)
    e = model_energies(model, batch.species, coords, batch.cell, batch.pbc) * HARTREE_EV
    if not forces:
        return e, None
    (grad,) = torch.autograd.grad(e.sum(), coords, create_graph=create_graph)
    return e, -grad


def batch_loss(model, batch, ew: float, fw: float, create_graph: bool):
    """(loss, energy |error| sum, structures with energy) of one batch."""
    import torch

    e, f = energies_ev(model, batch, fw > 0, create_graph)
    he = batch.has_energy
    de = torch.where(he, e - batch.energy, torch.zeros_like(e))
    ne = he.sum()
    loss = ew * (de ** 2 / batch.n_atoms.sqrt()).sum() / ne.clamp(min=1)
    if f is not None:
        hf = batch.has_forces
        per = ((f - batch.forces) ** 2).sum(dim=(1, 2)) / batch.n_atoms
        loss = loss + fw * torch.where(hf, per, torch.zeros_like(per)).sum() \
            / hf.sum().clamp(min=1)
    return loss, float(de.detach().abs().sum()), int(ne)


def _epoch_loss(model, batches, ew, fw) -> tuple[float | None, float | None]:
    """(mean loss per structure-weighted batch, energy MAE) over ``batches``, no update."""
    if not batches:
        return None, None
    total, abs_e, n_e, n = 0.0, 0.0, 0, 0
    for b in batches:
        loss, ae, ne = batch_loss(model, b, ew, fw, create_graph=False)
        total += float(loss.detach()) * len(b.index)
        n += len(b.index)
        abs_e += ae
        n_e += ne
    return total / n, (abs_e / n_e if n_e else None)


def train_member(data: TrainingData, config: dict, seed: int, device: str = "cpu",
                 on_epoch=None, *, init_state: dict | None = None, frozen=(),
                 resume: dict | None = None, on_checkpoint=None) -> dict:
    """Train one member; returns ``state_dict`` (best validation epoch), ``curve`` (one dict
    per epoch: epoch, train_loss, val_loss, val_energy_mae_ev, lr), ``best_epoch``,
    ``epochs``, ``seconds``, ``seconds_per_epoch``, ``forces_weight``, ``metrics`` (per split)
    and ``predictions`` (residual energies by global row, and per-atom forces when trained).

    ``init_state``: parameters to start from (transfer learning; only the parameters are
    taken, so the member keeps its own energy shifter and AEV constants). ``frozen``: names
    of parameters that stay fixed (no gradient, not given to the optimizer). ``resume``: a
    checkpoint from :func:`read_checkpoint`, continued exactly where it was written.
    ``on_checkpoint(epoch, data: bytes, done: bool)`` receives a checkpoint every
    ``checkpoint_every`` epochs and when the member stops."""
    import torch

    ew, fw = float(config["energy_weight"]), forces_weight(config, data)
    dtype = torch_dtype(config["dtype"])
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    pin_determinism(device)
    model = new_member(config, seed, device, dtype)
    if init_state is not None:
        load_parameters(model, init_state)
    frozen = set(frozen)
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    # fused: torch's one-kernel AdamW, the same update as its loop over parameters, faster
    opt = torch.optim.AdamW([p for _, p in model.named_parameters() if p.requires_grad],
                            lr=config["lr"], weight_decay=config["weight_decay"],
                            fused=torch.device(device).type in ("cpu", "cuda"))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=config["lr_factor"], patience=config["lr_patience"],
        min_lr=config["min_lr"])
    bs, forces = int(config["batch_size"]), fw > 0
    every = int(config.get("checkpoint_every") or 0)
    feats, cache_status = features_for(data, model, config, device, dtype, forces)
    val = data.batches("val", bs, device=device, dtype=dtype, forces=forces, features=feats)
    best, best_state, best_epoch, waited, curve = np.inf, None, 0, 0, []
    start, done = 1, False
    if resume is not None:
        st = resume["state"]
        model.load_state_dict({k: v.to(device) for k, v in resume["model"].items()})
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(st["scheduler"])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(resume["torch_rng"])
        best, best_epoch, waited, curve = st["best"], st["best_epoch"], st["waited"], \
            st["curve"]
        best_state = {k: v.to(device) for k, v in resume["best"].items()}
        start, done = st["epoch"] + 1, st["done"]
    last = int(config["epochs"])
    for epoch in range(start, last + 1):
        if done:
            break
        model.train()
        total, n = 0.0, 0
        for b in data.batches("train", bs, device=device, dtype=dtype, rng=rng,
                              forces=forces, features=feats):
            opt.zero_grad(set_to_none=True)
            loss, _, _ = batch_loss(model, b, ew, fw, create_graph=forces)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b.index)
            n += len(b.index)
        train_loss = total / max(n, 1)
        model.eval()
        val_loss, val_mae = _epoch_loss(model, val, ew, fw)
        score = train_loss if val_loss is None else val_loss
        if not np.isfinite(score):
            raise FloatingPointError(f"loss became {score} at epoch {epoch} (seed {seed});"
                                     f" lower lr or check the labels")
        sched.step(score)
        lr = opt.param_groups[0]["lr"]
        curve.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                      "val_energy_mae_ev": val_mae, "lr": lr})
        if score < best:
            best, best_epoch, waited = float(score), epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            waited += 1
        if on_epoch is not None:
            on_epoch(curve[-1])
        done = waited >= config["patience"] or epoch == last
        if on_checkpoint is not None and (done or (every and epoch % every == 0)):
            on_checkpoint(epoch, write_checkpoint(
                model, opt, sched, rng, best_state,
                {"epoch": epoch, "done": done, "best": best, "best_epoch": best_epoch,
                 "waited": waited, "curve": curve}), done)
        if _epoch_hook is not None:
            _epoch_hook(seed, epoch)
        if done:
            break
    model.load_state_dict(best_state)
    model.eval()
    pred = predict(model, data, device, dtype, forces, bs, features=feats)
    seconds = time.perf_counter() - t0
    return {"state_dict": {k: v.to("cpu") for k, v in best_state.items()}, "curve": curve,
            "best_epoch": best_epoch, "epochs": len(curve), "seconds": seconds,
            "seconds_per_epoch": seconds / max(len(curve), 1), "forces_weight": fw,
            "predictions": pred, "metrics": residual_metrics(data, pred),
            "resumed_at": None if resume is None else resume["state"]["epoch"],
            "aev_cache": cache_status}


# A test hook: called as ``_epoch_hook(seed, epoch)`` after each epoch's checkpoint, so a
# test can stop a member the way a killed worker would.
_epoch_hook = None


def load_parameters(model, state: dict) -> None:
    """Copy the parameters (not the buffers) of ``state`` into ``model``; shapes must match."""
    import torch

    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state))
    if missing:
        raise ValueError(f"the starting weights lack {len(missing)} parameter(s), e.g. "
                         f"{missing[0]}")
    with torch.no_grad():
        for name, p in params.items():
            src = torch.as_tensor(state[name])
            if tuple(src.shape) != tuple(p.shape):
                raise ValueError(f"parameter {name}: shape {tuple(src.shape)} in the starting "
                                 f"weights, {tuple(p.shape)} in the member")
            p.copy_(src.to(p.device, p.dtype))


# -- checkpoints ------------------------------------------------------------------------------
# One safetensors file: the tensors under "model.", "best." (the best epoch's state, for early
# stopping), "optim.<index>.<name>" (AdamW's per-parameter state) and "torch_rng"; everything
# else (epoch, early-stopping counters, the learning curve, the scheduler, the optimizer's
# param groups, the numpy generator's state) as JSON in the one metadata entry
# "nnp_checkpoint". No pickle.
CHECKPOINT_FORMAT = 1


def write_checkpoint(model, opt, sched, rng, best_state, state: dict) -> bytes:
    import json

    import torch
    from safetensors.torch import save

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
    osd = opt.state_dict()
    for idx, per in osd["state"].items():
        for name, v in per.items():
            if not torch.is_tensor(v):
                raise TypeError(f"optimizer state {name} is not a tensor")
            tensors[f"optim.{idx}.{name}"] = v
    tensors["torch_rng"] = torch.get_rng_state()
    # copies: the model and its best state may share storage, which safetensors refuses
    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    sched_state = {k: v for k, v in sched.state_dict().items() if k != "optimizer"}
    meta = {"format": CHECKPOINT_FORMAT, **state, "param_groups": osd["param_groups"],
            "scheduler": sched_state, "rng": rng.bit_generator.state}
    return save(tensors, metadata={"nnp_checkpoint": json.dumps(meta)})


def read_checkpoint(data: bytes) -> dict:
    """``{"model", "best", "optimizer", "torch_rng", "state"}`` from checkpoint bytes."""
    import json

    from safetensors.torch import load

    tensors = load(data)
    # the metadata sits in the file's JSON header: 8 bytes of length, then the header
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"]["nnp_checkpoint"])
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {meta.get('format')!r}, expected "
                         f"{CHECKPOINT_FORMAT}")
    out = {"model": {}, "best": {}, "state": meta, "torch_rng": tensors.pop("torch_rng")}
    optim: dict = {}
    for key, v in tensors.items():
        head, _, rest = key.partition(".")
        if head == "optim":
            idx, _, name = rest.partition(".")
            optim.setdefault(int(idx), {})[name] = v
        else:
            out[head][rest] = v
    out["optimizer"] = {"state": optim, "param_groups": meta["param_groups"]}
    return out


def predict(model, data: TrainingData, device: str, dtype, forces: bool,
            batch_size: int = 64, features=None) -> dict:
    """Residual energies (eV, by global row) and, with ``forces``, per-atom forces (M, 3)
    of every structure of ``data``."""
    import torch

    e_out = np.full(data.n_structures, np.nan)
    off = data.atom_offsets()
    f_out = np.full((int(off[-1]), 3), np.nan) if forces else None
    for b in data.batches(None, batch_size, device=device, dtype=dtype, features=features):
        e, f = energies_ev(model, b, forces)
        e_out[b.index] = e.detach().to("cpu", torch.float64).numpy()
        if forces:
            fa = f.detach().cpu().double().numpy()
            for i, row in enumerate(b.index):
                f_out[off[row]:off[row + 1]] = fa[i, :off[row + 1] - off[row]]
    return {"energy": e_out, "forces": f_out}


def residual_metrics(data: TrainingData, pred: dict) -> dict:
    """Per-split metrics of predictions against the data's targets."""
    e_true = data.column("energy")
    f_true = data.flat_forces() if pred.get("forces") is not None else None
    return split_metrics(pred["energy"], e_true, data.n_atoms, data.split, pred.get("forces"),
                         f_true, data.atom_offsets(), SPLITS)

"""HIP-NN members built from hippynn's own layers, from a JSON-serialisable config.

The architecture is hippynn's: the ``Hipnn`` network (``HipnnVec``, HIP-NN-TS with l = 1, for
``tensor_order`` 1) of interaction layers with learned sensitivity functions under a cos²
cutoff, its ``HEnergy`` target (a linear read-out of every layer's features summed over
atoms), its ``PaddingIndexer`` from padded (molecule, atom) arrays to flat atoms, and its pair
finders (``OpenPairIndexer`` for molecules, ``PeriodicPairIndexer`` for cells periodic in all
three directions). This module only wires them into :class:`HipnnPotential`, which the
training loop, the calculator and ``evaluate`` call exactly like a torchani model:
``model((species, coordinates), cell, pbc).energies`` in Hartree, ``species`` atomic numbers
with ``-1`` for padding, coordinates in Å, forces by autograd.

The networks learn in eV: ``energies`` = (HEnergy + Σ ``self_energies_ev``) / Hartree, the
per-element shift being the same least-squares fit of the training split that ANI members
hold. Cells periodic in only some directions are not handled (hippynn's periodic pair finder
needs all three): :func:`check_periodic` refuses them before any work.
"""

from __future__ import annotations

import os
import threading
import warnings
from typing import NamedTuple

import torch

from registry.errors import BadInput

from .ani import HARTREE_EV, TRAINING_DEFAULTS, check_number, check_training, element_symbol

# hippynn, imported quietly: without a GPU kernel package (triton, numba, cupy) it warns that
# it falls back to pure torch, and its sensitivity layers would warn on every batch holding a
# pair closer than dist_soft_min (a user's HIPPYNN_* settings still win)
_USER_KERNELS = "HIPPYNN_USE_CUSTOM_KERNELS" in os.environ
os.environ.setdefault("HIPPYNN_WARN_LOW_DISTANCES", "False")
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*Custom kernels will be disabled.*")
    warnings.filterwarnings("ignore", message=".*[Ss]parse invariant checks.*")
    warnings.filterwarnings("ignore", message=".*non-standard custom kernel.*")
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated",
                            category=DeprecationWarning)
    import hippynn  # noqa: E402
    from hippynn import custom_kernels  # noqa: E402

    if custom_kernels.CUSTOM_KERNELS_ACTIVE == "pytorch" and not _USER_KERNELS:
        # That fallback wraps its message-passing sums in torch.compile: seconds of
        # compilation per process, a recompile per dtype and grad mode (then eager anyway),
        # on CPU. Its eager, autograd-native version computes the same sums.
        custom_kernels.set_custom_kernels("_pytorch_raw")
    from hippynn.layers.hiplayers import InteractLayerVec  # noqa: E402
    from hippynn.layers.indexers import PaddingIndexer  # noqa: E402
    from hippynn.layers.pairs import OpenPairIndexer, PeriodicPairIndexer  # noqa: E402
    from hippynn.layers.targets import HEnergy  # noqa: E402
    from hippynn.networks.hipnn import Hipnn, HipnnVec  # noqa: E402

# Architecture keys (a config file may set any of these and the training keys of .ani).
MODEL_DEFAULTS: dict = {
    "cutoff": 5.0,                # Å, hard cutoff of the sensitivities (cos² cutoff function)
    "dist_soft_min": 0.85,        # Å, centre of the innermost sensitivity function
    "dist_soft_max": 4.0,         # Å, centre of the outermost one
    "n_sensitivities": 10,        # sensitivity functions per interaction layer
    "n_features": 20,             # width of every layer
    "n_interaction_layers": 2,    # interaction blocks
    "n_atom_layers": 2,           # on-site layers after each interaction layer
    "tensor_order": 0,            # 0: HIP-NN, 1: HIP-NN-TS with l = 1 (hippynn's HipnnVec)
    "activation": "softplus",     # softplus | silu | tanh (smooth: forces are its gradient)
    "resnet": True,               # hippynn's residual wrapping of every layer
    "elements": None,             # default: the elements of the dataset version
}
KNOWN_KEYS = {**MODEL_DEFAULTS, **TRAINING_DEFAULTS}

_ACTIVATIONS = {"softplus": torch.nn.Softplus, "silu": torch.nn.SiLU, "tanh": torch.nn.Tanh}
_BUILD_LOCK = threading.Lock()


def library_version() -> str:
    return hippynn.__version__


def check_config(user: dict) -> dict:
    """Defaults updated with ``user``; :class:`BadInput` for unknown keys or bad values."""
    unknown = sorted(set(user) - set(KNOWN_KEYS))
    if unknown:
        raise BadInput(f"unknown config key(s) {', '.join(map(repr, unknown))} for --arch "
                       f"hipnn; known keys: {', '.join(sorted(KNOWN_KEYS))}")
    cfg = {**KNOWN_KEYS, **user}
    check_training(cfg)
    for key in ("cutoff", "dist_soft_min", "dist_soft_max"):
        check_number(cfg, key, float)
    for key in ("n_sensitivities", "n_features", "n_interaction_layers"):
        check_number(cfg, key, int)
    check_number(cfg, "n_atom_layers", int, zero=True)
    if not cfg["dist_soft_min"] < cfg["dist_soft_max"] <= cfg["cutoff"]:
        raise BadInput(f"need dist_soft_min < dist_soft_max <= cutoff, got "
                       f"{cfg['dist_soft_min']}, {cfg['dist_soft_max']}, {cfg['cutoff']}")
    if cfg["activation"] not in _ACTIVATIONS:
        raise BadInput(f"activation {cfg['activation']!r}: expected one of {_ACTIVATIONS} "
                       f"for --arch hipnn")
    if cfg["tensor_order"] not in (0, 1) or isinstance(cfg["tensor_order"], bool):
        raise BadInput(f"tensor_order must be 0 (HIP-NN) or 1 (HIP-NN-TS), "
                       f"got {cfg['tensor_order']!r}")
    if not isinstance(cfg["resnet"], bool):
        raise BadInput(f"resnet must be true or false, got {cfg['resnet']!r}")
    if cfg["elements"] is not None:
        if not isinstance(cfg["elements"], list) or not cfg["elements"]:
            raise BadInput("elements must be a non-empty list of element symbols")
        cfg["elements"] = [element_symbol(e) for e in cfg["elements"]]
    return cfg


def model_cutoff(config: dict) -> float:
    return float(config["cutoff"])


def check_periodic(periodic_dirs) -> None:
    """Refuse structures periodic in only some directions (``periodic_dirs``: the distinct
    pbc triples of a dataset or structure)."""
    partial = sorted({tuple(bool(x) for x in p) for p in periodic_dirs
                      if any(p) and not all(p)})
    if partial:
        raise BadInput(f"--arch hipnn handles molecules and cells periodic in all three "
                       f"directions; got pbc {list(partial[0])} (hippynn's periodic pair "
                       f"finder needs all three; use --arch ani)")


class Energies(NamedTuple):
    """What torchani models return: ``energies`` in Hartree, (B,) or (K, B) per member."""

    species: torch.Tensor
    energies: torch.Tensor


class InteractLayerTS(InteractLayerVec):
    """hippynn's l = 1 interaction layer; its ``cusp_reg`` stays a constant (hippynn's
    default) rather than extra state, so that state dicts hold tensors only (safetensors)."""

    get_extra_state = torch.nn.Module.get_extra_state
    set_extra_state = torch.nn.Module.set_extra_state


class HipnnTS(HipnnVec):
    _interaction_class = InteractLayerTS


class HipnnPotential(torch.nn.Module):
    """One HIP-NN member: hippynn's network and energy target over padded batches (see the
    module docstring)."""

    def __init__(self, config: dict):
        from registry.chem.elements import symbol_to_z

        super().__init__()
        zs = [symbol_to_z(s) for s in config["elements"]]
        self.elements = list(config["elements"])
        self.tensor_order = int(config["tensor_order"])
        cutoff = float(config["cutoff"])
        # atomic number -> one-hot column (0: padding); the per-column shift in eV
        zmap = torch.zeros(max(zs) + 1, dtype=torch.long)
        zmap[torch.as_tensor(zs)] = torch.arange(1, len(zs) + 1)
        self.register_buffer("species_map", zmap)
        shifts = config.get("self_energies_ev") or {}
        self.register_buffer("self_energies", torch.tensor(
            [0.0] + [float(shifts.get(s, 0.0)) for s in self.elements]))
        # sensitivities: the paper's Gaussians in 1/r ("inverse"; hippynn 0.1.3's "linear"
        # module computes the same function, so there is no choice to offer)
        self.network = (HipnnTS if self.tensor_order else Hipnn)(
            n_features=int(config["n_features"]),
            n_sensitivities=int(config["n_sensitivities"]),
            dist_soft_min=float(config["dist_soft_min"]),
            dist_soft_max=float(config["dist_soft_max"]),
            dist_hard_max=cutoff, n_atom_layers=int(config["n_atom_layers"]),
            n_interaction_layers=int(config["n_interaction_layers"]),
            possible_species=[0, *zs], sensitivity_type="inverse",
            resnet=bool(config["resnet"]), activation=_ACTIVATIONS[config["activation"]])
        self.energy = HEnergy(self.network.feature_sizes, first_is_interacting=False)
        self.indexer = PaddingIndexer()
        self.open_pairs = OpenPairIndexer(hard_dist_cutoff=cutoff)
        self.periodic_pairs = PeriodicPairIndexer(hard_dist_cutoff=cutoff)

    def forward(self, species_coordinates, cell=None, pbc=None) -> Energies:
        species, coordinates = species_coordinates
        idx = self.species_map[species.clamp(min=0)] * (species > 0)
        nonblank = idx > 0
        onehot = torch.nn.functional.one_hot(idx, len(self.elements) + 1)[..., 1:]
        features, real, inv_real, mol_index, _, n_mol, _ = self.indexer(onehot, nonblank)
        if pbc is not None and bool(pbc.any()):
            if not bool(pbc.all()):
                raise BadInput("--arch hipnn: hippynn's periodic pair finder needs a cell "
                               f"periodic in all three directions, got pbc {pbc.tolist()}")
            cells = cell.to(coordinates.dtype).expand(n_mol, 3, 3) if cell.ndim == 2 \
                else cell
            dist, first, second, coord, *_ = self.periodic_pairs(
                coordinates, nonblank, real, inv_real, cells)
        else:
            dist, first, second, coord = self.open_pairs(coordinates, nonblank, real,
                                                         inv_real)
        layers = self.network(features, first, second, dist,
                              *((coord,) if self.tensor_order else ()))
        e_net = self.energy(layers, mol_index, n_mol)[0].squeeze(1)
        shift = self.self_energies.to(e_net.dtype)[idx].sum(dim=1)
        return Energies(species, (e_net + shift) / HARTREE_EV)


class HipnnEnsemble(torch.nn.Module):
    """The members of a version; ``ensemble_values=True`` gives every member's energies
    (K, B), else their mean (B,), as a torchani ensemble does."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, species_coordinates, cell=None, pbc=None,
                ensemble_values: bool = False) -> Energies:
        e = torch.stack([m(species_coordinates, cell, pbc).energies for m in self.members])
        return Energies(species_coordinates[0], e if ensemble_values else e.mean(dim=0))


def build_member(config: dict):
    """A :class:`HipnnPotential` for the stored ``config``, float32 on CPU."""
    return HipnnPotential(config)


def new_member(config: dict, seed: int, device: str = "cpu", dtype=None):
    """A freshly initialised member, its weights drawn from ``seed`` alone (under a lock
    with the global generator forked, as :func:`.ani.new_member`)."""
    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HipnnPotential(config)
    return model.to(device=device, dtype=dtype or torch.float32)


def load_ensemble(config: dict, members: list[dict]):
    """A :class:`HipnnEnsemble` of the members' state dicts (as training stores them)."""
    built = []
    for sd in members:
        m = build_member(config)
        m.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=True)
        built.append(m)
    return HipnnEnsemble(built)

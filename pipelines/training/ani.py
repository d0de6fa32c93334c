"""ANI members built by torchani's own builders, from a JSON-serialisable config.

The architecture is torchani's (``torchani.arch.Assembler``: the AEV computer with radial and
angular terms, one ``ANINetworks`` atomic network per element, the energy shifter, and
optionally its xTB repulsion term); this module only maps a config dict onto it, so the same
config stored with a model version rebuilds the same module for the calculator.

torchani works in Hartree and Å; a member's output, times :data:`HARTREE_EV`, is the
*residual* energy in eV: the total energy minus the target level's atomic reference energies
(``reference_energies_ev`` in the stored config, added back by the calculator). The member's
energy shifter holds ``self_energies_ev``, a per-element linear fit of that residual on the
training split (as ANI's self-atomic energies), so the networks learn what is left.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from registry.errors import BadInput

HARTREE_EV = 27.211386245988  # CODATA 2018, as ase.units.Hartree

# Architecture keys (a config file may set any of these and of TRAINING below).
MODEL_DEFAULTS: dict = {
    "radial_cutoff": 5.2,       # Å, the model's cutoff
    "angular_cutoff": 3.5,      # Å
    "radial_start": 0.9,        # Å, first radial shell
    "angular_start": 0.9,
    "radial_shifts": 8,         # radial shells
    "angular_shifts": 4,        # angular radial shells
    "angular_sections": 4,      # angular sections
    "radial_eta": 19.7,         # 1/Å², radial precision
    "angular_eta": 12.5,
    "angular_zeta": 14.1,
    "cutoff_fn": "smooth",      # torchani cutoff: smooth | cosine
    "hidden": [64, 32],         # hidden layer widths of every element's network
    "hidden_per_element": {},   # {"H": [96, 64]} overrides "hidden" per element
    "activation": "gelu",       # torchani activation: gelu | celu (TightCELU)
    "bias": True,
    "repulsion": "auto",        # torchani's xTB repulsion term (no trained weights): true,
                                # false, or auto (true, but false on a Δ version: see
                                # :func:`uses_repulsion`)
    "elements": None,           # default: the elements of the dataset version
}
TRAINING_DEFAULTS: dict = {
    "epochs": 100,
    "patience": 20,             # epochs without a better validation loss before stopping
    "batch_size": 32,
    "energy_weight": 1.0,
    "forces_weight": None,      # None: 0.1 when the dataset has forces, else 0
    "lr": 1e-3,                 # AdamW
    "weight_decay": 1e-5,
    "lr_factor": 0.5,           # ReduceLROnPlateau on the validation loss
    "lr_patience": 5,
    "min_lr": 1e-6,
    "dtype": "float32",         # float32 | float64
    "checkpoint_every": 5,      # epochs between checkpoints (0: only when a member stops)
}
# How ANI members train, not what they learn (:mod:`.aev_cache`): results agree with the
# autograd path to float rounding.
CACHE_DEFAULTS: dict = {
    "aev_cache": True,          # train from AEVs and Jacobians cached per dataset version
    "aev_cache_max_mb": 2048,   # memory budget of that cache; above it: autograd (logged)
}
# How a member's weights start (not an architecture key: a transfer child starts from its
# parent's weights whatever this says)
INIT_DEFAULTS: dict = {
    "output_init": "random",    # random (torchani's) | zero: see :func:`new_member`
}
KNOWN_KEYS = {**MODEL_DEFAULTS, **TRAINING_DEFAULTS, **CACHE_DEFAULTS, **INIT_DEFAULTS}
AUTO_FORCES_WEIGHT = 0.1

_CUTOFF_FNS = ("smooth", "cosine")
_DTYPES = ("float32", "float64")
_ACTIVATIONS = ("gelu", "celu")
_OUTPUT_INITS = ("random", "zero")
_BUILD_LOCK = threading.Lock()


def read_config(source) -> dict:
    """A config dict from a dict, a ``.json``/``.yaml``/``.yml`` file path, or None."""
    if source is None:
        return {}
    if isinstance(source, dict):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise BadInput(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise BadInput(f"config file {str(path)!r}: expected a .json, .yaml or .yml file")
    except (ValueError, ImportError) as exc:  # json and yaml parse errors are ValueErrors
        raise BadInput(f"config file {str(path)!r} is not valid: {exc}") from None
    except Exception as exc:  # yaml.YAMLError is not a ValueError
        raise BadInput(f"config file {str(path)!r} is not valid: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadInput(f"config file {str(path)!r} must hold a mapping of settings")
    return data


def check_config(user: dict) -> dict:
    """Defaults updated with ``user``; :class:`BadInput` for unknown keys or bad values."""
    unknown = sorted(set(user) - set(KNOWN_KEYS))
    if unknown:
        raise BadInput(f"unknown config key(s) {', '.join(map(repr, unknown))}; known keys: "
                       f"{', '.join(sorted(KNOWN_KEYS))}")
    cfg = {**KNOWN_KEYS, **{k: v for k, v in user.items()}}
    check_training(cfg)
    for key in ("radial_cutoff", "angular_cutoff", "radial_eta", "angular_eta",
                "angular_zeta"):
        check_number(cfg, key, float)
    for key in ("radial_shifts", "angular_shifts", "angular_sections"):
        check_number(cfg, key, int)
    for key in ("radial_start", "angular_start"):
        check_number(cfg, key, float, zero=True)
    if cfg["angular_cutoff"] > cfg["radial_cutoff"]:
        raise BadInput(f"angular_cutoff {cfg['angular_cutoff']} must not exceed "
                       f"radial_cutoff {cfg['radial_cutoff']}")
    if cfg["cutoff_fn"] not in _CUTOFF_FNS:
        raise BadInput(f"cutoff_fn {cfg['cutoff_fn']!r}: expected one of {_CUTOFF_FNS}")
    cfg["hidden"] = check_widths(cfg["hidden"], "hidden")
    if not isinstance(cfg["hidden_per_element"], dict):
        raise BadInput("hidden_per_element must map element symbols to lists of widths")
    cfg["hidden_per_element"] = {element_symbol(k): check_widths(
        v, f"hidden_per_element[{k!r}]") for k, v in cfg["hidden_per_element"].items()}
    check_number(cfg, "aev_cache_max_mb", float)
    for key in ("bias", "repulsion", "aev_cache"):
        if not isinstance(cfg[key], bool) and not (key == "repulsion" and cfg[key] == "auto"):
            raise BadInput(f"{key} must be true or false{' or auto' * (key == 'repulsion')}, "
                           f"got {cfg[key]!r}")
    _check_activation(cfg["activation"])
    if cfg["output_init"] not in _OUTPUT_INITS:
        raise BadInput(f"output_init {cfg['output_init']!r}: expected one of {_OUTPUT_INITS}")
    if cfg["elements"] is not None:
        if not isinstance(cfg["elements"], list) or not cfg["elements"]:
            raise BadInput("elements must be a non-empty list of element symbols")
        cfg["elements"] = [element_symbol(e) for e in cfg["elements"]]
    return cfg


def check_training(cfg: dict) -> None:
    """Check (and coerce in place) the training keys of a config, for every architecture."""
    for key in ("lr", "lr_factor"):
        check_number(cfg, key, float)
    for key in ("epochs", "batch_size", "lr_patience"):
        check_number(cfg, key, int)
    for key in ("weight_decay", "min_lr", "energy_weight"):
        check_number(cfg, key, float, zero=True)
    check_number(cfg, "patience", int, zero=True)
    check_number(cfg, "checkpoint_every", int, zero=True)
    if cfg["forces_weight"] is not None:
        check_number(cfg, "forces_weight", float, zero=True)
    if not cfg["lr_factor"] < 1:
        raise BadInput(f"lr_factor must be below 1, got {cfg['lr_factor']}")
    if cfg["dtype"] not in _DTYPES:
        raise BadInput(f"dtype {cfg['dtype']!r}: expected one of {_DTYPES}")


def check_number(cfg: dict, key: str, kind, zero: bool = False) -> None:
    """``cfg[key]`` as ``kind`` (int or float), > 0 (>= 0 with ``zero``), else BadInput."""
    v = cfg[key]
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if ok and kind is int:
        ok = float(v).is_integer()
    if ok:
        v = kind(v)
        ok = v >= 0 if zero else v > 0
    if not ok:
        what = "an integer" if kind is int else "a number"
        raise BadInput(f"config {key} must be {what} {'>= 0' if zero else '> 0'}, "
                       f"got {cfg[key]!r}")
    cfg[key] = v


def check_widths(value, what: str) -> list[int]:
    if not isinstance(value, list | tuple) or not all(
            isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in value):
        raise BadInput(f"{what} must be a list of positive layer widths, got {value!r}")
    return [int(w) for w in value]


def element_symbol(e) -> str:
    """An element symbol from a symbol or an atomic number (BadInput if neither)."""
    from registry.chem.elements import SYMBOLS, symbol_to_z

    if isinstance(e, int) and not isinstance(e, bool):
        if not 1 <= e < len(SYMBOLS):
            raise BadInput(f"unknown atomic number {e}")
        return SYMBOLS[e]
    return SYMBOLS[symbol_to_z(str(e))]


def _check_activation(name: str) -> None:
    if name not in _ACTIVATIONS:
        raise BadInput(f"activation {name!r}: expected one of {_ACTIVATIONS} "
                       f"(torchani's names; celu is its TightCELU)")


def library_version() -> str:
    import torchani

    return torchani.__version__


def model_cutoff(config: dict) -> float:
    """The model's cutoff (the radial AEV's; the angular one is shorter)."""
    return float(config["radial_cutoff"])


def build_ani(config: dict, ensemble_size: int = 1, neighborlist: str = "all_pairs"):
    """A ``torchani.arch.ANI`` for the stored ``config`` (``elements``, ``self_energies_ev``
    and the architecture keys), float32, on CPU; ``ensemble_size`` > 1 gives a torchani
    ``Ensemble`` of identically shaped members (the calculator loads one member into each)."""
    from torchani.arch import ANIAngular, ANIRadial, Assembler, RepulsionXTB
    from torchani.nn import ANINetworks

    symbols = list(config["elements"])
    asm = Assembler(periodic_table_index=True)
    asm.set_symbols(symbols)
    asm.set_global_cutoff_fn(config["cutoff_fn"])
    asm.set_aev_computer(
        radial=ANIRadial.cover_linearly(
            start=config["radial_start"], cutoff=config["radial_cutoff"],
            eta=config["radial_eta"], num_shifts=config["radial_shifts"]),
        angular=ANIAngular.cover_linearly(
            start=config["angular_start"], eta=config["angular_eta"],
            zeta=config["angular_zeta"], num_shifts=config["angular_shifts"],
            num_sections=config["angular_sections"], cutoff=config["angular_cutoff"]),
        strategy="auto")  # cuAEV on CUDA when torchani's extension is installed
    asm.set_atomic_networks(cls=ANINetworks, ctor="build", kwargs={
        "dims": {s: tuple(w) for s, w in config["hidden_per_element"].items()},
        "default_dims": tuple(config["hidden"]), "activation": config["activation"],
        "bias": config["bias"]})
    asm.set_neighborlist(neighborlist)
    shifts = config.get("self_energies_ev") or {}
    asm.set_self_energies({s: float(shifts.get(s, 0.0)) / HARTREE_EV for s in symbols})
    if uses_repulsion(config):
        asm.add_potential(RepulsionXTB, name="repulsion_xtb", cutoff=config["radial_cutoff"])
    return asm.assemble(ensemble_size)


def uses_repulsion(config: dict) -> bool:
    """Whether the model adds the xTB repulsion term. ``auto``: yes, except for a Δ model,
    whose base level (GFN2-xTB, EMT...) already holds the short-range repulsion: there the
    term would be a second copy that the networks must learn to cancel (on the multi-fidelity
    check it doubled the Δ models' test error, docs/training.md)."""
    value = config.get("repulsion", "auto")
    return (not config.get("delta")) if value == "auto" else bool(value)


def new_member(config: dict, seed: int, device: str = "cpu", dtype=None):
    """A freshly initialised member, its weights drawn from ``seed`` alone: construction
    runs under a lock with the global generator forked, so members built concurrently in
    one process (threaded Dask workers) stay reproducible.

    ``output_init: zero`` sets every element network's output layer to zero, so the new
    member predicts exactly the fitted per-element shifts (plus the repulsion) and its
    networks learn only the residual; with a few dozen energies (a Δ correction of
    ~1 kcal/mol) random output layers add more error than the data can train away
    (docs/training.md, multi-fidelity check)."""
    import torch

    with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_ani(config)
    if config.get("output_init") == "zero":
        with torch.no_grad():
            for name, p in model.named_parameters():
                if ".final_layer." in name:
                    p.zero_()
    return model.to(device=device, dtype=dtype or torch.float32)


def member_prefix() -> str:
    """Key prefix of the atomic networks in a member's state dict."""
    return "potentials.nnp.neural_networks."


def load_ensemble(config: dict, members: list[dict], neighborlist: str = "all_pairs"):
    """One torchani ANI whose ``Ensemble`` holds the members' networks (state dicts of
    single members, as training stores them); the AEV is computed once for all."""
    import torch

    model = build_ani(config, ensemble_size=len(members), neighborlist=neighborlist)
    prefix = member_prefix()
    merged = {}
    for k, sd in enumerate(members):
        for key, value in sd.items():
            value = torch.as_tensor(value)
            if key.startswith(prefix):
                inner = key[len(prefix):]
                merged[prefix + (f"members.{k}." + inner if len(members) > 1 else inner)] = \
                    value
            elif k == 0:
                merged[key] = value
    model.load_state_dict(merged, strict=True)
    return model

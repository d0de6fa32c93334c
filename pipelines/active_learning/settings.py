"""What a campaign asks for, checked before any work; stored with the campaign as JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from registry.errors import BadInput

SAMPLERS = ("md", "nms", "pool")
SELECTIONS = ("qbc", "random")
MAX_MEMBERS = 64


@dataclass
class Settings:
    """Units: K, fs, 1/fs, Å, eV/Å; ``threshold`` in eV/√atom (the committee's energy
    standard deviation over √atoms, ANI's ρ)."""

    ensemble: int = 4
    sampler: str = "md"  # md: Langevin MD; nms: normal-mode sampling; pool: the seeds as is
    selection: str = "qbc"  # qbc: most disagreement first; random: uniform (a baseline)
    temperatures: list[float] = field(default_factory=lambda: [300.0, 600.0, 1000.0])
    steps: int = 200  # MD steps per trajectory (nms: samples per trajectory)
    interval: int = 10  # MD: a candidate frame every this many steps
    timestep_fs: float = 0.5
    friction_per_fs: float = 0.02
    min_distance: float = 0.5  # Å: a trajectory stops when two atoms come closer (0: off)
    max_force: float = 50.0  # eV/Å: ... or when the force on an atom exceeds this (0: off)
    threshold: float = 0.01  # eV/√atom (ANI-1x used 0.23 kcal/mol/√atom = 0.0100)
    per_iteration: int = 20
    iterations: int = 5
    budget: int | None = None  # reference calculations in all (ok and failed)
    stop_fraction: float = 0.0  # stop when the fraction above threshold falls below it
    epochs: int = 100
    warm_epochs: int | None = None  # epochs of a warm-started iteration (default: epochs)
    patience: int = 20
    warm_start: bool = True  # iteration i > 0 starts from iteration i-1's model
    train_config: dict = field(default_factory=dict)  # ANI settings (docs/training.md)
    seed: int = 0
    device: str = "cpu"
    groups: list[int] | None = None  # pool sampler: each seed's trajectory (group)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def check(self) -> Settings:
        """Raise :class:`BadInput` naming the first bad option; returns self."""
        from registry.store.refs import check_int

        check_int(self.ensemble, "--ensemble", 1, MAX_MEMBERS)
        if self.ensemble < 2:
            raise BadInput(f"--ensemble {self.ensemble}: a committee needs at least 2 "
                           f"members (their disagreement is the selection criterion)")
        if self.sampler not in SAMPLERS:
            raise BadInput(f"--sampler {self.sampler!r}: expected one of "
                           f"{', '.join(SAMPLERS)}")
        if self.selection not in SELECTIONS:
            raise BadInput(f"--selection {self.selection!r}: expected one of "
                           f"{', '.join(SELECTIONS)}")
        if not self.temperatures:
            raise BadInput("--temperatures: give at least one temperature (K)")
        self.temperatures = [_number(t, "--temperatures", positive=True, top=1e5)
                             for t in self.temperatures]
        if len(set(self.temperatures)) != len(self.temperatures):
            raise BadInput(f"--temperatures {self.temperatures}: a temperature is repeated")
        check_int(self.steps, "--steps", 1, 10**7)
        check_int(self.interval, "--interval", 1, 10**7)
        check_int(self.per_iteration, "--per-iteration", 1, 10**6)
        check_int(self.iterations, "--iterations", 1, 10**4)
        if self.budget is not None:
            if isinstance(self.budget, bool) or not isinstance(self.budget, int) \
                    or self.budget <= 0:
                raise BadInput(f"--budget must be a positive number of labels, got "
                               f"{self.budget!r}")
        self.threshold = _number(self.threshold, "--threshold", positive=True, top=1e3)
        self.timestep_fs = _number(self.timestep_fs, "--timestep", positive=True, top=100.0)
        self.friction_per_fs = _number(self.friction_per_fs, "--friction", top=1e3)
        self.min_distance = _number(self.min_distance, "--min-distance", top=10.0)
        self.max_force = _number(self.max_force, "--max-force", top=1e6)
        self.stop_fraction = _number(self.stop_fraction, "--stop-fraction", top=1.0)
        if self.stop_fraction >= 1.0:
            raise BadInput(f"--stop-fraction {self.stop_fraction} must be below 1")
        check_int(self.epochs, "--epochs", 1, 10**6)
        if self.warm_epochs is not None:
            check_int(self.warm_epochs, "--warm-epochs", 1, 10**6)
        check_int(self.patience, "--patience", 0, 10**6)
        check_int(self.seed, "--seed", 0, 2**31 - 1 - MAX_MEMBERS)
        if not isinstance(self.train_config, dict):
            raise BadInput("the training config must be a mapping of ANI settings")
        for key in ("epochs", "patience"):
            if key in self.train_config:
                raise BadInput(f"the training config sets {key!r}; give it as --{key} "
                               f"(a campaign's epochs are its own setting)")
        return self


def _number(value, what: str, *, positive: bool = False, top: float | None = None) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise BadInput(f"{what} must be a finite number {'> 0' if positive else '>= 0'}, "
                       f"got {value!r}")
    if top is not None and value > top:
        raise BadInput(f"{what} {value:g} is beyond {top:g}")
    return float(value)


def parse_temperatures(text: str) -> list[float]:
    """``"300,600,1000"`` -> [300.0, 600.0, 1000.0]; BadInput for anything else."""
    try:
        vals = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise BadInput(f"--temperatures {text!r}: expected numbers like 300,600,1000 "
                       f"(K)") from None
    if not vals:
        raise BadInput(f"--temperatures {text!r}: give at least one temperature (K)")
    return vals

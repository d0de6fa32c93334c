"""The documented campaigns' data: aluminium with EMT, small organic molecules with GFN2-xTB.

- **aluminium** (the ANI-Al analog): periodic cells throughout. Seeds: fcc bulk (32 atoms),
  (111) and (100) slabs (16 atoms, fully periodic with 8 Å of vacuum) and a melt (bulk
  heated to 2500 K with EMT). The starting data are near-equilibrium bulk cells only
  (rattled, -2/0/+2 % strain), so the first committee is unsure about surfaces and the melt.
- **organic**: G2 molecules of H, C, N, O. Seeds: CH3OH, C2H6, CH3CN, HCOOH, H2CO, C2H4;
  starting data: slightly rattled copies of them (0.03 Å) labelled with GFN2-xTB (tblite),
  so the campaign's job is the conformations MD at 300-600 K reaches (as ANI-1x's).

:func:`prepare_example` ingests a system's starting data, makes its dataset version and
writes its seeds file (``nnp al example``). The test sets (:func:`aluminium_test_set`,
:func:`organic_test_set`) and the science check's pools (``benchmarks/al_science.py``) are MD
of the same systems.
"""

from __future__ import annotations

import numpy as np

from registry.errors import BadInput

A_AL = 4.05  # Å, fcc aluminium (EMT's equilibrium is within 0.5 %)
SYSTEMS = {
    "aluminium": ("emt", "fcc bulk, (111)/(100) slabs and a melt; EMT; periodic cells"),
    "organic": ("gfn2-xtb", "small H/C/N/O molecules; GFN2-xTB (tblite)"),
}
ORGANIC_SEEDS = ("CH3OH", "C2H6", "CH3CN", "HCOOH", "H2CO", "C2H4")


def al_bulk(strain: float = 0.0):
    from ase.build import bulk

    return bulk("Al", "fcc", a=A_AL * (1 + strain), cubic=True).repeat((2, 2, 2))


def al_slab(face: str = "111"):
    from ase.build import fcc100, fcc111

    build = {"111": fcc111, "100": fcc100}[face]
    slab = build("Al", size=(2, 2, 4), a=A_AL, vacuum=4.0)
    slab.pbc = True  # periodic with vacuum: every cell of the campaign is fully periodic
    return slab


def emt_md(atoms, temperature: float, steps: int, seed: int, every: int = 0,
           timestep_fs: float = 2.0) -> list:
    """Langevin MD with EMT from ``atoms``; the last frame, or a frame every ``every``
    steps, each labelled (``info['energy']``, ``arrays['forces']``)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    a = atoms.copy()
    a.calc = EMT()
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(a, temperature_K=temperature, rng=rng)
    a.set_constraint(FixCom())
    dyn = Langevin(a, timestep_fs * units.fs, temperature_K=temperature, friction=0.02,
                   fixcm=False, rng=rng)
    out = []
    for _ in dyn.irun(steps):
        if every and dyn.nsteps and dyn.nsteps % every == 0:
            out.append(labelled_copy(a, temperature))
    return out or [labelled_copy(a, temperature)]


def labelled_copy(a, temperature: float | None = None):
    c = a.copy()
    c.calc = None
    c.set_constraint()
    c.set_momenta(None)
    c.info = {"energy": float(a.get_potential_energy())}
    if temperature is not None:
        c.info["md_temperature_k"] = float(temperature)
    c.arrays["forces"] = a.get_forces(apply_constraint=False).copy()  # not FixCom's
    return c


def al_melt(seed: int = 0):
    """A liquid-like 32-atom cell: bulk heated at 2500 K with EMT (unlabelled)."""
    m = emt_md(al_bulk(0.03), 2500.0, 400, seed)[0]
    m.info, m.calc = {}, None
    m.arrays.pop("forces", None)
    return m


# Aluminium conditions: (start structure, temperature K); the science check's pools and the
# aluminium test set are EMT MD trajectories of these.
CONDITIONS = {"bulk 300 K": ("bulk", 300.0), "bulk 900 K": ("bulk", 900.0),
              "bulk 1500 K": ("bulk", 1500.0), "(111) 600 K": ("111", 600.0),
              "(111) 900 K": ("111", 900.0), "(100) 900 K": ("100", 900.0),
              "melt 2500 K": ("melt", 2500.0)}
TEST_CONDITIONS = ("bulk 300 K", "bulk 900 K", "(111) 600 K", "(100) 900 K", "melt 2500 K")


def condition_start(kind: str, seed: int):
    if kind == "bulk":
        return al_bulk()
    if kind == "melt":
        return al_melt(seed)
    return al_slab(kind)


def emt_trajectory(condition: str, seed: int, frames: int = 12) -> list:
    """``frames`` EMT-labelled frames of a condition, one every 20 steps of 2 fs after 60
    steps; ``info['condition']`` names it."""
    kind, temp = CONDITIONS[condition]
    out = emt_md(condition_start(kind, seed), temp, 60 + 20 * frames, seed, every=20)[-frames:]
    for f in out:
        f.info["condition"] = condition
    return out


def aluminium_test_set(per_condition: int = 20, seed: int = 9000) -> list:
    """EMT MD of bulk at 300 and 900 K, the (111) slab at 600 K, the (100) slab at 900 K
    and the melt at 2500 K, ``per_condition`` frames each."""
    return [f for k, c in enumerate(TEST_CONDITIONS)
            for f in emt_trajectory(c, seed + k, per_condition)]


def aluminium_seeds(seed: int = 0) -> list:
    return [al_bulk(), al_slab("111"), al_slab("100"), al_melt(seed)]


def aluminium_start(n: int = 24, seed: int = 0) -> list:
    """EMT-labelled near-equilibrium bulk cells: rattled 0.05 Å, at strains of -2, 0 and
    +2 % (three cells, so training batches several structures per cell)."""
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = al_bulk((-0.02, 0.0, 0.02)[k % 3])
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        a.calc = EMT()
        out.append(labelled_copy(a))
    return out


def organic_test_set(per_molecule: int = 8, seed: int = 9000,
                     labeler: str = "gfn2-xtb") -> list:
    """MD frames of the seed molecules at 300 and 600 K run and labelled with ``labeler``
    (GFN2-xTB), ``per_molecule`` each (half at each temperature)."""
    from pipelines.simulation.md import md_sample

    out = []
    for k, name in enumerate(ORGANIC_SEEDS):
        for j, temp in enumerate((300.0, 600.0)):
            out += md_sample(name, per_molecule // 2, temp, seed + 10 * k + j, level=labeler,
                             interval=20)
    return out


def organic_seeds() -> list:
    from ase.build import molecule

    return [molecule(m) for m in ORGANIC_SEEDS]


def organic_start(n_per: int = 6, seed: int = 0, labeler: str = "gfn2-xtb") -> list:
    """The seed molecules rattled by 0.03 Å, ``n_per`` each, labelled with ``labeler``."""
    from ase.build import molecule

    from ..labeling import get_labeler

    lab = get_labeler(labeler)
    rng = np.random.default_rng(seed)
    out = []
    for name in ORGANIC_SEEDS:
        for _ in range(n_per):
            a = molecule(name)
            a.positions += rng.normal(scale=0.03, size=a.positions.shape)
            out.append(lab.labelled(a))
    return out


def prepare_example(reg, system: str, dataset: str, seeds_path, *, n: int | None = None,
                    seed: int = 0) -> dict:
    """Ingest ``system``'s starting data, make dataset version ``dataset`` (next version)
    and write its seeds to ``seeds_path`` (extxyz). Returns what a campaign needs."""
    import ase.io

    if system not in SYSTEMS:
        raise BadInput(f"unknown example system {system!r}; available: {', '.join(SYSTEMS)}")
    from ..labeling import get_labeler

    spec = SYSTEMS[system][0]
    lab = get_labeler(spec)
    if system == "aluminium":
        frames, seeds = aluminium_start(n or 24, seed), aluminium_seeds(seed)
    else:
        frames, seeds = organic_start(n or 6, seed, spec), organic_seeds()
    lab.ensure_level(reg)
    source = f"al example {system} {seed}"
    summary = reg.ingest(frames, lab.level["name"], source=source)
    version = reg.create_dataset_version(
        dataset, levels=[lab.level["name"]], split="0.8,0.1,0.1", group_by="none", seed=seed,
        filter=f'_nnp_source = "{source}"',
        note=f"active-learning example {system}: starting data")
    ase.io.write(seeds_path, seeds, format="extxyz")
    return {"system": system, "labeler": spec, "dataset": version["ref"],
            "structures": version["n_structures"], "labels_new": summary.labels_new,
            "seeds": str(seeds_path), "n_seeds": len(seeds)}

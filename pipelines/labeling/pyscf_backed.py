"""Labelers over PySCF (molecules only): HF or any DFT functional with analytic gradients,
and RHF → CCSD / CCSD(T) energies."""

from __future__ import annotations

import warnings
from importlib import metadata

import numpy as np

from registry.errors import BadInput

from .base import Labeler, LabelFailure, charge_and_multiplicity, level_dict

CC_METHODS = ("ccsd(t)", "ccsd")


def _pyscf_version() -> str:
    try:
        return metadata.version("pyscf")
    except metadata.PackageNotFoundError:
        raise BadInput("the pyscf labelers need PySCF: pip install pyscf") from None


def has_basis(basis: str, symbol: str) -> bool:
    """Whether PySCF's basis library has ``basis`` for element ``symbol``."""
    from pyscf import gto
    from pyscf.lib.exceptions import BasisNotFoundError

    with warnings.catch_warnings():  # its hint to install basis-set-exchange, per element
        warnings.simplefilter("ignore", UserWarning)
        try:
            gto.basis.load(basis, symbol)
            return True
        except BasisNotFoundError:
            return False


def check_basis(basis: str) -> None:
    """:class:`BadInput` when PySCF knows no basis set called ``basis``."""
    from pyscf import gto
    from pyscf.lib.exceptions import BasisNotFoundError

    for symbol in ("H", "C", "Li"):  # a basis without H (some ECP sets) still has others
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            try:
                gto.basis.load(basis, symbol)
                return
            except BasisNotFoundError as exc:
                if "Unknown basis" in str(exc):
                    break
            except (KeyError, RuntimeError):
                break
    raise BadInput(f"PySCF knows no basis set {basis!r} (e.g. sto-3g, 6-31g*, def2-svp, "
                   f"cc-pvdz)")


def check_functional(xc: str) -> None:
    """:class:`BadInput` when libxc (through PySCF) knows no functional ``xc``."""
    from pyscf.dft import libxc

    try:
        libxc.parse_xc(xc)
    except (KeyError, ValueError) as exc:
        raise BadInput(f"PySCF/libxc knows no functional {xc!r} ({exc}); e.g. wb97x, b3lyp, "
                       f"pbe, pbe0") from None


class PySCFLabeler(Labeler):
    """Self-consistent field energies and analytic gradients: ``hf`` or a DFT functional.

    Restricted for singlets, unrestricted otherwise. DIIS first; when it has not converged
    in ``max_cycle`` cycles, second-order SCF (Newton) from where it stopped; a calculation
    still not converged is a :class:`LabelFailure`.
    """

    def __init__(self, method: str, basis: str, *, max_cycle: int = 100,
                 conv_tol: float = 1e-9, grid_level: int = 3, newton: bool = True,
                 threads: int | None = None, max_memory_mb: int = 4000):
        self.method, self.basis = method.lower(), basis.lower()
        self.spec = f"pyscf:{self.method}/{self.basis}"
        self.max_cycle, self.conv_tol, self.newton = int(max_cycle), float(conv_tol), newton
        self.grid_level, self.threads = int(grid_level), threads
        self.max_memory_mb = int(max_memory_mb)
        self.xc = None if self.method == "hf" else self.method  # None: Hartree-Fock
        version = _pyscf_version()
        check_basis(self.basis)
        if self.xc is not None:
            check_functional(self.xc)
        keywords = None if self.xc is None else {"grid_level": self.grid_level}
        self.level = level_dict(f"{self.method}/{self.basis}", "pyscf", version, keywords)

    def molecule(self, atoms):
        """The PySCF ``Mole`` of ``atoms`` (Å), charge and spin from ``atoms.info``;
        :class:`LabelFailure` for periodic cells and elements the basis lacks."""
        from pyscf import gto, lib

        if atoms.pbc.any():
            raise LabelFailure(f"{self.spec}: periodic cells are not supported (molecular "
                               f"PySCF); use gfn2-xtb or emt for crystals")
        missing = [s for s in sorted(set(atoms.get_chemical_symbols()))
                   if not has_basis(self.basis, s)]
        if missing:
            raise LabelFailure(f"unsupported element{'s' if len(missing) > 1 else ''} "
                               f"{', '.join(missing)} for basis {self.basis} ({self.spec})")
        charge, mult = charge_and_multiplicity(atoms)
        if self.threads:
            lib.num_threads(self.threads)
        return gto.M(atom=list(zip(atoms.get_chemical_symbols(), atoms.positions.tolist(),
                                   strict=True)),
                     unit="Angstrom", basis=self.basis, charge=charge, spin=mult - 1,
                     verbose=0, max_memory=self.max_memory_mb)

    def scf(self, mol):
        """A converged SCF object for ``mol``; :class:`LabelFailure` when it does not
        converge."""
        from pyscf import dft, scf

        if self.xc is None:
            mf = scf.RHF(mol) if mol.spin == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol)
            mf.xc = self.xc
            mf.grids.level = self.grid_level
        mf.conv_tol, mf.max_cycle, mf.verbose = self.conv_tol, self.max_cycle, 0
        mf.kernel()
        if not mf.converged and self.newton:
            # second-order SCF from the last DIIS orbitals; undo_soscf keeps the plain class
            # (its gradients) with the converged orbitals
            so = mf.newton()
            so.max_cycle = self.max_cycle
            so.kernel(mf.mo_coeff, mf.mo_occ)
            mf = so.undo_soscf()
        if not mf.converged:
            raise LabelFailure(f"{self.spec}: SCF not converged in {self.max_cycle} cycles "
                               f"(last energy {mf.e_tot:.8f} Eh)")
        return mf

    def _compute(self, atoms):
        from ase.units import Bohr, Hartree

        mf = self.scf(self.molecule(atoms))
        grad = mf.nuc_grad_method()
        grad.verbose = 0
        g = grad.kernel()
        return mf.e_tot * Hartree, -np.asarray(g) * Hartree / Bohr


class CoupledClusterLabeler(PySCFLabeler):
    """RHF → CCSD or CCSD(T) energies (no forces), all electrons correlated; closed-shell
    molecules only."""

    properties = ("energy",)

    def __init__(self, method: str, basis: str, *, cc_max_cycle: int = 100, **options):
        options.pop("grid_level", None)
        super().__init__("hf", basis, **options)
        self.method = method.lower()
        self.cc_max_cycle = int(cc_max_cycle)
        self.spec = f"pyscf:{self.method}/{self.basis}"
        self.level = level_dict(f"{self.method}/{self.basis}", "pyscf", _pyscf_version())

    def scf(self, mol):
        if mol.spin != 0:
            raise LabelFailure(f"{self.spec}: open shell (multiplicity {mol.spin + 1}) not "
                               f"supported: this labeler is closed-shell RHF-based")
        return super().scf(mol)

    def _compute(self, atoms):
        from ase.units import Hartree
        from pyscf import cc

        mf = self.scf(self.molecule(atoms))
        ccsd = cc.CCSD(mf)
        ccsd.verbose, ccsd.max_cycle = 0, self.cc_max_cycle
        ccsd.kernel()
        if not ccsd.converged:
            raise LabelFailure(f"{self.spec}: CCSD amplitudes not converged in "
                               f"{self.cc_max_cycle} cycles")
        energy = ccsd.e_tot
        if self.method == "ccsd(t)":
            energy += ccsd.ccsd_t()
        return energy * Hartree, None

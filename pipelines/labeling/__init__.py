"""Labeling stage: reference calculators (EMT, xTB through tblite, PySCF DFT and CCSD(T))
that record their level of theory; see docs/labeling.md."""

from .labelers import LEVEL_SPECS, SPECS, Labeler, LabelFailure, get_labeler

__all__ = ["LEVEL_SPECS", "SPECS", "Labeler", "LabelFailure", "get_labeler"]

"""ASE calculators by level name (sampling, Δ-model bases): a view of the labelers.

:mod:`pipelines.labeling` is the one place that maps a level to its program; this module
keeps the level-name interface its callers use.
"""

from __future__ import annotations

from pipelines.labeling.labelers import LEVEL_SPECS, get_labeler

# Level names with a calculator (a Δ model's base level must be one of them).
CALCULATORS = LEVEL_SPECS


def make_calculator(level: str):
    """An ASE calculator for ``level`` (a canonical level name such as ``gfn2-xtb``, or any
    labeler spec such as ``pyscf:wb97x/6-31g*``); :class:`BadInput` lists the available
    ones."""
    return get_labeler(level).calculator()


def calculator_info(level: str) -> dict:
    """Program and version of the calculator behind ``level`` (for `levels add`)."""
    lv = get_labeler(level).level
    return {"program": lv["program"], "program_version": lv["program_version"]}

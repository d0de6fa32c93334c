"""Checking a diversity request before any work: every refusal is a :class:`BadInput` (or
``NotFound``) naming the problem, raised before anything is computed or written."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from registry.chem.elements import SYMBOLS, symbol_to_z
from registry.errors import BadInput
from registry.store.refs import check_int

from .features import FeatureSpec, parse_features

COLOR_BY = ("dataset", "iteration", "split", "source", "energy")
DEFAULT_SAMPLE = 5000
DEFAULT_PERPLEXITY = 30.0
SEED_MAX = 2**32 - 1  # openTSNE's random_state is a numpy seed


@dataclass
class Request:
    """A checked request: resolved dataset versions, elements (atomic numbers), features."""

    infos: list[dict]
    elements: list[int]
    spec: FeatureSpec
    sample: int
    seed: int
    perplexity: float | None = None
    color_by: str = "dataset"
    reference: dict | None = None
    output: Path | None = None

    @property
    def refs(self) -> list[str]:
        return [i["ref"] for i in self.infos]

    @property
    def symbols(self) -> list[str]:
        return [SYMBOLS[z] for z in self.elements]


def check_perplexity_value(perplexity) -> float:
    try:
        p = float(perplexity)
    except (TypeError, ValueError):
        raise BadInput(f"--perplexity must be a number, got {perplexity!r}") from None
    if not math.isfinite(p) or p <= 0:
        raise BadInput(f"--perplexity must be a positive number, got {perplexity!r}")
    return p


def check_output(output) -> Path:
    path = Path(output)
    if path.suffix.lower() != ".png":
        raise BadInput(f"-o {str(output)!r}: the map is written as a PNG; name a .png file")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"-o {str(output)!r}: folder {str(folder)!r} does not exist")
    if path.is_dir():
        raise BadInput(f"-o {str(output)!r} is a folder; name a .png file")
    return path


def resolve_refs(reg, refs) -> list[dict]:
    """Each version once, in the order given (NotFound names a missing one)."""
    if isinstance(refs, str):
        refs = [refs]
    if not refs:
        raise BadInput("name at least one dataset version to analyse")
    out, seen = [], set()
    for r in refs:
        info = reg.resolve_dataset(str(r))
        if info["id"] not in seen:
            seen.add(info["id"])
            out.append(info)
    return out


def data_elements(reg, infos: list[dict]) -> list[int]:
    """Atomic numbers present in the versions (from their composition counts)."""
    zs = set()
    for info in infos:
        zs.update(symbol_to_z(s) for s in reg.show_dataset(info["ref"])["elements"])
    return sorted(zs)


def check_request(reg, refs, *, elements=None, features: str = "aev",
                  sample: int = DEFAULT_SAMPLE, seed: int = 0, perplexity=None,
                  color_by: str = "dataset", reference: str | None = None,
                  output=None) -> Request:
    """Everything checked and resolved; see the module docstring."""
    if color_by not in COLOR_BY:
        raise BadInput(f"--color-by {color_by!r}: expected one of {', '.join(COLOR_BY)}")
    sample = check_int(sample, "--sample", lo=1)
    seed = check_int(seed, "--seed", lo=0, hi=SEED_MAX)
    if perplexity is not None:
        perplexity = check_perplexity_value(perplexity)
        if sample <= 3 * perplexity:
            raise BadInput(f"--sample {sample} is too small for --perplexity {perplexity:g}: "
                           f"openTSNE needs more than 3 × perplexity = {3 * perplexity:g} "
                           f"environments per element")
    path = check_output(output) if output is not None else None
    infos = resolve_refs(reg, refs)
    ref_info = reg.resolve_dataset(str(reference)) if reference else None
    present = data_elements(reg, infos)
    if not present:
        raise BadInput(f"{', '.join(i['ref'] for i in infos)} hold no structures")
    names = ", ".join(i["ref"] for i in infos)
    if elements:
        wanted = []
        for e in elements:
            z = symbol_to_z(str(e).strip())
            if z not in present:
                raise BadInput(f"element {SYMBOLS[z]} is not in {names} (they hold "
                               f"{', '.join(SYMBOLS[p] for p in present)})")
            if z not in wanted:
                wanted.append(z)
        wanted.sort()
    else:
        wanted = present
    everything = sorted(set(present) | set(data_elements(reg, [ref_info]) if ref_info else ()))
    spec = parse_features(reg, features, everything)
    return Request(infos, wanted, spec, sample, seed, perplexity, color_by, ref_info, path)

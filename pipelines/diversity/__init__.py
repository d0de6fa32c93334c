"""Diversity of atomic environments: t-SNE maps and numbers in feature space (``nnp
diversity``; docs/diversity.md).

Modules, in the order a request flows through them: :mod:`.inputs` (checks),
:mod:`.environments` (atoms of dataset versions, iterations), :mod:`.sampling`,
:mod:`.features` (AEV / model embeddings on Dask), :mod:`.embedding` (openTSNE),
:mod:`.neighbors` and :mod:`.metrics` (numbers), :mod:`.breakdown` (per version and
iteration), :mod:`.store` (artifacts and run records), :mod:`.plots`, :mod:`.analysis` (the
pipeline: :func:`diversity`, :func:`diversity_numbers`).
"""

from .analysis import diversity, diversity_numbers

__all__ = ["diversity", "diversity_numbers"]

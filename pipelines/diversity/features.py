"""Per-atom feature vectors, computed chunk-wise as Dask tasks.

Two sources (``--features``):

- ``aev``: torchani's atomic environment vectors with the ANI-1x parameters
  (``AEVComputer.like_1x``: radial cutoff 5.2 Å with 16 shells, angular cutoff 3.5 Å with
  4 shells × 8 sections, cosine cutoff). The species are ANI-1x's H, C, N, O, followed by any
  other element of the data in order of atomic number, so H/C/N/O data gets exactly ANI-1x's
  384-long vectors;
- ``model:REF``: a registered ANI model version's learned embedding: its own AEV fed through
  each element's network up to the last hidden layer (the input of the output layer), the
  ensemble members' vectors concatenated.

:func:`compute_features` cuts the requested atoms into chunks of structures and submits one
task per chunk; each task opens its own registry from the URL, materializes the version
(the local cache holds it), pulls the model when there is one (hash-verified), and returns the
vectors of its atoms (float32). One torch thread per task: a worker is one core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from registry.chem.elements import SYMBOLS, symbol_to_z
from registry.errors import BadInput

from ..training.periodic import per_frame

ANI1X_SPECIES = (1, 6, 7, 8)
BATCH = 128  # structures per AEV call
CHUNK_STRUCTURES = 2000  # at most this many structures per task

os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")  # CPU here: no CUDA extensions


@dataclass(frozen=True)
class FeatureSpec:
    """What the features are; ``key`` identifies them (stored maps are reused by it)."""

    label: str  # "aev" or "model:NAME:V"
    key: dict

    @property
    def kind(self) -> str:
        return self.key["kind"]


def parse_features(reg, text: str, elements: list[int]) -> FeatureSpec:
    """The feature source ``text`` (``aev`` or ``model:REF``) for data holding ``elements``
    (atomic numbers); :class:`BadInput` / ``NotFound`` before any work."""
    raw = (text or "").strip()
    if raw.lower() == "aev":
        import torchani

        species = [*ANI1X_SPECIES, *sorted(set(elements) - set(ANI1X_SPECIES))]
        return FeatureSpec("aev", {"kind": "aev", "parameters": "ani-1x",
                                   "species": species, "torchani": torchani.__version__})
    if raw.lower().startswith("model:") and raw[6:].strip():
        info = reg.show_model(raw[6:].strip())  # NotFound names an unknown model
        cfg = info.get("config") or {}
        if info["architecture"] != "ani" or cfg.get("arch") != "ani" or not cfg.get("elements"):
            raise BadInput(f"--features model:{info['ref']}: only ANI models trained here "
                           f"(`nnp train`) have a learned embedding to use; this one is "
                           f"{info['architecture']!r}")
        lacking = sorted(set(SYMBOLS[z] for z in elements) - set(cfg["elements"]))
        if lacking:
            raise BadInput(f"--features model:{info['ref']}: the model handles "
                           f"{', '.join(cfg['elements'])}; the data also has "
                           f"{', '.join(lacking)}")
        return FeatureSpec(f"model:{info['ref']}", {
            "kind": "model", "model": info["ref"], "content_hash": info["content_hash"],
            "members": int(info["n_members"])})
    raise BadInput(f"unknown feature source {text!r}: expected 'aev' (ANI-1x atomic "
                   f"environment vectors) or 'model:MODEL_REF' (a registered ANI model's "
                   f"learned embedding)")


# -- extractors (run inside the tasks) ------------------------------------------------------
class _AEV:
    """ANI-1x AEVs; ``embed`` is the identity."""

    def __init__(self, key: dict):
        from torchani.aev import AEVComputer

        self.computer = AEVComputer.like_1x(num_species=len(key["species"]))
        self.index = np.full(256, -1, dtype=np.int64)
        self.index[np.asarray(key["species"])] = np.arange(len(key["species"]))

    def aev(self, species, coords, cell, pbc):
        return self.computer(species, coords, cell=cell, pbc=pbc)

    def embed(self, z: int, x):
        return x


class _Model:
    """A registered ANI version: its AEV, then each member's hidden layers for element z."""

    def __init__(self, reg, key: dict):
        from pipelines.training.ani import load_ensemble
        from pipelines.training.torch_io import load_state_dicts

        pulled = reg.pull_model(key["model"])
        if pulled.info["content_hash"] != key["content_hash"]:
            raise RuntimeError(f"model {key['model']} changed while features were computed")
        cfg = pulled.config
        self.model = load_ensemble(cfg, load_state_dicts(pulled)).eval()
        nets = self.model.neural_networks
        self.members = list(getattr(nets, "members", [nets]))
        self.index = np.full(256, -1, dtype=np.int64)
        for k, s in enumerate(cfg["elements"]):
            self.index[symbol_to_z(s)] = k

    def aev(self, species, coords, cell, pbc):
        return self.model.aev_computer(species, coords, cell=cell, pbc=pbc)

    def embed(self, z: int, x):
        import torch

        out = []
        for member in self.members:
            net = member.atomics[SYMBOLS[z]]
            h = x
            for layer in net.layers:
                h = net.activation(layer(h))
            out.append(h)
        return torch.cat(out, dim=1)


def extract(data, extractor, rows: np.ndarray, atoms: np.ndarray) -> dict:
    """Features of the atoms (``rows``: training-data rows, ``atoms``: atom indices) of
    :class:`pipelines.training.data.TrainingData` ``data``: ``{z: (positions in the
    request, float32 (k, D) array)}``."""
    import torch

    n = data.n_structures
    gid, gpos = np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    for gi, g in enumerate(data.groups):
        gid[g.index], gpos[g.index] = gi, np.arange(len(g.index))
    req_g, req_p = gid[rows], gpos[rows]
    parts: dict[int, list] = {}
    with torch.no_grad():
        for gi in np.unique(req_g):
            g = data.groups[gi]
            mine = np.flatnonzero(req_g == gi)
            need = np.unique(req_p[mine])
            cell = None if g.cell is None else torch.as_tensor(g.cell, dtype=torch.float32)
            pbc = None if g.pbc is None else torch.as_tensor(g.pbc)
            for lo in range(0, len(need), BATCH):
                pos = need[lo:lo + BATCH]
                width = int(g.n_atoms[pos].max())
                numbers = g.numbers[pos, :width]
                species = torch.as_tensor(np.where(numbers > 0, extractor.index[numbers], -1))
                coords = torch.as_tensor(g.positions[pos, :width], dtype=torch.float32)
                aev = per_frame(extractor.aev, species, coords, cell, pbc, dim=0)
                sel = mine[(req_p[mine] >= pos[0]) & (req_p[mine] <= pos[-1])]
                b = np.searchsorted(pos, req_p[sel])
                zs = numbers[b, atoms[sel]]
                vec = aev[torch.as_tensor(b), torch.as_tensor(atoms[sel].astype(np.int64))]
                for z in np.unique(zs):
                    m = zs == z
                    feats = extractor.embed(int(z), vec[torch.as_tensor(m)])
                    parts.setdefault(int(z), []).append(
                        (sel[m], feats.to(torch.float32).numpy()))
    return {z: (np.concatenate([p for p, _ in ps]), np.concatenate([f for _, f in ps]))
            for z, ps in parts.items()}


def feature_task(url: str, ref: str, dataset_hash: str, key: dict, rows: np.ndarray,
                 atoms: np.ndarray) -> dict:
    """One Dask task: the features of ``atoms`` of training-data ``rows`` of version
    ``ref`` (see :func:`extract`)."""
    os.environ.setdefault("TORCHANI_NO_WARN_EXTENSIONS", "1")
    import torch

    from registry.core import Registry

    from ..training.data import training_data

    torch.set_num_threads(1)
    with Registry(url) as reg:
        mat = reg.materialize(ref)
        if mat.hash != dataset_hash:
            raise RuntimeError(f"{ref} read with hash {mat.hash}, expected {dataset_hash}")
        extractor = _Model(reg, key) if key["kind"] == "model" else _AEV(key)
    return extract(training_data(mat), extractor, rows, atoms)


def chunks(rows: np.ndarray, n_workers: int) -> list[np.ndarray]:
    """Index arrays cutting requests (sorted by ``rows``) into chunks of whole structures:
    at least two per worker, at most :data:`CHUNK_STRUCTURES` structures each."""
    uniq = np.unique(rows)
    if not len(uniq):
        return []
    n = max(2 * n_workers, -(-len(uniq) // CHUNK_STRUCTURES))
    edges = [uniq[len(uniq) * k // n] for k in range(1, n)]
    cut = np.searchsorted(rows, edges)
    return [c for c in np.split(np.arange(len(rows)), cut) if len(c)]


def compute_features(url: str, env, index: np.ndarray, spec: FeatureSpec, client,
                     on_progress=None) -> dict[int, np.ndarray]:
    """Features of rows ``index`` of :class:`.environments.Environments` ``env``:
    ``{z: float32 (k, D)}``, each element's rows in the order of ``index``."""
    from dask.distributed import as_completed

    first = env.first[index]
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    submitted = []
    for v in np.unique(first):
        pick = index[first == v]
        pick = pick[np.argsort(env.row[pick], kind="stable")]
        for part in chunks(env.row[pick], n_workers):
            rows = pick[part]
            fut = client.submit(feature_task, url, env.refs[v], env.hashes[v], spec.key,
                                env.row[rows], env.atom[rows], pure=False)
            submitted.append((fut, rows))
    where = {f.key: rows for f, rows in submitted}
    order = np.empty(len(env), dtype=np.int64)
    order[index] = np.arange(len(index))
    out: dict[int, list] = {}
    done = 0
    if on_progress:
        on_progress(0, len(index))
    for fut in as_completed([f for f, _ in submitted]):
        rows = where[fut.key]
        for z, (pos, feats) in fut.result().items():
            out.setdefault(z, []).append((order[rows[pos]], feats))
        done += len(rows)
        if on_progress:
            on_progress(done, len(index))
    result = {}
    for z, ps in out.items():
        at = np.concatenate([p for p, _ in ps])
        result[z] = np.concatenate([f for _, f in ps])[np.argsort(at, kind="stable")]
    return result

"""Cached AEVs and their Jacobians: ANI training steps that evaluate only the atomic networks.

For fixed frames, an ANI member's AEV and its Jacobian with respect to the positions do not
change while the networks train. :func:`features_for` computes both once per dataset version
(torchani's AEV computer computes the AEV; ``torch.func.jvp``, one tangent per atom coordinate,
vmapped, differentiates it) and keeps them beside the materialize cache. A step
(:func:`energies_forces`) then evaluates, in Hartree and Å,

    E   = Σ_i NN_{z_i}(AEV_i) + Σ_i E_self(z_i) + E_const
    F_j = −Σ_i g_i · ∂AEV_i/∂x_j + F_const,      g_i = ∂NN_{z_i}/∂AEV_i

with g from autograd (``create_graph`` while training, so the force loss reaches the weights
through the networks alone: the double backward never enters the AEV). E_const and F_const are
the member's weightless potentials (torchani's xTB repulsion when the config has it), computed
once by torchani with autograd forces; the energy shifter runs at every step.

What is stored, per batch group of :class:`.data.TrainingData` (real atoms, frame order): the
AEVs (atoms, D), and for each ordered pair i ≠ j inside the radial cutoff (torchani's own
neighbour list, so periodic images count) the block ∂AEV_i/∂x_j restricted to the components an
atom of j's element can move: its radial block (R features) and, when the pair is inside the
angular cutoff, the angular blocks of its element pairs with the elements present in the group
(A features each), so (pairs, 3, K). The self blocks are not stored: the AEV is invariant to a
rigid translation, so ∂AEV_i/∂x_i = −Σ_{j≠i} ∂AEV_i/∂x_j and each pair's product
c = (∂AEV_i/∂x_j)ᵀ g_i adds to F_i and subtracts from F_j. Building checks both facts on every
frame: the components left out are exactly zero, and the self blocks torch computes equal
minus the sum of the pair blocks to float rounding.

Cache: ``NNP_CACHE/<version hash>/aev[jac]-<key>/`` in the materialize cache's verified format
(:func:`registry.training_data.materialize.write_cache`); the key hashes the format, torchani's
version, the dtype, the device type, whether Jacobians are held, and every constant of the AEV
computer and of the weightless potentials. Members that need the same entry take a file lock,
so one builds and the others read. The memory estimate (exact pair counts), doubled for the
batches gathered from the cache, must fit ``aev_cache_max_mb``; otherwise, or for a member
with trainable parameters outside its atomic networks, training runs by autograd as before
and the reason is logged and returned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

FORMAT = 2  # 2: periodic frames built one per chunk (caches of format 1 are wrong)
_NETS = "potentials.nnp.neural_networks."
_CHUNK_CUBE = 24_000  # frames per chunk x width³: bounds the angular triples held at once
_BLOCK_FLOATS = 1 << 22  # floats of one vmapped Jacobian block (3 m, frames, width, D)
_SETS = ("ang", "rad")  # pairs inside the angular cutoff, and the others (radial block only)
log = logging.getLogger(__name__)


class NotCacheable(Exception):
    """The cache cannot serve this member; the message says why."""


@dataclass
class CachedBatch:
    """One batch's cached tensors, atoms sorted by element (the order the networks run)."""

    aev: object  # (Na, D)
    counts: list  # atoms per element index
    elem: object  # (Na,) element index of each atom (for the energy shifter)
    mol: object  # (Na,) batch row of each atom
    scatter: object  # (Na,) row * width + position: where each atom's force goes
    width: int
    econst: object  # (B,) Hartree
    fconst: object | None  # (Na, 3) Hartree/Å (with Jacobians)
    dims: object  # (S * K,) AEV components per element (this group's block layout)
    pairs: list  # per pair set: (i * S + element of j, i, j, blocks (P, 3, K or R))


# ------------------------------------------------------------------------ the training step
def energies_forces(model, batch, forces: bool, create_graph: bool = False):
    """(energies (B,) Hartree, forces (B, width, 3) Hartree/Å or None) of a cached batch."""
    import torch

    c = batch.cached
    nets = model.potentials["nnp"].neural_networks
    aev = c.aev.detach().requires_grad_(True) if forces else c.aev
    # torchani's ANINetworks runs network k on the atoms of element k; atoms arrive sorted
    parts = [net(x) for net, x in zip(nets.atomics.values(), aev.split(c.counts), strict=True)
             if x.shape[0]]
    e_atom = torch.cat(parts).view(-1)
    shift = model.energy_shifter.self_energies.index_select(0, c.elem)
    e = c.econst.index_add(0, c.mol, e_atom + shift)
    if not forces:
        return e, None
    if c.pairs is None:
        raise ValueError("forces asked of an AEV cache built without Jacobians")
    (g,) = torch.autograd.grad(e_atom.sum(), aev, create_graph=create_graph)
    f = c.fconst
    if c.pairs:
        gk = g.index_select(1, c.dims).view(-1, c.dims.shape[0] // len(c.counts))
        for row, i, j, blocks in c.pairs:
            rows = gk[:, :blocks.shape[-1]].index_select(0, row)
            cp = torch.bmm(blocks, rows.unsqueeze(-1)).squeeze(-1)
            f = f.index_add(0, i, cp).index_add(0, j, cp, alpha=-1)
    b = c.econst.shape[0]
    out = f.new_zeros(b * c.width, 3).index_add(0, c.scatter, f)
    return e, out.view(b, c.width, 3)


# ------------------------------------------------------------------------ cached features
class Features:
    """The cached arrays of every group of a :class:`.data.TrainingData`, as tensors on the
    training device; :meth:`batches` assembles an epoch's batches (see the module
    docstring)."""

    def __init__(self, groups: list[dict], layout: _Layout, jacobian: bool, device: str):
        self.n_species, self.jacobian, self.device = layout.n_species, jacobian, device
        self.groups = []
        for arr in groups:
            n_atoms = np.asarray(arr["n_atoms"], np.int64)
            g = {"elem": np.asarray(arr["elem"], np.int64)}
            g["real"], g["ids"] = _padded(n_atoms)
            g["dims"] = layout.dims_for(g["elem"]).view(-1).to(device)
            for name in ("aev", "econst", "fconst"):
                g[name] = self._stored(arr[name])
            for s in _SETS if jacobian else ():
                real, ids = _padded(np.asarray(arr[f"{s}_count"], np.int64))
                g[s] = {"real": real, "ids": ids, "i": np.asarray(arr[f"{s}_i"], np.int64),
                        "j": np.asarray(arr[f"{s}_j"], np.int64),
                        "blocks": self._stored(arr[f"{s}_blocks"])}
            self.groups.append(g)

    def _stored(self, a: np.ndarray):
        """A cached array as a tensor on the device (on CPU, sharing the array's memory)."""
        import torch

        return torch.from_numpy(a).to(self.device)

    def _take(self, a, idx: np.ndarray):
        """Rows ``idx`` of a :meth:`_stored` tensor."""
        return a.index_select(0, self._tensor(idx))

    def batches(self, plan: list) -> list[CachedBatch]:
        """The cached tensors of batches ``plan`` = [(group, rows, width), ...] (an epoch's),
        assembled with one pass of array operations and one gather per group."""
        out: list = [None] * len(plan)
        by_group: dict[int, list[int]] = {}
        for k, (gi, _, _) in enumerate(plan):
            by_group.setdefault(gi, []).append(k)
        for gi, ks in by_group.items():
            made = self._group_batches(self.groups[gi], [plan[k][1] for k in ks],
                                       np.array([plan[k][2] for k in ks], np.int64))
            for k, c in zip(ks, made, strict=True):
                out[k] = c
        return out

    def _group_batches(self, g: dict, rows_list: list, widths: np.ndarray) -> list:
        s, nb = self.n_species, len(rows_list)
        rows = np.concatenate(rows_list)
        per = np.array([len(r) for r in rows_list], np.int64)
        batch_of = np.repeat(np.arange(nb), per)  # per frame
        row_in_batch = np.arange(len(rows)) - np.repeat(np.cumsum(per) - per, per)
        real = g["real"][rows]
        fr, local = np.nonzero(real)  # atoms frame after frame, as the cache stores them
        ids = g["ids"][rows][real]
        elem = g["elem"][ids]
        b = batch_of[fr]
        counts = np.bincount(b * s + elem, minlength=nb * s).reshape(nb, s)
        na = counts.sum(axis=1)
        order = np.argsort(b * s + elem, kind="stable")  # by batch, then by element
        mol = row_in_batch[fr]
        # elements, batch rows, places in the padded forces: sorted, one tensor
        atoms = self._tensor(np.stack([elem, mol, mol * widths[b] + local])[:, order])
        sizes = na.tolist()
        a_elem, a_mol, a_scatter = (t.split(sizes) for t in atoms.unbind(0))
        sel = ids[order]
        aev = self._take(g["aev"], sel).split(sizes)
        econst = self._take(g["econst"], rows).split(per.tolist())
        fconst = [None] * nb
        pairs: list = [None] * nb
        if self.jacobian:
            fconst = self._take(g["fconst"], sel).split(sizes)
            rank = np.empty(len(ids), np.int64)  # each atom's place in its batch's order
            rank[order] = np.arange(len(ids)) - np.repeat(np.cumsum(na) - na, na)
            first = np.cumsum(real.sum(axis=1)) - real.sum(axis=1)  # per frame, in ``ids``
            pairs = [[] for _ in range(nb)]
            for name in _SETS:
                p = g[name]
                preal = p["real"][rows]
                pf, _ = np.nonzero(preal)
                if not len(pf):
                    continue
                pids = p["ids"][rows][preal]
                ai, aj = first[pf] + p["i"][pids], first[pf] + p["j"][pids]
                t = self._tensor(np.stack([rank[ai] * s + elem[aj], rank[ai], rank[aj]]))
                psizes = np.bincount(batch_of[pf], minlength=nb).tolist()
                blocks = self._take(p["blocks"], pids).split(psizes)
                for k, (row, i, j) in enumerate(zip(*(x.split(psizes) for x in t.unbind(0)),
                                                    strict=True)):
                    if psizes[k]:
                        pairs[k].append((row, i, j, blocks[k]))
        return [CachedBatch(aev=aev[k], counts=counts[k].tolist(), elem=a_elem[k], mol=a_mol[k],
                            scatter=a_scatter[k], width=int(widths[k]), econst=econst[k],
                            fconst=fconst[k], dims=g["dims"], pairs=pairs[k])
                for k in range(nb)]

    def _tensor(self, a: np.ndarray):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
        return t.to(self.device)


def _padded(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items stored frame after frame, ``counts`` per frame: (mask (frames, most), item
    ids (frames, most), -1 past each frame's count)."""
    real = np.arange(int(counts.max(initial=0)))[None, :] < counts[:, None]
    ids = np.full(real.shape, -1, np.int64)
    ids[real] = np.arange(int(counts.sum()))
    return real, ids


def features_for(data, model, config: dict, device: str, dtype,
                 jacobian: bool) -> tuple[Features | None, str]:
    """(cached features or None, status) for training ``model`` on ``data``; status is
    ``hit``, ``built in S s (M MB)`` or ``off: <why>`` (then training runs by autograd)."""
    if config.get("arch", "ani") != "ani":
        return None, f"off: arch {config.get('arch')!r} (the AEV cache serves ani)"
    if not config.get("aev_cache", True):
        return None, "off: aev_cache is false"
    try:
        return _load_or_build(data, model, device, dtype, jacobian,
                              float(config.get("aev_cache_max_mb", 2048)))
    except NotCacheable as exc:
        log.warning("AEV cache not used for %s: %s; training by autograd", data.ref, exc)
        return None, f"off: {exc}"


def _load_or_build(data, model, device, dtype, jacobian, budget_mb):
    from filelock import FileLock

    from registry.training_data.materialize import CacheInvalid, cache_root, read_cache, write_cache

    layout = _Layout(model)
    key = ("aevjac-" if jacobian else "aev-") + cache_key(model, dtype, jacobian)
    root = cache_root() / data.hash
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / f"{key}.lock"))
    except OSError as exc:  # no cache folder: build in memory only
        root, lock = None, nullcontext()
        log.warning("AEV cache not stored (%s)", exc)
    with lock:
        if root is not None:
            _check_budget(_stored_bytes(root / key) / 2 ** 20, budget_mb)
            try:
                _, groups = read_cache(root, key, data.n_structures)
                _check_arrays(groups, data, layout, jacobian)
                return Features(groups, layout, jacobian, device), "hit"
            except CacheInvalid:
                pass
        t0 = time.perf_counter()
        plan = [_pairs(layout, g, dtype, device) if jacobian else None for g in data.groups]
        mb = _estimate(data, layout, plan, dtype) / 2 ** 20
        _check_budget(mb, budget_mb)
        groups = [_build_group(layout, g, p, dtype, device)
                  for g, p in zip(data.groups, plan, strict=True)]
        note = ""
        if root is not None:
            try:
                write_cache(root, {"hash": key, "ref": data.ref, "version_hash": data.hash,
                                   "n_structures": data.n_structures, "jacobian": jacobian,
                                   "dtype": str(dtype)}, groups)
            except OSError as exc:
                note = f", not stored: {exc.strerror or exc}"
        seconds = time.perf_counter() - t0
        log.info("AEV cache for %s built in %.1f s (%.3g MB)", data.ref, seconds, mb)
        return Features(groups, layout, jacobian, device), \
            f"built in {seconds:.1f} s ({mb:.3g} MB{note})"


def _stored_bytes(entry) -> int:
    """Size of a stored entry's arrays from its manifest (0 when there is none to read)."""
    try:
        return int(json.loads((entry / "manifest.json").read_text())["data_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _check_budget(mb: float, budget_mb: float) -> None:
    """The cache, and the batches gathered from it (an epoch's, and the validation split's,
    which the loop holds at once: about as much again), must fit the budget."""
    if 2 * mb > budget_mb:
        raise NotCacheable(f"it would take {2 * mb:.3g} MB (the cache and the batches gathered "
                           f"from it), over aev_cache_max_mb = {budget_mb:g}")


def cache_key(model, dtype, jacobian: bool) -> str:
    """Hash of everything the cached arrays depend on (not the networks, not the shifter)."""
    import torchani

    aevc = model.potentials["nnp"].aev_computer
    meta = {"format": FORMAT, "torchani": torchani.__version__, "dtype": str(dtype),
            "device": model.atomic_numbers.device.type, "jacobian": jacobian,
            "symbols": list(model.symbols),
            "aev": [repr(aevc), repr(aevc.radial.cutoff), repr(aevc.angular.cutoff),
                    repr(aevc.radial.cutoff_fn), repr(aevc.neighborlist)],
            "potentials": {k: [repr(p), repr(p.cutoff)] for k, p in model.potentials.items()
                           if k != "nnp"}}
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        if not (name.startswith(_NETS) or name.startswith("energy_shifter.")):
            h.update(name.encode())
            h.update(t.detach().to("cpu").double().numpy().tobytes())
    return h.hexdigest()[:32]


class _Layout:
    """The member's AEV computer and what the cache needs to know about its output."""

    def __init__(self, model):
        import copy

        from torchani.nn import ANINetworks

        nnp = model.potentials["nnp"] if "nnp" in getattr(model, "potentials", {}) else None
        if nnp is None or not isinstance(nnp.neural_networks, ANINetworks):
            raise NotCacheable("the member is not a single torchani ANI with ANINetworks")
        moving = [n for n, p in model.named_parameters()
                  if p.requires_grad and not n.startswith(_NETS)]
        if moving:
            raise NotCacheable(f"parameter {moving[0]} outside the atomic networks is trained")
        self.model, self.aevc = model, nnp.aev_computer
        if self.aevc.strategy != "pyaev":  # cuAEV's kernels have no forward-mode derivative
            self.aevc = copy.deepcopy(self.aevc)
            self.aevc.set_strategy("pyaev")
        self.n_species, self.d = self.aevc.num_species, self.aevc.out_dim
        self.r, self.a = self.aevc.radial.num_feats, self.aevc.angular.num_feats
        self.consts = None
        if any(k != "nnp" for k in model.potentials):
            self.consts = copy.deepcopy(model)
            self.consts.set_enabled("nnp", False)
            self.consts.set_enabled("energy_shifter", False)

    def dims_for(self, elem: np.ndarray):
        """(S, R + |present| A): the components of AEV_i that an atom of element e can move,
        given the elements present: e's radial block, then the angular blocks (e, t) for each
        present t (torchani's layout; building checks that nothing else moves)."""
        import torch

        present = np.unique(elem[elem >= 0]).tolist()
        tri = self.aevc.triu_index.cpu()
        return torch.tensor(
            [[e * self.r + k for k in range(self.r)]
             + [self.aevc.radial_len + int(tri[e, t]) * self.a + k for t in present
                for k in range(self.a)] for e in range(self.n_species)], dtype=torch.long)

    def elements(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(atomic numbers, element indices in the model's order), -1 for padding atoms."""
        table = np.full(256, -1, np.int64)
        table[self.model.atomic_numbers.cpu().numpy()] = np.arange(self.n_species)
        numbers = np.asarray(numbers, np.int64)
        return np.where(numbers > 0, numbers, -1), table[numbers]


def _check_arrays(groups: list[dict], data, layout: _Layout, jacobian: bool) -> None:
    from registry.training_data.materialize import CacheInvalid

    if len(groups) != len(data.groups):
        raise CacheInvalid("stale (other groups)")
    for arr, g in zip(groups, data.groups, strict=True):
        _, elem = layout.elements(g.numbers)
        want = elem[elem >= 0]
        if not np.array_equal(arr.get("n_atoms"), g.n_atoms) or \
                not np.array_equal(np.asarray(arr.get("elem"), np.int64), want) or \
                (jacobian and "ang_blocks" not in arr):
            raise CacheInvalid("stale (other frames)")


def _tensors(layout, g, dtype, device, lo, hi, width):
    import torch

    species, elem = (torch.as_tensor(a, device=device)
                     for a in layout.elements(g.numbers[lo:hi, :width]))
    x = torch.as_tensor(np.ascontiguousarray(g.positions[lo:hi, :width]), dtype=dtype,
                        device=device)
    cell = None if g.cell is None else torch.as_tensor(g.cell, dtype=dtype, device=device)
    pbc = None if g.pbc is None else torch.as_tensor(g.pbc, device=device)
    return species, elem, x, cell, pbc


def _chunks(g):
    width = int(g.n_atoms.max())
    # one frame per chunk when periodic: torchani's periodic pairs cover the first frame only
    step = 1 if g.cell is not None else int(np.clip(_CHUNK_CUBE // width ** 3, 1, 512))
    return width, [(lo, min(lo + step, len(g.n_atoms))) for lo in range(0, len(g.n_atoms), step)]


def _pairs(layout: _Layout, g, dtype, device) -> list:
    """Per chunk: (frame, i, j, inside the angular cutoff) of the ordered pairs i != j inside
    the radial cutoff, from torchani's neighbour list."""
    import torch
    from torchani.neighbors import discard_outside_cutoff

    width, chunks = _chunks(g)
    out = []
    for lo, hi in chunks:
        _, elem, x, cell, pbc = _tensors(layout, g, dtype, device, lo, hi, width)
        with torch.no_grad():
            nb = layout.aevc.neighborlist(layout.aevc.radial.cutoff, elem, x, cell, pbc)
        keys = []
        for idx in (nb.indices, discard_outside_cutoff(nb, layout.aevc.angular.cutoff).indices):
            b, i, j = idx[0] // width, idx[0] % width, idx[1] % width
            keep = i != j  # an atom's own periodic images move with it: its self block
            b, i, j = b[keep], i[keep], j[keep]
            keys.append(torch.unique(torch.cat([(b * width + i) * width + j,
                                                (b * width + j) * width + i])))
        key, ang = keys[0], torch.isin(keys[0], keys[1])
        out.append((key // (width * width), key // width % width, key % width, ang))
    return out


def _estimate(data, layout: _Layout, plan, dtype) -> int:
    import torch

    item = torch.empty(0, dtype=dtype).element_size()
    total = 0
    for g, p in zip(data.groups, plan, strict=True):
        atoms = int(g.n_atoms.sum())
        floats = atoms * (layout.d + 3) + len(g.n_atoms)
        ints = atoms
        if p is not None:
            present = len(np.unique(g.numbers[g.numbers > 0]))
            ang = sum(int(c[3].sum()) for c in p)
            rad = sum(len(c[3]) for c in p) - ang
            floats += 3 * (ang * (layout.r + present * layout.a) + rad * layout.r)
            ints += 2 * (ang + rad)
        total += floats * item + ints * 8
    return total


def _build_group(layout: _Layout, g, plan, dtype, device) -> dict:
    """One group's cached arrays (numpy, in ``dtype``); ``plan``: its pairs, None for AEVs
    only."""
    import torch

    width, chunks = _chunks(g)
    dims = layout.dims_for(layout.elements(g.numbers)[1]).to(device)
    parts: dict[str, list] = {}
    for c, (lo, hi) in enumerate(chunks):
        species, elem, x, cell, pbc = _tensors(layout, g, dtype, device, lo, hi, width)
        real = elem >= 0
        with torch.no_grad():
            aev = layout.aevc(elem, x, cell, pbc)
        econst, fconst = _constants(layout, species, x, cell, pbc)
        got = {"aev": aev[real], "econst": econst, "fconst": fconst[real],
               "elem": elem[real].to(torch.int8)}
        if plan is not None:
            pb, pi, pj, ang = plan[c]
            blocks = _jacobian(layout, dims, elem, x, cell, pbc, pb, pi, pj, ang)
            for s, m in zip(_SETS, (ang, ~ang), strict=True):
                got.update({f"{s}_i": pi[m].to(torch.int32), f"{s}_j": pj[m].to(torch.int32),
                            f"{s}_blocks": blocks[s],
                            f"{s}_count": torch.bincount(pb[m], minlength=hi - lo).to(
                                torch.int32)})
        for name, t in got.items():
            parts.setdefault(name, []).append(t.detach().to("cpu"))
    out = {name: torch.cat(ts).numpy() for name, ts in parts.items()}
    out["n_atoms"] = np.asarray(g.n_atoms, np.int64)
    return out


def _constants(layout: _Layout, species, x, cell, pbc):
    """Energy (C,) and forces (C, n, 3) of the weightless potentials, by torchani."""
    import torch

    if layout.consts is None:
        return x.new_zeros(x.shape[0]), torch.zeros_like(x)
    xr = x.detach().requires_grad_(True)
    with torch.enable_grad():
        e = layout.consts((species, xr), cell, pbc).energies
        if not e.requires_grad:
            return e.detach(), torch.zeros_like(x)
        (grad,) = torch.autograd.grad(e.sum(), xr)
    return e.detach(), -grad


def _jacobian(layout: _Layout, dims, elem, x, cell, pbc, pb, pi, pj, ang) -> dict:
    """The pairs' blocks {"ang": (Pa, 3, K), "rad": (Pr, 3, R)} of one chunk, by forward mode
    (``vmap`` over tangents, one per coordinate of a block of atoms), checked: components left
    out are exactly zero, and the self blocks equal minus the sum of the pair blocks."""
    import torch
    from torch.func import jvp, vmap

    c, n, _ = x.shape
    d, dev = layout.d, x.device
    jself = x.new_zeros(c, n, 3, d)
    full = x.new_zeros(len(pb), 3, dims.shape[1])  # radial-only pairs use the first R
    xyz = torch.arange(3, device=dev)
    step = int(np.clip(_BLOCK_FLOATS // (3 * c * n * d), 1, n))

    def aev(xx):
        return layout.aevc(elem, xx, cell, pbc)

    def tangent_out(t):
        return jvp(aev, (x,), (t,))[1]

    for j0 in range(0, n, step):
        atoms = torch.arange(j0, min(n, j0 + step), device=dev)
        m = len(atoms)
        k = torch.arange(m, device=dev)
        tangents = x.new_zeros(m, 3, c, n, 3)
        tangents[k[:, None], xyz[None, :], :, atoms[:, None], xyz[None, :]] = 1.0
        t = vmap(tangent_out)(tangents.view(3 * m, c, n, 3)).view(m, 3, c, n, d)
        jself[:, j0:j0 + m] = t[k, :, :, atoms, :].permute(2, 0, 1, 3)
        t[k, :, :, atoms, :] = 0
        inside = (pj >= j0) & (pj < j0 + m)
        for mask, kk in ((ang, dims.shape[1]), (~ang, layout.r)):
            sel = (inside & mask).nonzero().view(-1)
            if len(sel):
                at = (pj[sel] - j0)[:, None, None], xyz[None, :, None], \
                    pb[sel][:, None, None], pi[sel][:, None, None], \
                    dims[elem[pb[sel], pj[sel]], :kk][:, None, :]
                full[sel, :, :kk] = t[at]
                t[at] = 0
        if bool(t.any()):
            raise NotCacheable("an AEV component outside its element block depends on a "
                               "neighbour (the AEV layout is not the one this cache assumes)")
    # translation invariance: the self block is minus the sum of the pair blocks
    derived = torch.zeros_like(jself).view(c * n, 3, d)
    at = (pb * n + pi)[:, None, None], xyz[None, :, None], dims[elem[pb, pj]][:, None, :]
    derived.index_put_(at, -full, accumulate=True)
    err = float((derived.view_as(jself) - jself).abs().max())
    if err > 1e3 * torch.finfo(x.dtype).eps * max(float(jself.abs().max()), 1.0):
        raise NotCacheable(f"the AEV's self blocks differ from minus the sum of its pair "
                           f"blocks by {err:.1e} (not translation invariant?)")
    return {"ang": full[ang].contiguous(), "rad": full[~ang, :, :layout.r].contiguous()}

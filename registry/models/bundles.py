"""Model bundles: a version's files, config and provenance in one zip, between registries.

Layout: ``manifest.json`` (format, the version's metadata, each file's name/role/sha256/size,
the content hash and the full lineage: dataset version hash, levels, runs, code versions) and
``files/<name>``. Import checks every file against the manifest's sha256 before anything is
stored, then registers the version (as the next version number of the target model) keeping
the bytes, hence the hashes. Nothing in a bundle is ever unpickled or extracted by path.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from pathlib import Path

from sqlalchemy import select

from ..errors import BadInput, NotFound
from ..store.artifacts import sha256_bytes, sha256_file
from ..store.levels import canonical_name, ensure_level
from ..store.refs import check_name, check_text
from ..store.runs import edge
from ..store.schema import DatasetVersion
from ..times import json_default
from .info import content_hash
from .lineage import lineage
from .pull import pull_model
from .versions import FILE_RE, insert_version, version_meta
from .weights import check_safetensors

FORMAT = "nnp-model-bundle"
FORMAT_VERSION = 1
_META = ("architecture", "config", "elements", "cutoff", "units", "frozen", "metrics")


def export_bundle(reg, ref: str, path) -> dict:
    """Write ``path`` (zip, written atomically); returns a summary."""
    pulled = pull_model(reg, ref)
    info = pulled.info
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": {k: info[k] for k in ("name", "version", "ref", "description", "level",
                                       "dataset_version", "parent", "n_members", "status",
                                       "status_reason", "aliases", "created_at", *_META)},
        "files": [{k: f[k] for k in ("name", "role", "member_index", "sha256", "size")}
                  for f in info["files"]],
        "content_hash": info["content_hash"],
        "provenance": lineage(reg, pulled.ref),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr("manifest.json", json.dumps(manifest, indent=2, default=json_default))
            for f in info["files"]:
                z.writestr(f"files/{f['name']}", pulled.blobs[f["name"]])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"ref": pulled.ref, "path": str(path), "size": path.stat().st_size,
            "content_hash": info["content_hash"], "files": len(info["files"])}


def read_bundle(path) -> tuple[dict, dict[str, bytes]]:
    """(manifest, {file name: verified bytes}); :class:`BadInput` on anything unexpected."""
    path = Path(path)
    shown = str(path) if len(str(path)) <= 80 else str(path)[:77] + "..."
    try:
        if not path.is_file():
            raise NotFound(f"no bundle file {shown!r}")
        z = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise BadInput(f"{path.name} is not a model bundle (not a zip file)") from None
    except OSError as exc:  # a name too long, no permission...
        raise BadInput(f"cannot read bundle {shown!r}: {exc.strerror or exc}") from None
    with z:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except KeyError:
            raise BadInput(f"{path.name} is not a model bundle (no manifest.json)") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadInput(f"{path.name}: manifest.json is not valid JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BadInput(f"{path.name} is not a model bundle (format is not {FORMAT})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise BadInput(f"{path.name}: unsupported bundle format version "
                           f"{manifest.get('format_version')!r}")
        blobs = {}
        files = manifest.get("files") or []
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise BadInput(f"{path.name}: manifest 'files' is not a list of objects")
        for f in files:
            name = f.get("name")
            if not isinstance(name, str) or not FILE_RE.match(name) or name in blobs:
                raise BadInput(f"{path.name}: invalid file name {name!r} in manifest")
            try:
                data = z.read(f"files/{name}")
            except KeyError:
                raise BadInput(f"{path.name}: file {name!r} listed but missing") from None
            if sha256_bytes(data) != f.get("sha256") or len(data) != f.get("size"):
                raise BadInput(f"{path.name}: file {name!r} does not match its sha256 in the "
                               "manifest (tampered or corrupt bundle)")
            k = f.get("member_index")
            if f.get("role") == "weights":
                if isinstance(k, bool) or not isinstance(k, int):
                    raise BadInput(f"{path.name}: weights file {name!r} has no member index")
                check_safetensors(data, f"{path.name}: {name}")
            elif f.get("role") == "extra":
                if k is not None:
                    raise BadInput(f"{path.name}: extra file {name!r} has a member index")
            else:
                raise BadInput(f"{path.name}: file {name!r} has unknown role {f.get('role')!r}")
            blobs[name] = data
    if not isinstance(manifest.get("model"), dict):
        raise BadInput(f"{path.name}: manifest has no 'model' object")
    if not any(f["role"] == "weights" for f in files):
        raise BadInput(f"{path.name}: bundle has no weights")
    if content_hash(manifest["files"]) != manifest.get("content_hash"):
        raise BadInput(f"{path.name}: content hash does not match its files")
    return manifest, blobs


def import_bundle(reg, path, name: str | None = None) -> dict:
    """Register the bundle at ``path`` as the next version of ``name`` (default: its own).

    Everything is checked as :func:`register_model` checks it (names, lengths, numbers)
    before anything is stored."""
    manifest, blobs = read_bundle(path)
    m = manifest["model"]
    if name is None:  # the bundle's own name, checked as register checks names
        name = check_name(m.get("name"), f"model name in bundle {Path(path).name}")
    elif not isinstance(name, str) or not name.strip():
        raise BadInput(f"empty name {name!r}: --name needs a model name (or leave it out to "
                       "use the bundle's own)")
    else:
        name = check_name(name, "model name")
    meta = version_meta(**{k: m.get(k) for k in _META})
    description = check_text(m.get("description"), "model description")
    if m.get("level") is not None:
        canonical_name(m["level"])
    files = sorted(manifest["files"], key=lambda f: (f["role"] != "weights",
                                                     f["member_index"] or 0, f["name"]))
    for k, f in enumerate(fw for fw in files if fw["role"] == "weights"):
        if f["member_index"] != k or f["name"] != f"member_{k}.safetensors":
            raise BadInput(f"bundle weights are not member_0..member_{k}: {f['name']!r}")
    prov = manifest.get("provenance") or {}
    if not isinstance(prov, dict):
        raise BadInput(f"{Path(path).name}: manifest 'provenance' is not an object")
    dv = m.get("dataset_version") or {}
    if not isinstance(dv, dict) or not isinstance(dv.get("hash"), str | None) \
            or not isinstance(dv.get("ref"), str | None):
        raise BadInput(f"{Path(path).name}: manifest 'dataset_version' is not an object "
                       "with a ref and a hash")
    check_text(dv.get("hash"), "dataset version hash in the manifest", DatasetVersion.hash)
    if not isinstance(m.get("parent"), str | None):
        raise BadInput(f"{Path(path).name}: manifest 'parent' is not a model reference")
    level = None
    if m.get("level"):
        lv = prov.get("level") if isinstance(prov.get("level"), dict) else {}
        fields = {k: lv.get(k) for k in ("method", "basis", "program", "program_version",
                                         "keywords", "description")}
        level = ensure_level(reg, m["level"], **{k: v for k, v in fields.items()
                                                if v is not None})["name"]
    dv_id = None
    if dv.get("hash"):
        with reg.session() as s:
            dv_id = s.scalar(select(DatasetVersion.id).where(DatasetVersion.hash == dv["hash"])
                             .order_by(DatasetVersion.id).limit(1))
    stored = [(f["name"], f["role"], f["member_index"], *reg.artifacts.put(blobs[f["name"]]))
              for f in files]
    bundle_sha, _ = sha256_file(path)
    inputs = [edge("file", ref=Path(path).name, sha256=bundle_sha, kind="model bundle")]
    if dv:
        inputs.append(edge("dataset_version", dv_id, ref=dv.get("ref"), sha256=dv.get("hash")))
    if m.get("parent"):
        inputs.append(edge("model_version", None, ref=m["parent"], role="parent"))
    if m.get("status") == "retracted":
        meta["status"] = "retracted"
        meta["status_reason"] = f"retracted in the source registry: {m.get('status_reason')}"
    out = insert_version(
        reg, name, stored, meta, level=level, dataset_version=dv_id,
        description=description,
        run_kind="model_import",
        run_params={"bundle": Path(path).name, "source": m.get("ref"),
                    "source_content_hash": manifest["content_hash"]},
        run_inputs=inputs, run_result={"provenance": prov})
    if out["content_hash"] != manifest["content_hash"]:  # pragma: no cover - by construction
        raise BadInput("imported content hash differs from the bundle's")
    return out


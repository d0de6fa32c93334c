"""The :class:`Registry`: one object, the whole Python API of the store.

A thin facade: each method *is* a module function whose first argument is the store, named
here so users find everything on one object. The modules import each other directly (their
imports show what they depend on); nothing calls back through this class. Nothing here
imports torch, dask or ``pipelines``.
"""

from __future__ import annotations

from .curation import datasets, dedup, errata
from .curation import reference_energies as ref_energies
from .ingest import api as ingest_api
from .ingest import files
from .io import export as export_files
from .models import bundles, info, pull, versions
from .models import lineage as lineage_mod
from .query import api as query_api
from .store import levels, runs, structures
from .store import stats as store_stats
from .store.base import Store
from .training_data import materialize as materialize_mod


class Registry(Store):
    """A registry at a database URL (default: ``NNP_DATABASE_URL`` or the embedded SQLite)
    with its artifact store (``NNP_ARTIFACTS``). See :class:`registry.store.base.Store`."""

    # provenance runs
    run = runs.run
    start_run = runs.start_run
    finish_run = runs.finish_run
    get_run = runs.get_run
    list_runs = runs.list_runs
    runs_consuming = runs.runs_consuming

    # levels of theory and their reference energies
    ensure_level = levels.ensure_level
    add_level = levels.add_level
    get_level = levels.get_level
    list_levels = levels.list_levels
    set_reference_energies = ref_energies.set_reference_energies
    fit_reference_energies = ref_energies.fit_reference_energies
    reference_energies = ref_energies.reference_energies

    # ingest, export, reading back
    ingest = ingest_api.ingest
    ingest_batch = ingest_api.ingest_batch
    ingest_files = files.ingest_files
    export = export_files.export
    stats = store_stats.stats
    iter_frames = structures.iter_frames

    # queries
    query = query_api.query
    query_ids = query_api.query_ids
    count = query_api.count

    # curation: dataset versions, near-duplicates, errata
    resolve_dataset = datasets.resolve_dataset
    select_members = datasets.select_members
    create_dataset_version = datasets.create_dataset_version
    alias_dataset = datasets.alias_dataset
    remove_dataset_alias = datasets.remove_dataset_alias
    list_datasets = datasets.list_datasets
    show_dataset = datasets.show_dataset
    diff_datasets = datasets.diff_datasets
    near_duplicates = dedup.near_duplicates
    retract_labels = errata.retract_labels
    impact = errata.impact

    # training data
    materialize = materialize_mod.materialize

    # models
    register_model = versions.register_model
    set_model_alias = versions.set_model_alias
    retract_model = versions.retract_model
    record_verification = versions.record_verification
    show_model = info.show_model
    list_models = versions.list_models
    list_model_versions = versions.list_model_versions
    model_alias = versions.model_alias
    models_using_dataset_versions = versions.models_using_dataset_versions
    models_using_labels = versions.models_using_labels
    pull_model = pull.pull_model
    lineage = lineage_mod.lineage
    export_model = bundles.export_bundle
    import_model = bundles.import_bundle

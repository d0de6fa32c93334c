"""Active-learning state in the store: campaigns, iterations, trajectories and candidates.

The compute (training, sampling, labeling) is in :mod:`pipelines.active_learning`; this
package holds the reads and writes of its state (tables of migration 0007), so a campaign
killed at any point resumes from what the database says: :mod:`.campaigns` (a campaign's row
and its state), :mod:`.iterations` (the phase an iteration reached), :mod:`.candidates`
(sampled frames, selection, labels, their ingest) and :mod:`.status` (the report of
``nnp al status``).
"""

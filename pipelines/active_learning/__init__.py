"""Active learning by query-by-committee (``nnp al``): docs/active-learning.md.

``settings`` (what a campaign asks for, checked), ``seeds`` (the seed structures),
``sampling`` (MD / normal-mode / pool sampling with the committee, one Dask task per
trajectory), ``selection`` (which candidates to label), ``labeling`` (one Dask task per
label), ``loop`` (the iterations, resumable from the database), ``report`` (status and its
plot), ``systems`` (the aluminium and small-molecule campaigns) and ``demo``. The campaign's
state is in the registry (:mod:`registry.active_learning`).
"""

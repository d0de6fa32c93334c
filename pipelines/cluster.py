"""Dask clients: an existing scheduler (NNP_DASK_SCHEDULER) or a local cluster."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager


@contextmanager
def dask_client(n_workers: int | None = None):
    """Yield a ``distributed.Client``; a local cluster of one single-threaded process per core."""
    from dask.distributed import Client, LocalCluster

    from registry.config import dask_scheduler

    address = dask_scheduler()
    if address:
        with Client(address) as client:
            yield client
        return
    n = n_workers or max(1, min(os.cpu_count() or 1, 4))
    # The scheduler serves HTTP whatever the dashboard setting (None means the default
    # :8787); any free port lets two pipelines run at once without a port clash.
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client

"""The distributed engine the job runs on: Dask distributed (``pip install 'model-fingerprint[index]'``).

Why Dask and not Ray (both measured on this job by bench/index_speed.py, README "Building
reference packs from a listing"): the same speed on it (27.9 and 30.5 entries/s on the 300-file
bench), both re-run a lost worker's tasks; Dask starts a local cluster in 2-3 s (Ray 7-10 s),
its workers peak at ~105 MB (Ray ~150 MB) and the whole job at ~290 MB (Ray ~880 MB: seven helper
processes), and it is pure Python (~25 MB installed against ~240 MB). Dask is imported only here,
only when the job runs: ``fpcore`` and every other command never load it.

:class:`DaskEngine` is what the job (fpcore.indexer.job) sees: ``submit``, ``wait`` (finished
handles with their result or the error that ended them), ``cancel``, ``close``. Without an
address it starts a :class:`distributed.LocalCluster` on 127.0.0.1 (worker processes, one thread
per file read at once); with one (``--scheduler``, or Dask's ``DASK_SCHEDULER_ADDRESS``) it
connects to that scheduler and leaves the cluster as it found it.
"""
from __future__ import annotations

import logging
import os
import queue

from ..errors import UsageError

log = logging.getLogger(__name__)

#: the extra that installs the engine, named in the message when it is missing
EXTRA = "model-fingerprint[index]"
#: seconds to connect to a scheduler given by address before saying it cannot be reached
CONNECT_TIMEOUT = 30
#: Dask settings of the local cluster. Workers sample every thread's stack every 10 ms for the
#: dashboard's profile by default: with 8 threads per worker, 17.6 worker CPU-seconds for the
#: 300 entries of bench/index_speed.py against 11.7 without (two runs); the job is I/O waits and
#: short numpy bursts, not worth profiling.
#: A cluster given by address keeps its operator's settings.
LOCAL_CONFIG = {"distributed.worker.profile.enabled": False}


def _import_dask():
    try:
        import dask
        import distributed
    except ImportError:
        raise UsageError(f"fpcore index runs on Dask, which is not installed: pip install '{EXTRA}' "
                         "(or pip install 'dask[distributed]')") from None
    return dask, distributed


class Lost(Exception):
    """A task the engine gave up on: its worker was lost too many times (Dask's KilledWorker)."""


class DaskEngine:
    """A Dask client: on a LocalCluster of ``workers`` processes x ``threads`` threads, or on the
    scheduler at ``address``. ``dashboard``: start the local cluster's dashboard on 127.0.0.1
    (needs bokeh)."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int = 8,
                 dashboard: bool = True, processes: bool = True):
        dask, distributed = _import_dask()
        if not logging.getLogger().isEnabledFor(logging.DEBUG):   # the job reports what matters on one line
            for name in ("distributed", "bokeh", "tornado"):
                logging.getLogger(name).setLevel(logging.ERROR)
        self._finished: queue.Queue = queue.Queue()
        address = address or dask.config.get("scheduler-address", None)
        self.cluster = None
        if address:
            try:
                self.client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
            except (OSError, TimeoutError) as e:
                raise UsageError(f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:200]})") from None
            self.address, self.local = address, False
        else:
            try:
                import bokeh  # noqa: F401  (the dashboard needs it; without it there is none)
                dash = "127.0.0.1:0" if dashboard else None
            except ImportError:
                dash = None
            with dask.config.set(LOCAL_CONFIG):
                self.cluster = distributed.LocalCluster(
                    n_workers=workers or os.cpu_count() or 1, threads_per_worker=threads, processes=processes,
                    host="127.0.0.1" if processes else None, dashboard_address=dash, silence_logs=logging.ERROR)
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.address, self.local = self.cluster.scheduler_address, True
        self.dashboard = self.client.dashboard_link if (self.cluster is None or dash) else None

    def workers(self) -> int:
        return len(self.client.nthreads())

    def slots(self) -> int:
        """Threads of the whole cluster: files read at once."""
        return sum(self.client.nthreads().values())

    def submit(self, key: str, fn, *args):
        f = self.client.submit(fn, *args, key=key, pure=False)
        f.add_done_callback(self._finished.put)
        return f

    def wait(self, handles, timeout: float) -> list[tuple[object, object]]:
        """Handles that finished within ``timeout`` s, each with its result, or the exception
        that ended it (:class:`Lost` when its worker was lost too many times). The results of
        a batch are fetched together (one by one, each fetch a round trip, the driver fell
        behind 16 threads of fingerprinting)."""
        want = set(handles)
        done = []
        try:
            f = self._finished.get(timeout=timeout)
            while True:
                if f in want:
                    want.discard(f)
                    done.append(f)
                f = self._finished.get_nowait()
        except queue.Empty:
            pass
        ok = [f for f in done if f.status == "finished"]
        out = []
        if ok:
            try:
                out = list(zip(ok, self.client.gather(ok)))
            except Exception:   # one result could not be fetched (its worker gone): one at a time
                out = [(f, self._outcome(f)) for f in ok]
        out += [(f, self._outcome(f)) for f in done if f.status != "finished"]
        for f in done:
            f.release()
        return out

    @staticmethod
    def _outcome(f):
        if f.status == "finished":
            try:
                return f.result()
            except Exception as e:   # the result could not be fetched (its worker gone): run it again
                return e
        if f.status == "error":
            e = f.exception()
            return Lost(str(e)) if type(e).__name__ == "KilledWorker" else e
        return RuntimeError(f"task {f.status}")   # cancelled (the scheduler restarted): run it again

    def cancel(self, handles) -> None:
        try:
            self.client.cancel(list(handles), force=True)
        except Exception as e:   # closing anyway
            log.debug("cancel: %s", e)

    def close(self) -> None:
        for x in (self.client, self.cluster):
            if x is not None:
                try:
                    x.close()
                except Exception as e:   # a cluster already gone
                    log.debug("close: %s", e)

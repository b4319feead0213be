"""Building a reference pack from a listing of URLs (issue 26): ``fpcore index`` on Dask and on Ray,
against fingerprinting one URL at a time, in one run.

    python bench/index_speed.py [--files 300] [--full 4] [--rtt 0.05] [--workers 2]
                                [--files-per-worker 8] [--in-flight 32] [--baseline 40]
                                [--engines dask,ray] [--out DIR]

The files: ``--files`` safetensors files with real full-size headers (testkit), sparse on disk
with 1 MB of distinct random fp16 values after each header (distinct fingerprints): ``--full``
full-size checkpoints (SDXL 6.94 GB and SD1.5 2.13 GB, alternately) and the rest full-size VAEs
and text encoders (CLIP-L, OpenCLIP-G), the other files a hub holds. Served by Debian's nginx on
127.0.0.1, which waits ``--rtt`` seconds before answering each request (its echo module's
``echo_sleep``, tests/httpkit.py; without that module, the Python delaying proxy of httpkit,
which itself costs CPU on a small machine). The listing names every file and gives every tenth
file a parent.

Measured, each in its own process:

* one at a time: the first ``--baseline`` entries of the same mix, fingerprinted one after the
  other in one process as ``refs pull URL`` does (default options, 8 connections per file);
* each engine (``--engines``): the whole listing on a local cluster of ``--workers`` worker
  processes x ``--files-per-worker`` files at once, at most ``--in-flight`` requests per worker:
  entries per second from the engine being up to the pack written, peak RSS of each worker
  process (VmHWM, polled), start-up time;
* a worker killed (SIGKILL) when a third of the entries are done: the pack must hold every entry
  exactly once;
* the driver killed (SIGKILL, its whole process group) when 40 % are done, then the same
  command with ``--resume``: the pack must equal the uninterrupted run's (same names, same
  fingerprints), and the resumed run must fingerprint only what was not done.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from proctree import cmdline as _cmd, cpu_seconds as _cpu, descendants, status_kb as _status  # noqa: E402

#: the component files between the full-size checkpoints: (family, components) of testkit specs
SMALL_KINDS = (("sd1", ("vae",)), ("sd1", ("clip_l",)), ("sdxl", ("clip_g",)), ("sdxl", ("vae",)))
FULL_KINDS = ("sdxl", "sd1")

BASELINE = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from fpcore.refs import fpref
from fpcore.identify import fingerprint_open
from fpcore.sources import open_source
urls = json.loads(sys.argv[1])
import numpy, scipy.stats  # imports first: start-up is not what is compared
t0 = time.perf_counter()
ok = 0
for u in urls:
    with open_source(u) as src:
        fp, a, _, _ = fingerprint_open(src)
        fpref.encode_reference({{"name": u}}, fp)
        ok += 1
dt = time.perf_counter() - t0
print(json.dumps({{"entries": ok, "seconds": dt, "rate": ok / dt}}))
"""

RUN = r"""
import json, sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {bench!r})
engine_name, listing, pack, workers, fpw, in_flight, resume = sys.argv[1:8]
workers, fpw, in_flight, resume = int(workers), int(fpw), int(in_flight), resume == "1"
from fpcore.indexer import job
t0 = time.perf_counter()
if engine_name == "ray":
    from index_speed import RayEngine
    eng = RayEngine(workers, fpw)
else:
    from fpcore.indexer.engine import DaskEngine
    eng = DaskEngine(None, workers, threads=fpw, dashboard=False)
up = time.perf_counter()
print(json.dumps({{"event": "up", "seconds": up - t0}}), flush=True)
try:
    res = job.run(listing, pack, resume=resume, files_per_worker=fpw, in_flight=in_flight, engine=eng)
finally:
    eng.close()
res.update(startup=up - t0, run_seconds=time.perf_counter() - up)
print(json.dumps(res), flush=True)
"""


class RayEngine:
    """The job's engine interface on Ray, for the comparison: ``workers`` threaded actors (one
    process each, ``threads`` files at once), restarted when lost, their calls retried."""

    name, local = "ray", True

    def __init__(self, workers: int, threads: int):
        import ray
        self.ray = ray
        # its session files, removed by close() (or by run_job when the driver is killed)
        self.tmp = tempfile.mkdtemp(prefix=f"fpcore-ray-{os.getpid()}-")
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
                 configure_logging=False, _temp_dir=self.tmp)

        @ray.remote(max_restarts=-1, max_task_retries=-1, max_concurrency=threads, num_cpus=1)
        class Worker:
            def run(self, fn, *args):
                return fn(*args)

        self.actors = [Worker.remote() for _ in range(workers)]
        self.threads, self.n = threads, 0
        ray.get([a.run.remote(len, "") for a in self.actors])    # up

    def workers(self) -> int:
        return len(self.actors)

    def slots(self) -> int:
        return len(self.actors) * self.threads

    def submit(self, key, fn, *args):
        self.n += 1
        return self.actors[self.n % len(self.actors)].run.remote(fn, *args)

    def wait(self, handles, timeout):
        ready, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:
            more, _ = self.ray.wait([h for h in handles if h not in ready], num_returns=len(handles) - len(ready),
                                    timeout=0)
            ready += more
        out = []
        for r in ready:
            try:
                out.append((r, self.ray.get(r)))
            except Exception as e:
                out.append((r, e))
        return out

    def cancel(self, handles):
        pass

    def close(self):
        import shutil
        self.ray.shutdown()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- files ---------------------------------------------------------------------------------------------
def make_files(root: Path, n: int, n_full: int) -> list[str]:
    import numpy as np
    import testkit
    root.mkdir(parents=True, exist_ok=True)
    full_at = {int(i * n / max(n_full, 1)) for i in range(n_full)}
    names = []
    for i in range(n):
        if i in full_at:
            fam = FULL_KINDS[len([j for j in full_at if j < i]) % len(FULL_KINDS)]
            spec, kind = testkit.checkpoint_spec(fam, "full"), f"{fam}-full"
        else:
            fam, comps = SMALL_KINDS[i % len(SMALL_KINDS)]
            spec, kind = testkit.checkpoint_spec(fam, "full", comps), f"{fam}-{comps[0]}"
        name = f"m{i:04d}-{kind}"
        p = root / f"{name}.safetensors"
        if not p.exists():
            tmp = p.with_suffix(".tmp")
            testkit.write_spec_file(tmp, spec, "F16", fill="sparse")
            with open(tmp, "r+b") as f:
                head = 8 + int.from_bytes(f.read(8), "little")
                f.seek(head)
                vals = np.random.default_rng(i).standard_normal(1 << 19).astype(np.float16) * np.float16(0.02)
                f.write(vals.tobytes())
            os.replace(tmp, p)
        names.append(name)
    return names


def write_listing(path: Path, base_url: str, names: list[str]) -> None:
    lines = ["# bench/index_speed.py: every tenth file is the parent of the nine after it"]
    for i, n in enumerate(names):
        parent = names[i - i % 10] if i % 10 else ""
        lines.append(f"{base_url}/{n}.safetensors\t{n}" + (f"\t{parent}" if parent else ""))
    path.write_text("\n".join(lines) + "\n")


# -- processes -----------------------------------------------------------------------------------------
def is_worker(cmd: str, engine: str) -> bool:
    if engine == "ray":
        return cmd.startswith("ray::Worker")
    return "spawn_main" in cmd and "resource_tracker" not in cmd


class Sampler(threading.Thread):
    """Peak RSS (VmHWM, MB) of every descendant process of ``pid``, polled."""

    def __init__(self, pid: int, engine: str):
        super().__init__(daemon=True)
        self.pid, self.engine = pid, engine
        self.peak: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.cmds: dict[int, str] = {}
        self.stop = threading.Event()

    def run(self):
        procs, tick = [self.pid], 0
        while not self.stop.is_set():
            if tick % 4 == 0:   # walking /proc for new processes costs more than reading a few
                procs = [self.pid, *descendants(self.pid)]
            tick += 1
            for p in procs:
                hwm = _status(p, "VmHWM")
                if hwm is not None:
                    self.peak[p] = max(self.peak.get(p, 0.0), hwm / 1024)
                    if not is_worker(self.cmds.get(p, ""), self.engine):   # a process renames itself once up
                        self.cmds[p] = _cmd(p)
                c = _cpu(p)
                if c is not None:
                    self.cpu[p] = max(self.cpu.get(p, 0.0), c)
            self.stop.wait(0.25)

    def workers(self) -> list[float]:
        return sorted((v for p, v in self.peak.items() if p != self.pid and is_worker(self.cmds.get(p, ""), self.engine)),
                      reverse=True)

    def total_others(self) -> float:
        return sum(v for p, v in self.peak.items() if p != self.pid and not is_worker(self.cmds.get(p, ""), self.engine))


def journal_count(pack: Path) -> int:
    from fpcore.indexer.journal import paths_for
    j = paths_for(pack)[0]
    if not j.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{j}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_job(engine: str, listing: Path, pack: Path, args, resume=False, kill_worker_at=None, kill_driver_at=None):
    """Run the job in a child process (its own process group); returns its summary with peak RSS."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = RUN.format(root=str(ROOT), bench=str(ROOT / "bench"))
    proc = subprocess.Popen([sys.executable, "-c", code, engine, str(listing), str(pack), str(args.workers),
                             str(args.files_per_worker), str(args.in_flight), "1" if resume else "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    sampler = Sampler(proc.pid, engine)
    sampler.start()
    import resource
    own0 = resource.getrusage(resource.RUSAGE_SELF)
    killed = None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 1800
    while proc.poll() is None and time.monotonic() < deadline:
        n = journal_count(pack)
        if kill_worker_at is not None and killed is None and n >= kill_worker_at:
            ws = [p for p in descendants(proc.pid) if is_worker(_cmd(p), engine)]
            if ws:
                os.kill(ws[0], signal.SIGKILL)
                killed = {"worker": ws[0], "at": n}
        if kill_driver_at is not None and killed is None and n >= kill_driver_at:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = {"driver": proc.pid, "at": n}
        time.sleep(0.05)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(5)
    sampler.stop.set()
    sampler.join()
    for p in descendants(proc.pid):   # nothing of the job is left behind (a killed driver's workers)
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    import glob
    import shutil
    for d in glob.glob(os.path.join(tempfile.gettempdir(), f"fpcore-ray-{proc.pid}-*")):
        shutil.rmtree(d, ignore_errors=True)
    res = next((json.loads(x) for x in reversed(lines) if x.startswith("{") and '"pack"' in x), None) or {}
    if not res and kill_driver_at is None:
        print(proc.stderr.read()[-3000:], file=sys.stderr)
    own1 = resource.getrusage(resource.RUSAGE_SELF)
    wcpu = sum(v for p, v in sampler.cpu.items() if p != proc.pid and is_worker(sampler.cmds.get(p, ""), engine))
    res.update(worker_rss_mb=sampler.workers(), all_rss_mb=round(sum(sampler.peak.values())), killed=killed, exit=proc.returncode, at_end=journal_count(pack),
               cpu_s={"workers": round(wcpu, 1), "driver and the rest": round(sum(sampler.cpu.values()) - wcpu, 1),
                      "bench process (proxy, if any)": round(own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime, 1)})
    return res


def pack_contents(pack: Path) -> dict[str, bytes]:
    """name -> fingerprint bytes of every reference in the pack (read_pack verifies the pack)."""
    from fpcore.refs.packs import read_pack
    from fpcore.refs.fpref import read_fingerprint
    _, items = read_pack(pack)
    out = {}
    for e, blob in items:
        assert e["name"] not in out, f"{e['name']} twice in the pack"
        out[e["name"]] = read_fingerprint(blob).raw
    return out


def fresh(pack: Path) -> None:
    from fpcore.indexer.journal import paths_for
    for p in (pack, *paths_for(pack)):
        for q in (p, Path(str(p) + "-wal"), Path(str(p) + "-shm")):
            if q.exists():
                q.unlink()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--full", type=int, default=4, help="full-size checkpoints among the files")
    ap.add_argument("--rtt", type=float, default=0.05, help="seconds added to every request")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--files-per-worker", type=int, default=8)
    ap.add_argument("--in-flight", type=int, default=32)
    ap.add_argument("--baseline", type=int, default=40, help="entries fingerprinted one at a time")
    ap.add_argument("--engines", default="dask,ray")
    ap.add_argument("--throughput-only", action="store_true", help="skip the killed-worker and resume runs")
    ap.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "fpcore-index-bench"))
    args = ap.parse_args(argv)
    import httpkit
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    names = make_files(out / "root", args.files, args.full)
    on_disk = sum(f.stat().st_blocks for f in (out / "root").iterdir()) * 512
    print(f"{len(names)} files ({args.full} full-size checkpoints) in {time.perf_counter() - t:.1f} s "
          f"({on_disk / 1e6:.0f} MB on disk: sparse)", flush=True)
    engines = [e for e in args.engines.split(",") if e]
    rows = {}
    import contextlib
    with contextlib.ExitStack() as stack:
        ng = stack.enter_context(httpkit.Nginx(out / "root", out / "nginx", delay=args.rtt))
        if ng.slow_url:
            base_url, latency = ng.slow_url, "nginx echo_sleep"
        else:
            px = stack.enter_context(httpkit.FaultProxy(("127.0.0.1", ng.port), delay=args.rtt))
            base_url, latency = f"{px.url}/files", "a Python delaying proxy"
        print(f"latency: {args.rtt * 1000:.0f} ms before every answer ({latency})", flush=True)
        listing = out / "listing.txt"
        write_listing(listing, base_url, names)
        step = max(1, len(names) // max(args.baseline, 1))
        urls = [f"{base_url}/{n}.safetensors" for n in names[::step]][:args.baseline]
        r = subprocess.run([sys.executable, "-c", BASELINE.format(root=str(ROOT)), json.dumps(urls)],
                           capture_output=True, text=True, timeout=1800)
        base = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
        if base is None:
            print(r.stderr[-2000:], file=sys.stderr)
            return 1
        print(f"one at a time: {base['entries']} entries in {base['seconds']:.1f} s = {base['rate']:.2f} entries/s",
              flush=True)
        ref = None
        for eng in engines:
            row = rows[eng] = {}
            pack = out / f"{eng}.fprefs"
            fresh(pack)
            row["run"] = res = run_job(eng, listing, pack, args)
            if not res.get("pack"):
                print(f"{eng}: the run failed (exit {res['exit']})", flush=True)
                continue
            contents = pack_contents(pack)
            row["rate"] = res["entries"] / res["run_seconds"]
            row["complete"] = sorted(contents) == sorted(names) and res["failed"] == 0
            ref = ref or contents
            row["same_as_first_engine"] = contents == ref
            print(f"{eng}: {res['entries']} entries in {res['run_seconds']:.1f} s = {row['rate']:.2f} entries/s "
                  f"({row['rate'] / base['rate']:.1f}x one at a time), up in {res['startup']:.1f} s, "
                  f"{res['failed']} failed, peak RSS per worker {', '.join(f'{v:.0f}' for v in res['worker_rss_mb'])} MB; "
                  f"CPU seconds {res['cpu_s']}",
                  flush=True)
            if args.throughput_only:
                continue
            # a worker killed a third of the way
            pack_k = out / f"{eng}-killed.fprefs"
            fresh(pack_k)
            rk = row["kill"] = run_job(eng, listing, pack_k, args, kill_worker_at=len(names) // 3)
            if rk.get("pack"):
                ck = pack_contents(pack_k)
                row["kill_ok"] = sorted(ck) == sorted(names) and ck == contents
                print(f"{eng}: worker killed at {rk['killed']}: {len(ck)} references, every entry once: "
                      f"{row['kill_ok']}, failed {rk['failed']}", flush=True)
            else:
                row["kill_ok"] = False
                print(f"{eng}: worker killed at {rk['killed']}: the run did not finish (exit {rk['exit']})", flush=True)
            # the driver killed at 40 %, then --resume
            pack_r = out / f"{eng}-resumed.fprefs"
            fresh(pack_r)
            ri = run_job(eng, listing, pack_r, args, kill_driver_at=int(len(names) * 0.4))
            rr = row["resume"] = run_job(eng, listing, pack_r, args, resume=True)
            if rr.get("pack"):
                cr = pack_contents(pack_r)
                row["resume_ok"] = cr == contents
                print(f"{eng}: driver killed at {ri['killed']} ({ri['at_end']} results kept); resumed: skipped "
                      f"{rr['skipped']}, fingerprinted {rr['entries'] - rr['skipped']}; same pack as the "
                      f"uninterrupted run: {row['resume_ok']}", flush=True)
            else:
                row["resume_ok"] = False
    print(f"\n| {args.files} files ({args.full} full-size), {args.rtt * 1000:.0f} ms per request | entries/s | "
          "vs one at a time | start-up | peak RSS per worker | peak RSS, all processes of the job | "
          "worker killed: every entry once | driver killed + --resume: same pack |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| one at a time ({base['entries']} entries, one process) | {base['rate']:.2f} | 1x | — | — | — | — | — |")
    for eng, row in rows.items():
        res = row["run"]
        if "rate" not in row:
            print(f"| {eng} | failed | | | | | | |")
            continue
        yes = lambda k: "not run" if k not in row else "yes" if row[k] else "NO"   # noqa: E731
        print(f"| {eng}, {args.workers} workers x {args.files_per_worker} files, <= {args.in_flight} requests "
              f"in flight per worker | {row['rate']:.1f} | {row['rate'] / base['rate']:.1f}x | {res['startup']:.1f} s | "
              f"{max(res['worker_rss_mb'] or [0]):.0f} MB | {res['all_rss_mb']} MB | {yes('kill_ok')} | {yes('resume_ok')} |")
    (out / "results.json").write_text(json.dumps({"baseline": base, "rows": rows}, indent=1, default=str))
    print(f"\nraw figures: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

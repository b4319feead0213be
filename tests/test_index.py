"""``fpcore index`` (issue 26): a listing of URLs or paths fingerprinted on Dask into a reference pack.

The engine is Dask distributed; most tests run it in-process (a LocalCluster of threads: quick),
one through the command line on worker processes and one with a worker process that dies.
Expected values come from elsewhere: the listing as written here, fingerprints and SHA-256 of
the files computed directly, what nginx was told to publish. Throughput, a killed worker at
scale, resume after a killed driver and memory are measured in bench/index_speed.py.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import testkit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import httpkit  # noqa: E402

from fpcore import cli  # noqa: E402
from fpcore.errors import BadFileError, UsageError  # noqa: E402
from fpcore.indexer import job  # noqa: E402
from fpcore.indexer.journal import paths_for  # noqa: E402
from fpcore.indexer.listing import Entry, parse_listing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NGINX, WHY = httpkit.nginx_binary()
HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="the index extra (dask[distributed]) is not installed")
needs_nginx = pytest.mark.skipif(NGINX is None, reason=WHY)

SECRET = "sk_queryTOKEN_5f3a9c1e77"          # a credential in a listed URL's query
ENV_SECRET = "hf_envTOKEN_0d9e8c7b6a5f"       # HF_TOKEN in the environment


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _fp_raw(path) -> bytes:
    from fpcore.identify import fingerprint_path
    return fingerprint_path(path)[0].raw


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Five small models (distinct weights, an unknown architecture: quick), a truncated one and a
    text file posing as a model."""
    d = tmp_path_factory.mktemp("index-models")
    spec = {f"blocks.{b}.{p}.weight": (64, 64) for b in range(6) for p in ("a", "b")}
    for i in range(5):
        testkit.write_safetensors(d / f"m{i}.safetensors", testkit.random_state_dict(spec, 100 + i), "F16")
    data = (d / "m0.safetensors").read_bytes()
    (d / "cut.safetensors").write_bytes(data[:len(data) // 2])
    (d / "notes.safetensors").write_text("not a model")
    return d


class InProcess:
    """The job's engine: Dask in this process (threads), optionally stopping after ``stop_after``
    results (an interrupt) and counting submissions."""

    def __init__(self, stop_after=None, remote=False):
        from fpcore.indexer.engine import DaskEngine
        self.inner = DaskEngine(None, workers=1, threads=4, dashboard=False, processes=False)
        self.name, self.local, self.address, self.dashboard = "dask", not remote, self.inner.address, None
        self.submitted, self.results, self.stop_after = [], 0, stop_after

    def workers(self):
        return self.inner.workers()

    def slots(self):
        return 1      # one task at a time: an interrupt after N results leaves exactly N done

    def submit(self, key, fn, *args):
        self.submitted.append(args[0]["name"])
        return self.inner.submit(key, fn, *args)

    def wait(self, handles, timeout):
        if self.stop_after is not None and self.results >= self.stop_after:
            raise KeyboardInterrupt      # as Ctrl-C does, while tasks are in flight
        out = self.inner.wait(handles, timeout)
        self.results += len(out)
        return out

    def cancel(self, handles):
        self.inner.cancel(handles)

    def close(self):
        self.inner.close()


def _run(listing, pack, **kw):
    eng = kw.pop("engine", None) or InProcess()
    try:
        return job.run(listing, pack, engine=eng, **kw), eng
    finally:
        eng.close()


def _outcomes(pack) -> list[dict]:
    with open(paths_for(pack)[1], newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _pack(pack) -> dict:
    """name -> (parent, fingerprint bytes) of every reference in the pack (read_pack verifies it)."""
    from fpcore.refs.packs import read_pack
    from fpcore.refs.fpref import read_fingerprint
    _, items = read_pack(pack)
    return {e["name"]: (e["parent"], read_fingerprint(blob).raw) for e, blob in items}


# -- the listing ------------------------------------------------------------------------------------
def test_listing_comments_names_parents(tmp_path):
    (tmp_path / "sub").mkdir()
    lst = tmp_path / "list.txt"
    lst.write_text("\ufeff# a listing\n"
                   "\n"
                   "https://example.org/a/Base%20Model.safetensors\n"
                   "sub/child.safetensors\tChild #2\tBase Model\n"
                   "   # an indented comment\n"
                   "hf://org/repo/dir/grand.sft@v2\tGrand\tChild #2\t# a comment field\r\n"
                   "/abs/other.ckpt\t\t\n", encoding="utf-8")
    got = parse_listing(lst)
    assert [(e.line, e.source, e.name, e.parent) for e in got] == [
        (3, "https://example.org/a/Base%20Model.safetensors", "Base Model", None),
        (4, str(tmp_path / "sub" / "child.safetensors"), "Child #2", "Base Model"),
        (6, "hf://org/repo/dir/grand.sft@v2", "Grand", "Child #2"),
        (7, "/abs/other.ckpt", "other", None),
    ]


@pytest.mark.parametrize("text, line, words", [
    ("a.safetensors\tA\tP\textra\n", 1, "4 tab-separated fields"),
    ("a.safetensors\tA\nb.safetensors\tA\n", 2, "NAME 'A' is already used on line 1"),
    ("x/a.safetensors\tA\nx/a.safetensors\tB\n", 2, "already listed on line 1"),
    ("a.safetensors\tA\tB\nb.safetensors\tB\tA\n", 1, "PARENT chain loops"),
    ("a.safetensors\tA\tA\n", 1, "its own PARENT"),
    ("# only\n\n", None, "no entries"),
    ("hf://org/onlyrepo\n", 1, "hf://OWNER/REPO/PATH"),
    ("https://h/a b.safetensors\tX\n", 1, "has a space"),
    ("\tA\n", 1, "no SOURCE"),
    ("a.safe\x01tensors\n", 1, "control character"),
])
def test_bad_listing_is_one_line_naming_the_line(tmp_path, text, line, words):
    lst = tmp_path / "bad.txt"
    lst.write_text(text, encoding="utf-8")
    with pytest.raises(BadFileError) as e:
        parse_listing(lst)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(lst)) and words in msg
    if line is not None:
        assert f"line {line}:" in msg


def test_listing_not_text_and_missing(tmp_path):
    lst = tmp_path / "bin.txt"
    lst.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadFileError, match="not UTF-8"):
        parse_listing(lst)
    with pytest.raises(BadFileError, match="cannot read"):
        parse_listing(tmp_path / "nope.txt")


def test_entry_key_and_display_hide_the_credential():
    e = Entry(1, f"https://h.example/m.safetensors?token={SECRET}", "m", None)
    assert e.credential and SECRET not in e.shown and SECRET not in e.key
    assert not Entry(1, "https://h.example/m.safetensors?rev=2", "m", None).credential


# -- the job ----------------------------------------------------------------------------------------
@needs_dask
def test_pack_round_trip_through_refs_import(models, zoo_dir, tmp_path, monkeypatch, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{zoo_dir / 'Base.safetensors'}\tBase\n"
                   f"{zoo_dir / 'Child.safetensors'}\tChild\tBase\n"
                   f"{models / 'm1.safetensors'}\n"
                   f"{models / 'cut.safetensors'}\tCut\n"
                   f"{models / 'notes.safetensors'}\tNotes\n"
                   f"{models / 'gone.safetensors'}\tGone\tBase\n")
    pack = tmp_path / "out.fprefs"
    res, _ = _run(lst, pack)
    assert (res["ok"], res["failed"], res["references"]) == (3, 3, 3)
    rows = {r["name"]: r for r in _outcomes(pack)}
    assert list(rows) == ["Base", "Child", "m1", "Cut", "Notes", "Gone"]       # listing order
    for name, path in (("Base", zoo_dir / "Base.safetensors"), ("m1", models / "m1.safetensors")):
        r = rows[name]
        assert (r["status"], r["error"], r["sha256"], r["sha256_from"]) == ("ok", "", _sha(path), "computed")
        assert int(r["bytes"]) > 0 and r["size"] == str(path.stat().st_size)
    assert rows["Base"]["family"] == "sd1" and rows["Child"]["parent"] == "Base"
    for name, file in (("Cut", "cut.safetensors"), ("Notes", "notes.safetensors"), ("Gone", "gone.safetensors")):
        r = rows[name]
        assert r["status"] == "error" and r["sha256"] == "" and file in r["error"] and "\n" not in r["error"]
    # refs import reads it; the imported fingerprints are those of the files
    refs = tmp_path / "refs"
    monkeypatch.setenv("FPCORE_REFS", str(refs))
    assert cli.main(["refs", "import", str(pack)]) == 0
    capsys.readouterr()
    assert cli.main(["refs", "list", "--json"]) == 0
    listed = {r["name"]: r for r in json.loads(capsys.readouterr().out) if r["origin"] != "builtin"}
    assert set(listed) == {"Base", "Child", "m1"} and listed["Child"]["parent"] == "Base"
    assert listed["Base"]["sha256"] == _sha(zoo_dir / "Base.safetensors")
    assert listed["m1"]["source"] == "m1.safetensors"       # a pack never shows the maker's folders
    from fpcore.refs.library import RefDB
    db = RefDB(refs)
    assert db.refs["Child"].fp.raw == _fp_raw(zoo_dir / "Child.safetensors")
    assert db.refs["m1"].fp.raw == _fp_raw(models / "m1.safetensors")
    # the pack's references carry sketches: the catalog of the imported folder has them without
    # reading a fingerprint
    assert set(db.index.names.get("unet", [])) >= {"Base", "Child"}


@needs_dask
def test_resume_skips_done_entries_and_gives_the_same_pack(models, tmp_path):
    names = [f"m{i}" for i in range(5)]
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{models / (n + '.safetensors')}\t{n}" + ("\tm0" if n != "m0" else "") + "\n"
                           for n in names))
    whole, _ = _run(lst, tmp_path / "whole.fprefs")
    pack = tmp_path / "cut.fprefs"
    with pytest.raises(KeyboardInterrupt):
        _run(lst, pack, engine=InProcess(stop_after=2))
    assert not pack.exists()                                   # no pack until every entry has a result
    done = {r["name"] for r in _outcomes_from_journal(pack)}
    assert 2 <= len(done) < len(names)
    with pytest.raises(UsageError, match="--resume"):          # results are not dropped by a forgotten flag
        _run(lst, pack)
    res, eng = _run(lst, pack, resume=True)
    assert sorted(eng.submitted) == sorted(set(names) - done)  # only what was not done
    assert res["skipped"] == len(done) and res["ok"] == 5
    assert _pack(pack) == _pack(tmp_path / "whole.fprefs")
    assert [e["name"] for e in json.loads(_manifest(pack))["references"]] == names     # parents first, listing order


def _outcomes_from_journal(pack):
    import sqlite3
    with sqlite3.connect(paths_for(pack)[0]) as db:
        return [{"name": n} for (n,) in db.execute("SELECT name FROM results WHERE status='ok'")]


def _manifest(pack) -> bytes:
    import zipfile
    with zipfile.ZipFile(pack) as z:
        return z.read("pack.json")


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    if NGINX is None:
        pytest.skip(WHY)
    hf = {"org/repo/main/m2.safetensors": "m2.safetensors"}
    srv = httpkit.Nginx(models, tmp_path_factory.mktemp("index-nginx"), hf=hf).start()
    yield srv
    srv.stop()


@needs_dask
@needs_nginx
def test_urls_published_hash_and_tokens_never_written(served, models, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    lst = tmp_path / "list.txt"
    lst.write_text(f"hf://org/repo/m2.safetensors\tHub\n"
                   f"{served.url}/files/m3.safetensors?token={SECRET}\tSigned\n"
                   f"http://user:{SECRET}@127.0.0.1:{served.port}/files/m4.safetensors\tUserinfo\n"
                   f"{served.url}/files/missing.safetensors?token={SECRET}\tMissing\n")
    pack = tmp_path / "out.fprefs"
    caplog.set_level("DEBUG")
    res, _ = _run(lst, pack)
    rows = {r["name"]: r for r in _outcomes(pack)}
    assert [rows[n]["status"] for n in ("Hub", "Signed", "Userinfo", "Missing")] == ["ok", "ok", "ok", "error"]
    assert (rows["Hub"]["sha256"], rows["Hub"]["sha256_from"]) == (_sha(models / "m2.safetensors"),
                                                                  "hub (X-Linked-ETag)")
    assert "not found" in rows["Missing"]["error"]
    got = _pack(pack)
    assert got["Signed"][1] == _fp_raw(models / "m3.safetensors")
    assert got["Userinfo"][1] == _fp_raw(models / "m4.safetensors")
    # the credential of the URL went to its own server (nginx saw it) and nowhere else
    assert any(SECRET in r["uri"] for r in served.log())
    jpath, cpath = paths_for(pack)
    for f in (pack, cpath, jpath):
        data = f.read_bytes()
        assert SECRET.encode() not in data and ENV_SECRET.encode() not in data, f.name
    assert SECRET not in caplog.text and ENV_SECRET not in caplog.text
    assert "token=***" in rows["Signed"]["source"]


@needs_dask
@needs_nginx
def test_credential_urls_refused_on_a_cluster_given_by_address(served, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{served.url}/files/m3.safetensors?token={SECRET}\tSigned\n"
                   f"{served.url}/files/m4.safetensors\tPlain\n")
    pack = tmp_path / "out.fprefs"
    res, eng = _run(lst, pack, engine=InProcess(remote=True))
    rows = {r["name"]: r for r in _outcomes(pack)}
    assert rows["Plain"]["status"] == "ok" and eng.submitted == ["Plain"]
    assert rows["Signed"]["status"] == "error" and "credential" in rows["Signed"]["error"]
    assert SECRET not in rows["Signed"]["error"]


@needs_dask
def test_a_lost_worker_loses_and_duplicates_no_entry(models, tmp_path, monkeypatch):
    """Worker processes; the first run of m2 kills its worker (os._exit): Dask runs it again on a
    worker that is alive, and the pack holds every entry once."""
    from fpcore.indexer.engine import DaskEngine
    marker = tmp_path / "killed"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))

    def deadly(entry, settings, marker=str(marker)):
        import os
        from fpcore.indexer.task import run_entry
        if entry["name"] == "m2" and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return run_entry(entry, settings)

    class Deadly(DaskEngine):
        def submit(self, key, fn, *args):
            return super().submit(key, deadly, *args)

    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{models / f'm{i}.safetensors'}\tm{i}\n" for i in range(5)))
    pack = tmp_path / "out.fprefs"
    eng = Deadly(None, workers=2, threads=2, dashboard=False)
    try:
        res = job.run(lst, pack, engine=eng)
    finally:
        eng.close()
    assert marker.exists()                                  # a worker did die
    assert res["ok"] == 5 and res["failed"] == 0
    got = _pack(pack)
    assert sorted(got) == [f"m{i}" for i in range(5)]       # read_pack refuses a name twice
    assert got["m2"][1] == _fp_raw(models / "m2.safetensors")


# -- the command line -------------------------------------------------------------------------------
def _cli(args, env=None, code=None):
    code = code or "import sys; from fpcore.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@needs_dask
def test_command_line_runs_on_worker_processes(models, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"# two models\n{models / 'm0.safetensors'}\tA\n{models / 'cut.safetensors'}\tB\tA\n")
    pack = tmp_path / "p.fprefs"
    r = _cli(["index", str(lst), "--out", str(pack), "--workers", "1", "--files-per-worker", "2"],
             env={"HF_TOKEN": ENV_SECRET})
    assert r.returncode == 3, r.stderr                     # one entry failed: exit 3, the pack still written
    assert "wrote 1 reference(s)" in r.stdout and "1 ok, 1 failed" in r.stdout
    progress = [line for line in r.stderr.splitlines() if line.startswith("index: 2/2")]
    assert progress and "1 failed" in progress[-1] and "entries/s" in progress[-1]
    assert ENV_SECRET not in r.stderr + r.stdout
    assert list(_pack(pack)) == ["A"]


def test_missing_engine_names_the_extra(models, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text(f"{models / 'm0.safetensors'}\n")
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = None\n"
            "from fpcore.cli import main; sys.exit(main(sys.argv[1:]))")
    r = _cli(["index", str(lst), "--out", str(tmp_path / "p.fprefs")], code=code)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "model-fingerprint[index]" in lines[0] and "Traceback" not in r.stderr


def test_cli_and_index_help_import_no_engine():
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        from fpcore import cli
        for argv in (["--help"], ["index", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    cli.main(argv)
                except SystemExit:
                    pass
        print(json.dumps(sorted(m for m in ("dask", "distributed", "ray", "pyarrow", "pandas", "fpcore.indexer")
                                if m in sys.modules)))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


# -- requests in flight and rate limits -----------------------------------------------------------------
class CountingGate:
    """A Gate that records how many requests were in flight at once and the holds asked for."""

    def __init__(self, limit):
        import threading
        from fpcore.sources.remote import Gate
        self.gate, self.lock = Gate(limit), threading.Lock()
        self.now = self.most = self.entered = 0
        self.holds = []

    def hold(self, host, seconds):
        self.holds.append((host, seconds))
        self.gate.hold(host, seconds)

    def __call__(self, host):
        outer, slot = self, self.gate(host)

        class Slot:
            def __enter__(self):
                slot.__enter__()
                with outer.lock:
                    outer.now += 1
                    outer.entered += 1
                    outer.most = max(outer.most, outer.now)

            def __exit__(self, *exc):
                with outer.lock:
                    outer.now -= 1
                slot.__exit__(*exc)
        return Slot()


@needs_nginx
def test_requests_in_flight_per_worker_are_bounded_and_retry_after_holds_the_host(served, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from fpcore.indexer import task
    from fpcore.sources.remote import client
    gate = CountingGate(2)
    monkeypatch.setattr(task, "_gate", lambda limit: gate)
    monkeypatch.setattr(client, "BACKOFF", 0.01)
    with httpkit.FaultProxy(("127.0.0.1", served.port), delay=0.02, faults=[
            httpkit.Fault("status", status=429, headers={"Retry-After": "1"}, match="m1", ranged=True)]) as px:
        entries = [{"key": str(i), "name": f"m{i}", "source": f"{px.url}/files/m{i}.safetensors", "shown": f"m{i}"}
                   for i in range(5)]
        with ThreadPoolExecutor(5) as ex:       # five files of one worker at once
            res = list(ex.map(lambda e: task.run_entry(e, {"in_flight": 2, "connections": 4}), entries))
        seen = len(px.requests)
    assert [r["status"] for r in res] == ["ok"] * 5, [r["error"] for r in res]
    assert gate.entered == seen and gate.most <= 2         # every request went through the gate, 2 at most
    assert gate.holds == [("127.0.0.1", 1.0)]               # the 429's Retry-After held the host


@needs_dask
def test_references_beyond_one_pack_go_to_several_parents_first(models, tmp_path, monkeypatch):
    monkeypatch.setattr(job, "PART_REFS", 2)           # as if a pack held two references
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{models / f'm{i}.safetensors'}\tm{i}" + ("\tm0" if i else "") + "\n" for i in range(5)))
    pack = tmp_path / "out.fprefs"
    res, _ = _run(lst, pack)
    assert res["packs"] == [str(pack), str(tmp_path / "out.part2.fprefs"), str(tmp_path / "out.part3.fprefs")]
    parts = [list(_pack(p)) for p in res["packs"]]
    assert parts == [["m0", "m1"], ["m2", "m3"], ["m4"]] and res["references"] == 5

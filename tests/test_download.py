"""download(): resumable, checksummed, atomic fetches over a loopback HTTP server and file://; extract();
mirrors and content checks against loopback imitations of the real hosts (fake_hosts.py)."""
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.fake_hosts import FakeHosts
from helpers.http_server import Fault, serve

from mdetr_phrasecut import cli
from mdetr_phrasecut.config import load_config, validate_config
from mdetr_phrasecut.infra.download import Source, download, extract
from mdetr_phrasecut.errors import InputError
from helpers.archives import tar_gz_bytes, zip_bytes

DATA = os.urandom(50_000)
SHA = hashlib.sha256(DATA).hexdigest()


def fetch(url, dest, sha256=SHA, **kw):
    kw = {"retries": 3, "chunk_size": 4096, "timeout": 10, "progress": False, "retry_wait": 0, **kw}
    return download(url, dest, sha256, **kw)


def test_fresh_download(tmp_path):
    with serve({"/f.bin": DATA}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "sub" / "f.bin")
    assert out == tmp_path / "sub" / "f.bin" and out.read_bytes() == DATA
    assert server.requests == [("/f.bin", None, 200)]
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.bin"]  # no part / temp file left


def test_resume_after_truncation_uses_range(tmp_path):
    with serve({"/f.bin": DATA}, {"/f.bin": Fault(truncate_after=12_345, times=2)}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA
    assert server.requests == [("/f.bin", None, 200), ("/f.bin", "bytes=12345-", 206),
                               ("/f.bin", "bytes=24690-", 206)]


def test_interrupted_earlier_run_resumes_from_part_file(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA[:7000])
    with serve({"/f.bin": DATA}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA
    assert server.requests == [("/f.bin", "bytes=7000-", 206)]
    assert not (tmp_path / "f.bin.part").exists()


def test_truncation_exhausting_retries_fails_and_keeps_part_for_later(tmp_path):
    with serve({"/f.bin": DATA}, {"/f.bin": Fault(truncate_after=1000)}) as server:
        with pytest.raises(InputError, match="truncated"):
            fetch(server.url("/f.bin"), tmp_path / "f.bin", retries=2)
        assert not (tmp_path / "f.bin").exists()
        assert (tmp_path / "f.bin.part").read_bytes() == DATA[:2000]
        server.faults.clear()
        assert fetch(server.url("/f.bin"), tmp_path / "f.bin").read_bytes() == DATA
    assert server.requests[-1] == ("/f.bin", "bytes=2000-", 206)


def test_corrupted_first_response_is_detected_and_refetched(tmp_path, caplog):
    with serve({"/f.bin": DATA}, {"/f.bin": Fault(corrupt=True, times=1)}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA
    assert server.requests == [("/f.bin", None, 200), ("/f.bin", None, 200)]  # restarted from 0, not resumed
    bad = hashlib.sha256(bytes(b ^ 0xFF for b in DATA)).hexdigest()
    assert any(bad in r.getMessage() and SHA in r.getMessage() for r in caplog.records)


def test_existing_dest_with_right_checksum_is_kept(tmp_path):
    (tmp_path / "f.bin").write_bytes(DATA)
    with serve({"/f.bin": DATA}) as server:
        fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert server.requests == []


def test_existing_dest_with_wrong_checksum_is_refetched(tmp_path, caplog):
    stale = b"stale contents"
    (tmp_path / "f.bin").write_bytes(stale)
    with serve({"/f.bin": DATA}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA and len(server.requests) == 1
    line = next(r.getMessage() for r in caplog.records if "existing" in r.getMessage())
    assert "f.bin" in line and SHA in line and hashlib.sha256(stale).hexdigest() in line


def test_server_ignoring_range_still_gives_correct_file(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA[:7000])
    with serve({"/f.bin": DATA}, {"/f.bin": Fault(ignore_range=True)}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA
    assert server.requests == [("/f.bin", "bytes=7000-", 200)]


def test_complete_part_file_answered_416_is_verified(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(DATA)
    with serve({"/f.bin": DATA}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA
    assert server.requests == [("/f.bin", f"bytes={len(DATA)}-", 416)]


def test_bogus_part_file_answered_416_restarts(tmp_path):
    (tmp_path / "f.bin.part").write_bytes(os.urandom(len(DATA) + 10))
    with serve({"/f.bin": DATA}) as server:
        out = fetch(server.url("/f.bin"), tmp_path / "f.bin")
    assert out.read_bytes() == DATA
    assert server.requests == [("/f.bin", f"bytes={len(DATA) + 10}-", 416), ("/f.bin", None, 200)]


@pytest.mark.parametrize("status,attempts", [(404, 1), (500, 3)])  # a client error will not change: no retry
def test_http_error_raises_after_retries_and_leaves_no_file(tmp_path, status, attempts):
    with serve({"/f.bin": DATA}, {"/f.bin": Fault(status=status)}) as server:
        url = server.url("/f.bin")
        with pytest.raises(InputError) as err:
            fetch(url, tmp_path / "f.bin")
    message = str(err.value)
    assert "\n" not in message and url in message and f"got HTTP {status}" in message
    assert ("3 attempts" in message) == (attempts == 3) and len(server.requests) == attempts
    assert list(tmp_path.iterdir()) == []


def test_wrong_expected_checksum_names_both(tmp_path):
    wrong = "0" * 64
    with serve({"/f.bin": DATA}) as server:
        url = server.url("/f.bin")
        with pytest.raises(InputError) as err:
            fetch(url, tmp_path / "f.bin", sha256=wrong, retries=2)
    message = str(err.value)
    assert url in message and str(tmp_path / "f.bin") in message and wrong in message and SHA in message
    assert len(server.requests) == 2 and list(tmp_path.iterdir()) == []


def test_file_url_and_plain_path(tmp_path):
    src = tmp_path / "source dir" / "ckpt.bin"
    src.parent.mkdir()
    src.write_bytes(DATA)
    assert fetch(src.as_uri(), tmp_path / "a.bin").read_bytes() == DATA
    assert fetch(str(src), tmp_path / "b.bin").read_bytes() == DATA
    (tmp_path / "c.bin.part").write_bytes(DATA[:100] + b"x" * 50)  # a corrupt part is caught and replaced
    assert fetch(src.as_uri(), tmp_path / "c.bin").read_bytes() == DATA
    with pytest.raises(InputError, match="FileNotFoundError"):
        fetch(str(tmp_path / "missing.bin"), tmp_path / "d.bin", retries=1)


def test_unverified_needs_explicit_consent(tmp_path, caplog):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    with pytest.raises(InputError, match="sha256"):
        fetch(str(src), tmp_path / "out.bin", sha256=None)
    assert not (tmp_path / "out.bin").exists()
    with caplog.at_level(logging.WARNING):
        fetch(str(src), tmp_path / "out.bin", sha256=None, allow_unverified=True)
    assert (tmp_path / "out.bin").read_bytes() == DATA
    assert any("UNVERIFIED" in r.getMessage() and SHA in r.getMessage() for r in caplog.records)


def test_cli_prints_verified_checksum_and_requires_one(tmp_path, capsys):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    assert cli.main(["download", "--url", src.as_uri(), "--sha256", SHA.upper(), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip() == SHA
    assert cli.main(["download", "--url", src.as_uri(), "--out", str(tmp_path / "p")]) == 2
    assert "--sha256 is required" in capsys.readouterr().err and not (tmp_path / "p").exists()
    archive = tmp_path / "a.zip"
    archive.write_bytes(zip_bytes({"x/y.txt": b"y"}))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    args = ["download", "--url", str(archive), "--sha256", digest, "--out", str(tmp_path / "dl.zip")]
    assert cli.main(args + ["--extract-to", str(tmp_path / "ex")]) == 0
    assert (tmp_path / "ex" / "x" / "y.txt").read_bytes() == b"y"





@pytest.mark.parametrize("pack,name", [(zip_bytes, "a.zip"), (tar_gz_bytes, "a.tar.gz")])
def test_extract(tmp_path, pack, name):
    members = {"ann/finetune_phrasecut_val.json": b'{"images": []}', "ann/readme.txt": b"hello"}
    (tmp_path / name).write_bytes(pack(members))
    out = extract(tmp_path / name, tmp_path / "out")
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == members
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out"])  # no temp folder left
    with pytest.raises(InputError, match="already exists"):
        extract(tmp_path / name, tmp_path / "out")


@pytest.mark.parametrize("pack,name", [(zip_bytes, "a.zip"), (tar_gz_bytes, "a.tar.gz")])
@pytest.mark.parametrize("evil", ["../escaped.txt", "ok/../../escaped.txt"])
def test_extract_refuses_path_traversal(tmp_path, pack, name, evil):
    (tmp_path / "in").mkdir()
    archive = tmp_path / "in" / name
    archive.write_bytes(pack({"good.txt": b"fine", evil: b"gotcha"}))
    with pytest.raises(InputError, match="escaped.txt"):
        extract(archive, tmp_path / "in" / "out")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == [name]  # no out, no temp folder
    assert not (tmp_path / "escaped.txt").exists()


def test_extract_rejects_non_archive(tmp_path):
    (tmp_path / "x.bin").write_bytes(DATA)
    with pytest.raises(InputError, match="not a zip or tar"):
        extract(tmp_path / "x.bin", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- mirrors and content checks, against the fake hosts -------------------------------------------------------

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
REFER = json.dumps([{"task_id": f"{i}__0", "phrase": "the cat on the mat"} for i in range(600)]).encode()
SPLIT = json.dumps([{"image_id": 1, "split": "val", "width": 10, "height": 10}]).encode()
HF_REPO = "datasets/junbeomHong/phrasecut"


def sha(data):
    return hashlib.sha256(data).hexdigest()


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def refused_url():
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/gone.json"


def cli_download(*args, env=None):
    return subprocess.Popen([str(BIN / "mdetr-phrasecut"), "download", *map(str, args)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_big_drive_file_through_the_scan_page_resumes_with_range(tmp_path):
    assert len(REFER) > 4096
    with FakeHosts(drive_scan_limit=4096) as hosts:
        url = hosts.drive.add("BIG", REFER, name="refer_train.json", fault=Fault(truncate_after=10_000, times=1))
        out = fetch(url, tmp_path / "refer_train.json", sha256=sha(REFER))
    assert out.read_bytes() == REFER and sorted(os.listdir(tmp_path)) == ["refer_train.json"]
    assert [(m, p, s) for m, p, _, s in hosts.drive.requests] == [("GET", "/uc?id=BIG", 200)] * 2  # the page, twice
    first, second = hosts.drive.usercontent.requests
    assert "confirm=t" in first[1] and "uuid=" in first[1] and first[2:] == (None, 200)
    assert second[1] == first[1] and second[2:] == ("bytes=10000-", 206)


def test_small_drive_file_through_the_303(tmp_path):
    with FakeHosts(drive_scan_limit=4096) as hosts:
        url = hosts.drive.add("SMALL", SPLIT)
        out = fetch(url, tmp_path / "image_data_split.json", sha256=sha(SPLIT))
    assert out.read_bytes() == SPLIT
    assert hosts.drive.requests == [("GET", "/uc?id=SMALL", None, 303)]
    assert hosts.drive.usercontent.requests == [("GET", "/download?id=SMALL&export=download", None, 200)]


@pytest.mark.parametrize("quota", [False, True], ids=["dead_id", "quota_page"])
def test_failing_drive_source_moves_on_to_the_next_mirror(tmp_path, caplog, quota):
    with FakeHosts(drive_scan_limit=4096) as hosts:
        first = hosts.drive.add("FIRST", b'{"stale": 1}', quota=True) if quota else f"{hosts.drive.base}/uc?id=DEAD"
        mirror = hosts.drive.add("MIRROR", REFER)
        out = fetch(first, tmp_path / "refer_val.json", sha256=None, allow_unverified=True, mirrors=[mirror])
    assert out.read_bytes() == REFER and sorted(os.listdir(tmp_path)) == ["refer_val.json"]
    said = "got an HTML page: Google Drive quota exceeded" if quota else "got HTTP 404"
    lines = [w for w in warnings(caplog) if first in w]
    assert len(lines) == 1 and said in lines[0]  # one line, no retries of a source that will not change
    assert any("UNVERIFIED" in w and sha(REFER) in w for w in warnings(caplog))


@pytest.mark.parametrize("name", ["images.zip", "refer_val.json", "model.pth", "annotations.tar.gz"])
def test_html_page_or_wrong_bytes_where_a_file_is_expected_is_refused_and_not_kept(tmp_path, caplog, name):
    page = b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head><body>no</body></html>"
    with FakeHosts() as hosts:
        as_page = hosts.stanford.add("/data/page", page)  # served as application/zip: the bytes tell
        as_noise = hosts.stanford.add("/data/noise", b"Not Found: " + DATA[:500])
        with pytest.raises(InputError) as err:
            fetch(as_page, tmp_path / name, sha256=None, allow_unverified=True, mirrors=[as_noise])
    message = str(err.value)
    assert "\n" not in message and as_page in message and "got an HTML page: Access denied" in message
    assert as_noise in message and f"not a {name.split('.')[1].replace('gz', 'tar')} file" in message
    assert os.listdir(tmp_path) == []
    assert [len([w for w in warnings(caplog) if url in w]) for url in (as_page, as_noise)] == [1, 1]


def test_hf_mirror_through_huggingface_hub_honours_hf_endpoint(tmp_path, monkeypatch):
    with FakeHosts() as hosts:
        dead = hosts.localize("https://drive.google.com/uc?id=GONE")
        hf_url = hosts.hf.add(HF_REPO, "refer_val.json", REFER)
        job = cli_download("--url", dead, "--mirror", hf_url, "--allow-unverified",
                           "--out", tmp_path / "refer_val.json", env=hosts.env())
        stdout, stderr = job.communicate(timeout=60)
        commit = hosts.hf.commits[HF_REPO]
        pinned = f"hf://{HF_REPO}@{commit}/refer_val.json"  # a revision, as huggingface_hub takes it
        monkeypatch.setenv("HF_ENDPOINT", hosts.hf.base)  # read when called, also in this process
        fetch(pinned, tmp_path / "pinned.json", sha256=sha(REFER))
    assert job.returncode == 0, stderr
    assert (tmp_path / "refer_val.json").read_bytes() == REFER and stdout.strip() == sha(REFER)
    assert sorted(os.listdir(tmp_path)) == ["pinned.json", "refer_val.json"]  # no staging folder left
    resolve = f"/{HF_REPO}/resolve/main/refer_val.json"
    assert [r[:2] + r[3:] for r in hosts.hf.requests if "/resolve/" in r[1]] == [
        ("HEAD", resolve, 200), ("GET", resolve, 200),
        ("HEAD", resolve.replace("main", commit), 200), ("GET", resolve.replace("main", commit), 200)]


def test_text_encoder_snapshot_at_a_pinned_revision_loads_offline(tmp_path):
    """A model repository (the tiny encoder in roberta-base's file layout, plus weights in a format transformers
    does not need) fetched at its pinned revision into a folder the encoder then loads from."""
    from mdetr_phrasecut.data.tiny_text_encoder import default_path
    from mdetr_phrasecut.model.text_encoder import load_text_encoder
    from mdetr_phrasecut.infra.provenance import digest

    repo, commit = "FacebookAI/roberta-base", "e2da8e2f811d1448a5b465c236feacd80ffbac7b"
    files = {p.name: p.read_bytes() for p in default_path().iterdir()}
    with FakeHosts() as hosts:
        for name, data in {**files, "tf_model.h5": b"not fetched"}.items():
            hosts.hf.add(repo, name, data, commit=commit)
        out = tmp_path / "roberta-base"
        job = cli_download("--url", f"hf://{repo}@{commit}", "--kind", "snapshot", "--allow-unverified",
                           "--out", out, env=hosts.env())
        stdout, stderr = job.communicate(timeout=120)
        assert job.returncode == 0, stderr
        wrong = cli_download("--url", f"hf://{repo}@{'0' * 40}", "--kind", "snapshot", "--allow-unverified",
                             "--out", tmp_path / "other", env=hosts.env())
        _, wrong_err = wrong.communicate(timeout=120)
    assert sorted(os.listdir(out)) == sorted(files) and stdout.strip() == digest(out, deep=True)
    assert sorted(os.listdir(tmp_path)) == ["roberta-base"]  # no staging folder left, nothing for the bad revision
    assert wrong.returncode == 2 and wrong_err.strip().splitlines()[-1].startswith(f"error: hf://{repo}@000")
    assert load_text_encoder(str(out))[1].config.hidden_size == 64  # a folder: no Hub asked


def test_a_hub_name_with_the_hub_offline_is_one_line_naming_the_downloads_entry(monkeypatch):
    from huggingface_hub import constants

    from mdetr_phrasecut.model.text_encoder import load_text_encoder

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets when imported
    with pytest.raises(InputError) as err:
        load_text_encoder("roberta-base")
    assert "\n" not in str(err.value) and "add a `downloads` entry named 'roberta-base'" in str(err.value)


def test_archive_member_mirror_fetches_the_archive_once_for_two_jobs_at_once(tmp_path):
    members = {"VGPhraseCut_v0/refer_val.json": REFER, "VGPhraseCut_v0/refer_test.json": SPLIT}
    archive = zip_bytes(members)
    with FakeHosts(drive_scan_limit=4096) as hosts:  # the zip is above the scan limit: the confirm form
        zip_url = hosts.drive.add("ZIP", archive, fault=Fault(delay=0.5))  # a slow transfer: the jobs overlap
        jobs = [cli_download("--url", f"{hosts.drive.base}/uc?id=DEAD{i}", "--mirror-member", zip_url, member,
                             "--archive-dir", tmp_path / "archives", "--allow-unverified",
                             "--out", tmp_path / Path(member).name)
                for i, member in enumerate(members)]
        results = [job.communicate(timeout=60) + (job.returncode,) for job in jobs]
    assert all(rc == 0 for _, _, rc in results), results
    for member, data in members.items():
        assert (tmp_path / Path(member).name).read_bytes() == data
    archive_answers = [r for r in hosts.drive.usercontent.requests if r[3] in (200, 206)]
    assert len(archive_answers) == 1  # fetched once; the other job waited for it
    cached = [p for p in (tmp_path / "archives").iterdir() if not p.name.endswith(".lock")]
    assert len(cached) == 1 and cached[0].read_bytes() == archive
    with pytest.raises(InputError, match="no member VGPhraseCut_v0/refer_miniv.json"):
        fetch(str(tmp_path / "nothing"), tmp_path / "refer_miniv.json", sha256=None, allow_unverified=True,
              mirrors=[Source(zip_url, "VGPhraseCut_v0/refer_miniv.json")], archive_dir=tmp_path / "archives")


def test_zenodo_record_url_through_its_301(tmp_path):
    tarball = tar_gz_bytes({"mdetr_annotations/finetune_phrasecut_val.json": b'{"images": []}'})
    with FakeHosts() as hosts:
        url = hosts.localize("https://zenodo.org/record/5519755/files/mdetr_annotations.tar.gz")
        assert url == hosts.zenodo.add(record=5519755, name="mdetr_annotations.tar.gz", data=tarball)
        out = fetch(url, tmp_path / "mdetr_annotations.tar.gz", sha256=sha(tarball))
    assert out.read_bytes() == tarball
    assert hosts.zenodo.requests == [
        ("GET", "/record/5519755/files/mdetr_annotations.tar.gz", None, 301),
        ("GET", "/records/5519755/files/mdetr_annotations.tar.gz?download=1", None, 200)]


def test_existing_file_survives_a_mistyped_sha256_while_every_source_is_down(tmp_path):
    good = zip_bytes({"data.pkl": DATA})  # a torch.save-style zip
    dest = tmp_path / "checkpoint.pth"
    dest.write_bytes(good)
    with serve({}) as server:
        missing = server.url("/checkpoint.pth")
        with pytest.raises(InputError) as err:
            fetch(missing, dest, sha256="0" * 64, mirrors=[refused_url()])
    assert dest.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["checkpoint.pth"]
    assert "\n" not in str(err.value) and missing in str(err.value) and "got HTTP 404" in str(err.value)


def test_existing_unverified_page_is_refetched_not_kept(tmp_path, caplog):
    dest = tmp_path / "refer_train.json"
    with FakeHosts(drive_scan_limit=4096) as hosts:
        url = hosts.drive.add("BIG", REFER)
        dest.write_bytes(hosts.drive.scan_page("BIG").encode())  # what a fooled download once saved
        fetch(url, dest, sha256=None, allow_unverified=True)
    assert dest.read_bytes() == REFER and os.listdir(tmp_path) == ["refer_train.json"]  # the page is gone now
    said = "existing file set aside as refer_train.json.rejected: got an HTML page: Google Drive virus-scan warning"
    assert any(said in w for w in warnings(caplog))


def test_an_existing_file_of_the_wrong_kind_is_set_aside_until_a_verified_one_replaces_it(tmp_path):
    """A `.pth` that is not a checkpoint is not used, nor deleted while every source is down: it waits as
    `.rejected`, named in the error line, and goes only once the verified file is in place."""
    dest, rejected = tmp_path / "checkpoint.pth", tmp_path / "checkpoint.pth.rejected"
    odd, good = b"not a checkpoint, but someone's bytes", zip_bytes({"data.pkl": DATA})
    dest.write_bytes(odd)
    with pytest.raises(InputError) as err:
        fetch(refused_url(), dest, sha256=sha(good))
    assert rejected.read_bytes() == odd and sorted(os.listdir(tmp_path)) == ["checkpoint.pth.rejected"]
    assert "\n" not in str(err.value) and f"kept as {rejected}" in str(err.value)
    with serve({"/checkpoint.pth": good}) as server:
        fetch(server.url("/checkpoint.pth"), dest, sha256=sha(good))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pth"] and dest.read_bytes() == good


def test_out_that_is_a_folder_or_under_a_file_is_one_line(tmp_path, capsys):
    src = tmp_path / "src.json"
    src.write_bytes(SPLIT)
    (tmp_path / "a_file").write_bytes(b"x")
    for out in (tmp_path, tmp_path / "a_file" / "x.json"):
        assert cli.main(["download", "--url", str(src), "--allow-unverified", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and str(out) in err and "Traceback" not in err
    assert (tmp_path / "a_file").read_bytes() == b"x"


def test_unverified_download_shows_its_sha256_on_the_snakemake_console(tmp_path):
    for name in ("Snakefile", "workflow"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, tmp_path / name)
    (tmp_path / "config").mkdir()
    (tmp_path / "split.json").write_bytes(SPLIT)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["downloads"]["extra"] = {"url": (tmp_path / "split.json").as_uri(), "sha256": None}
    (tmp_path / "config" / "extra.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    run = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--configfile=config/extra.yaml",
                          "results/downloads/extra/split.json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    console = run.stdout + run.stderr
    assert any("UNVERIFIED" in line and sha(SPLIT) in line for line in console.splitlines()), console[-3000:]
    assert sha(SPLIT) in (tmp_path / "results" / "logs" / "download_extra.log").read_text()
    assert (tmp_path / "results" / "downloads" / "extra" / "split.json").read_bytes() == SPLIT


def test_published_downloads_validate_and_bad_mirrors_name_the_key(repo_dir):
    published = load_config(repo_dir / "config" / "phrasecut.yaml")
    refer = published["downloads"]["phrasecut_refer_train"]
    assert refer["mirrors"] == ["hf://datasets/junbeomHong/phrasecut/refer_train.json",
                                {"url": "https://drive.google.com/uc?id=1SGVzPWkNaBOSbrlGGgsNTG4uGonQhE2U",
                                 "member": "VGPhraseCut_v0/refer_train.json"}]
    assert published["downloads"]["mdetr_annotations"]["url"].startswith("https://zenodo.org/record/5519755/")
    assert published["downloads"]["gqa_images"]["mirrors"] == [] and refer["kind"] is None  # schema defaults
    for bad, key in [({"url": "https://x/a.zip"}, "mirrors.0"), (3, "mirrors.0"), ("html", "kind")]:
        entry = {**refer, "mirrors": [bad]} if key.startswith("mirrors") else {**refer, "kind": bad}
        with pytest.raises(InputError) as err:
            validate_config({**published, "downloads": {**published["downloads"], "phrasecut_refer_train": entry}},
                            "my.yaml")
        assert str(err.value).startswith(f"my.yaml: downloads.phrasecut_refer_train.{key}")

"""download(): resumable, checksummed, atomic fetches over a loopback HTTP server and file://; extract()."""
import hashlib
import io
import logging
import os
import tarfile
import zipfile

import pytest
from http_server import Fault, serve

from mdetr_phrasecut import cli
from mdetr_phrasecut.data.download import download, extract
from mdetr_phrasecut.errors import InputError

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


@pytest.mark.parametrize("status", [404, 500])
def test_http_error_raises_after_retries_and_leaves_no_file(tmp_path, status):
    with serve({"/f.bin": DATA}, {"/f.bin": Fault(status=status)}) as server:
        url = server.url("/f.bin")
        with pytest.raises(InputError) as err:
            fetch(url, tmp_path / "f.bin")
    message = str(err.value)
    assert "\n" not in message and url in message and f"HTTP {status}" in message and "3 attempts" in message
    assert len(server.requests) == 3
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
    src = tmp_path / "source dir" / "ckpt.pth"
    src.parent.mkdir()
    src.write_bytes(DATA)
    assert fetch(src.as_uri(), tmp_path / "a.pth").read_bytes() == DATA
    assert fetch(str(src), tmp_path / "b.pth").read_bytes() == DATA
    (tmp_path / "c.pth.part").write_bytes(DATA[:100] + b"x" * 50)  # a corrupt part is caught and replaced
    assert fetch(src.as_uri(), tmp_path / "c.pth").read_bytes() == DATA
    with pytest.raises(InputError, match="FileNotFoundError"):
        fetch(str(tmp_path / "missing.pth"), tmp_path / "d.pth", retries=1)


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
    archive.write_bytes(_zip({"x/y.txt": b"y"}))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    args = ["download", "--url", str(archive), "--sha256", digest, "--out", str(tmp_path / "dl.zip")]
    assert cli.main(args + ["--extract-to", str(tmp_path / "ex")]) == 0
    assert (tmp_path / "ex" / "x" / "y.txt").read_bytes() == b"y"


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_gz(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("pack,name", [(_zip, "a.zip"), (_tar_gz, "a.tar.gz")])
def test_extract(tmp_path, pack, name):
    members = {"ann/finetune_phrasecut_val.json": b'{"images": []}', "ann/readme.txt": b"hello"}
    (tmp_path / name).write_bytes(pack(members))
    out = extract(tmp_path / name, tmp_path / "out")
    assert {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()} == members
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "out"])  # no temp folder left
    with pytest.raises(InputError, match="already exists"):
        extract(tmp_path / name, tmp_path / "out")


@pytest.mark.parametrize("pack,name", [(_zip, "a.zip"), (_tar_gz, "a.tar.gz")])
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

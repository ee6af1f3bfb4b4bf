"""Atomic writes are atomic: a write that fails midway leaves the old file and no temp file, a rewrite replaces
the file (a new inode) rather than writing into it; identical checkpoints are identical files."""
import errno
import os

import pytest
import torch

from mdetr_phrasecut.infra import io
from mdetr_phrasecut.errors import InputError


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    out = tmp_path / "metrics.json"
    io.atomic_write_bytes(out, b"old")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)  # the bytes are written; making them durable fails
        with pytest.raises((OSError, InputError)):
            io.atomic_write_bytes(out, b"new and longer")
    assert out.read_bytes() == b"old" and siblings(out) == ["metrics.json"]

    ckpt = tmp_path / "checkpoint.pth"
    io.atomic_torch_save({"model": {"w": torch.zeros(3)}}, ckpt)
    before = ckpt.read_bytes()
    with pytest.raises(Exception, match="pickle"):  # a tensor is written, then pickling the rest fails
        io.atomic_torch_save({"model": {"w": torch.ones(10_000)}, "args": lambda: None}, ckpt)
    assert ckpt.read_bytes() == before and siblings(out) == ["checkpoint.pth", "metrics.json"]


def test_a_rewrite_replaces_the_file_and_a_hard_link_keeps_the_old_bytes(tmp_path):
    out, link = tmp_path / "table.md", tmp_path / "published.md"
    io.atomic_write_text(out, "old")
    os.link(out, link)
    inode = out.stat().st_ino
    io.atomic_write_text(out, "new")
    assert out.read_text() == "new" and link.read_text() == "old" and out.stat().st_ino != inode
    io.atomic_torch_save({"w": torch.zeros(2)}, out)
    assert link.read_text() == "old"


def test_identical_saves_give_identical_checkpoint_files(tmp_path):
    """torch.save to a path names the zip's archive after the (random) temp file; through an open file it is fixed,
    so a provenance record's sha256 means the same weights."""
    obj = {"model": {"w": torch.arange(12.0).reshape(3, 4)}, "epoch": 1, "args": {"lr": 1e-4}}
    io.atomic_torch_save(obj, tmp_path / "a.pth")
    io.atomic_torch_save(obj, tmp_path / "b.pth")
    assert io.sha256_file(tmp_path / "a.pth") == io.sha256_file(tmp_path / "b.pth")
    assert torch.equal(torch.load(tmp_path / "b.pth", weights_only=True)["model"]["w"], obj["model"]["w"])


def test_replace_folder_deletes_the_old_folder_only_once_the_new_one_is_in_place(tmp_path):
    out = tmp_path / "browser"
    out.mkdir()
    (out / "index.html").write_text("old")
    with pytest.raises(FileNotFoundError):
        io.replace_folder(tmp_path / "never_built", out)
    assert (out / "index.html").read_text() == "old"  # put back when the new folder cannot take its place
    built = tmp_path / "built"
    built.mkdir()
    (built / "index.html").write_text("new")
    io.replace_folder(built, out)
    assert (out / "index.html").read_text() == "new" and not built.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["browser"]  # nothing set aside is left


def test_a_built_folder_replaces_its_target_only_when_the_block_ends_well(tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), io.built_folder(out) as built:
        (built / "new.txt").write_text("half")
        raise RuntimeError("killed midway")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]  # untouched
    with io.built_folder(out) as built:
        assert built.parent == out.parent and built != out
        (built / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]  # replaced whole: no stale file of the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]  # no temp folder left

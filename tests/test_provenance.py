"""Provenance records and the audit of a chain a -> b -> c built in a temp folder."""
import json
import os
from pathlib import Path

import pytest

from mdetr_phrasecut import cli
from mdetr_phrasecut.infra import provenance
from mdetr_phrasecut.infra.provenance_audit import audit, walk
from mdetr_phrasecut.infra.io import sha256_file

CONFIG = {"data": {"split": "val"}, "train": {"lr": 1e-4, "epochs": 2}}


def make_a(root, text="raw annotations\n"):
    (root / "a.txt").write_text(text)
    provenance.record([root / "a.txt"], [], {"data": CONFIG["data"]})


def make_b(root):
    with provenance.step(outputs=[root / "sub" / "b.txt"], inputs=[root / "a.txt"], config={"train": CONFIG["train"]}):
        (root / "sub").mkdir(exist_ok=True)
        (root / "sub" / "b.txt").write_text((root / "a.txt").read_text().upper())


def make_c(root):
    with provenance.step(outputs=[root / "c.md"], inputs=[root / "sub" / "b.txt"], config={}):
        (root / "c.md").write_text("| b | " + (root / "sub" / "b.txt").read_text().strip() + " |\n")


@pytest.fixture
def chain(tmp_path):
    make_a(tmp_path)
    make_b(tmp_path)
    make_c(tmp_path)
    return tmp_path


def kinds(problems):
    return [(p.artifact.split("/")[-1], p.kind) for p in problems]


def test_record_contents(chain):
    rec = json.loads((chain / "sub" / "b.txt.prov.json").read_text())
    assert rec["outputs"] == [{"path": "b.txt", "sha256": sha256_file(chain / "sub" / "b.txt")}]
    assert rec["inputs"] == [{"path": "../a.txt", "sha256": sha256_file(chain / "a.txt"),
                              "record": "../a.txt.prov.json"}]
    assert rec["config"] == {"train": CONFIG["train"]}
    assert rec["code"]["package_version"] and len(rec["code"]["source_sha256"]) == 64
    assert rec["packages"]["torch"] and rec["packages"]["numpy"]
    assert rec["command"] and rec["host"]
    assert rec["duration_s"] >= 0 and rec["started"] <= rec["finished"]


def test_intact_chain_passes_and_moves_with_its_folder(chain, tmp_path_factory):
    assert audit(chain / "c.md", config=CONFIG) == []
    moved = tmp_path_factory.mktemp("moved") / "tree"
    chain.rename(moved)
    assert audit(moved / "c.md") == []
    assert [a.path.split("/")[-1] for a in walk(moved / "c.md")] == ["c.md", "b.txt", "a.txt"]


def test_step_records_nothing_on_failure(tmp_path):
    out = tmp_path / "x.txt"
    with pytest.raises(RuntimeError):
        with provenance.step(outputs=[out], inputs=[]):
            out.write_text("half")
            raise RuntimeError("boom")
    assert not provenance.record_path(out).exists()
    assert kinds(audit(out)) == [("x.txt", "unrecorded")]


def test_tampered_middle_artifact_is_named(chain):
    (chain / "sub" / "b.txt").write_text("FORGED\n")
    assert kinds(audit(chain / "c.md")) == [("b.txt", "altered")]


def test_deleted_artifact_is_named(chain):
    (chain / "sub" / "b.txt").unlink()
    assert kinds(audit(chain / "c.md")) == [("b.txt", "missing")]


def test_regenerated_input_names_the_stale_consumer(chain):
    make_a(chain, "other annotations\n")  # a remade (with its record), b not re-run
    assert kinds(audit(chain / "c.md")) == [("b.txt", "different-input")]
    make_b(chain)  # re-running b makes c stale in turn
    assert kinds(audit(chain / "c.md")) == [("c.md", "different-input")]
    make_c(chain)
    assert audit(chain / "c.md") == []


def test_unrecorded_source_changed_under_its_consumer(tmp_path):
    (tmp_path / "raw.txt").write_text("v1")
    with provenance.step(outputs=[tmp_path / "out.txt"], inputs=[tmp_path / "raw.txt"]):
        (tmp_path / "out.txt").write_text("derived")
    assert audit(tmp_path / "out.txt") == []
    (tmp_path / "raw.txt").write_text("v2")
    assert kinds(audit(tmp_path / "out.txt")) == [("raw.txt", "altered")]


def test_lost_record_of_an_input_is_named(chain):
    provenance.record_path(chain / "a.txt").unlink()
    assert kinds(audit(chain / "c.md")) == [("a.txt", "unrecorded")]


def test_different_config_is_named(chain):
    changed = {**CONFIG, "train": {**CONFIG["train"], "lr": 5e-5}}
    problems = audit(chain / "c.md", config=changed)
    assert kinds(problems) == [("b.txt", "different-config")]
    assert "train.lr" in problems[0].detail


def test_folder_artifacts(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "1.jpg").write_bytes(b"\xff\xd8one")
    provenance.record([tmp_path / "images"], [], {})
    assert audit(tmp_path / "images") == []
    (tmp_path / "images" / "2.jpg").write_bytes(b"\xff\xd8two")
    assert kinds(audit(tmp_path / "images")) == [("images", "altered")]


def test_cli_report_and_exit_status(chain, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert cli.main(["audit", str(chain / "c.md"), "--config-json", json.dumps(CONFIG), "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert "a.txt" in out and "all consistent" in out
    assert json.loads(report.read_text())["ok"] is True

    (chain / "sub" / "b.txt").write_text("FORGED\n")
    assert cli.main(["audit", str(chain / "c.md"), "--out", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "b.txt: altered" in err[0]
    saved = json.loads(report.read_text())
    assert saved["ok"] is False
    assert [a["problems"][0]["kind"] for a in saved["artifacts"] if a["problems"]] == ["altered"]


def test_cli_rejects_bad_config_json(chain, capsys):
    assert cli.main(["audit", str(chain / "c.md"), "--config-json", str(chain / "nope.json")]) == 2
    assert "--config-json" in capsys.readouterr().err


def make_folder(root, n=3):
    images = root / "images"
    images.mkdir()
    for i in range(n):
        (images / "sub" if i % 2 else images).mkdir(exist_ok=True)
        (images / ("sub" if i % 2 else "") / f"{i}.jpg").write_bytes(b"\xff\xd8" + bytes([i]) * (10 + i))
    provenance.record([images], [], {})
    with provenance.step(outputs=[root / "use.txt"], inputs=[images]):
        (root / "use.txt").write_text("made from the images")
    return images


def test_folder_is_hashed_once_where_produced_and_its_manifest_cited(tmp_path, monkeypatch):
    images = make_folder(tmp_path)
    manifest = json.loads(provenance.manifest_path(images).read_text())
    assert [f[0] for f in manifest["files"]] == ["0.jpg", "2.jpg", "sub/1.jpg"]
    assert [f[1] for f in manifest["files"]] == [12, 14, 13]
    assert manifest["files"][2][3] == sha256_file(images / "sub" / "1.jpg")
    used = json.loads((tmp_path / "use.txt.prov.json").read_text())["inputs"][0]
    assert used == {"path": "images", "sha256": manifest["sha256"], "record": "images.prov.json",
                    "manifest": "images.manifest.json"}

    def no_image_hashing(path, *args):
        if images in Path(path).parents:
            raise AssertionError(f"re-hashed {path}")
        return sha256_file(path, *args)

    monkeypatch.setattr(provenance, "sha256_file", no_image_hashing)  # digests and the audit now read no image
    assert provenance.digest(images) == manifest["sha256"]
    assert audit(tmp_path / "use.txt") == []
    with pytest.raises(AssertionError, match="re-hashed"):
        audit(tmp_path / "use.txt", deep=True)


def test_folder_with_other_sizes_or_mtimes_is_rehashed(tmp_path):
    images = make_folder(tmp_path)
    os.utime(images / "0.jpg", ns=(1, 1))  # mtime only: re-hashed, same content, still consistent
    assert audit(tmp_path / "use.txt") == []
    (images / "2.jpg").write_bytes(b"\xff\xd8 other content")
    assert kinds(audit(tmp_path / "use.txt")) == [("images", "altered")]


def test_edited_manifest_is_not_trusted(tmp_path):
    images = make_folder(tmp_path)
    path = provenance.manifest_path(images)
    manifest = json.loads(path.read_text())
    manifest["files"][0][3] = "0" * 64  # claims another content for 0.jpg
    path.write_text(json.dumps(manifest))
    assert provenance.digest(images) == provenance.digest(images, deep=True)
    assert audit(tmp_path / "use.txt") == []


def test_deep_audit_rehashes_what_sizes_and_mtimes_miss(tmp_path, capsys):
    images = make_folder(tmp_path)
    target = images / "2.jpg"
    st = target.stat()
    target.write_bytes(b"\x00" * st.st_size)  # same size, mtime put back: only the content says so
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert audit(tmp_path / "use.txt") == []
    assert cli.main(["audit", str(tmp_path / "use.txt"), "--deep"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images: altered" in err[0]


@pytest.mark.parametrize("field", ["outputs", "inputs"])
def test_audit_of_a_record_without_outputs_or_inputs_is_one_line(chain, capsys, field):
    path = provenance.record_path(chain / "sub" / "b.txt")
    rec = json.loads(path.read_text())
    del rec[field]
    path.write_text(json.dumps(rec))
    assert cli.main(["audit", str(chain / "c.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "b.txt.prov.json" in err[0] and f"'{field}'" in err[0], err


@pytest.mark.parametrize("spec, named", [({"outputs": ["never.txt"]}, "never.txt"),
                                         ({"outputs": [], "inputs": []}, "'outputs'"),
                                         ({"outputs": "x.txt"}, "'outputs'"),
                                         ({"outputs": ["{out}"], "inputs": ["gone.txt"]}, "gone.txt")])
def test_record_naming_what_the_step_never_wrote_is_one_line(chain, capsys, spec, named):
    spec = json.loads(json.dumps(spec).replace("{out}", str(chain / "c.md")))
    assert cli.main(["--record", json.dumps(spec), "audit", str(chain / "c.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --record") and named in err[0], err
    assert not (chain / "never.txt.prov.json").exists()


def test_the_shipped_stage0_checkpoint_passes_audit_and_its_left_out_inputs_are_named(tmp_path, capsys):
    """resources/: the demo's stage-0 checkpoint and the records of its export and training, under the names they
    are shipped with. The training checkpoint it was exported from and the synthetic data it was trained on are not
    shipped (`"shipped": false` in the records that name them): reported as such, their recorded sha256 standing;
    what is shipped is checked as any artifact."""
    repo = Path(__file__).resolve().parents[1]
    assert cli.main(["audit", str(repo / "resources" / "demo_pretrained.pth")]) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[0].startswith("ok ") and "demo_pretrained.pth " in report[0]
    assert [line.split()[:2] for line in report[1:-1]] == [["not", "shipped"]] * 4 and "consistent" in report[-1]

    bundle = tmp_path / "resources"
    os.mkdir(bundle)
    for f in (repo / "resources").iterdir():
        os.symlink(f, bundle / f.name)
    record = bundle / "demo_pretrained.pth.prov.json"
    rec = json.loads(record.read_text())
    del rec["inputs"][0]["shipped"]  # an absent input its record does not declare left out
    os.unlink(record)
    record.write_text(json.dumps(rec))
    assert cli.main(["audit", str(bundle / "demo_pretrained.pth")]) == 2
    assert "demo_pretrained.pretrain.pth: missing: file not found" in capsys.readouterr().err
    os.unlink(bundle / "demo_pretrained.pth")
    (bundle / "demo_pretrained.pth").write_bytes(b"not the checkpoint")
    assert cli.main(["audit", str(bundle / "demo_pretrained.pth")]) == 2
    assert "demo_pretrained.pth: altered" in capsys.readouterr().err

"""Benchmark provenance on a large image folder: re-hashing it (before: every consumer's record and every audit
did) against its manifest (after: hashed once where produced, then sizes and mtimes checked).

    python benchmarks/provenance.py                  # 5,000 files of 140 KiB (GQA's average image size)
    python benchmarks/provenance.py --files 150000   # GQA's ~148k images, ~20 GB (--kib 4: the same count, 600 MB)
    python benchmarks/provenance.py --smoke          # 500 files of 4 KiB (the test suite)

Times `record` of the folder as an output (hashes it once, writes the manifest), then for one consumer: the
folder's digest and the audit of a file made from it, re-hashed (`deep`, the former behaviour) and from the
manifest; both digests must agree. Last line: one JSON object.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from mdetr_phrasecut.infra import provenance
from mdetr_phrasecut.infra.provenance_audit import audit


def make_folder(root: Path, files: int, kib: int) -> Path:
    """`files` files of `kib` KiB (distinct contents) in 100 sub-folders, as an image tree."""
    images = root / "images"
    block = os.urandom(kib * 1024)
    for i in range(files):
        sub = images / f"{i % 100:02d}"
        if i < 100:
            sub.mkdir(parents=True)
        (sub / f"{i}.jpg").write_bytes(i.to_bytes(8, "little") + block[8:])
    return images


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--kib", type=int, default=140, help="size of each file")
    parser.add_argument("--dir", help="where to build the folder (default: a temp folder, removed after)")
    parser.add_argument("--smoke", action="store_true", help="smallest size: 500 files of 4 KiB")
    args = parser.parse_args()
    if args.smoke:
        args.files, args.kib = 500, 4

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        images, made_s = timed(lambda: make_folder(root, args.files, args.kib))
        _, record_s = timed(lambda: provenance.record([images], [], {}))
        use = root / "use.txt"
        with provenance.step(outputs=[use], inputs=[images]):
            use.write_text("made from the images")
        deep_digest, digest_before = timed(lambda: provenance.digest(images, deep=True))
        fast_digest, digest_after = timed(lambda: provenance.digest(images))
        assert deep_digest == fast_digest, "manifest digest differs from re-hashing"
        problems, audit_before = timed(lambda: audit(use, deep=True))
        assert problems == [], problems
        problems, audit_after = timed(lambda: audit(use))
        assert problems == [], problems

    result = {"files": args.files, "kib": args.kib, "made_s": round(made_s, 2), "record_once_s": round(record_s, 3),
              "digest_before_s": round(digest_before, 3), "digest_after_s": round(digest_after, 3),
              "digest_ratio": round(digest_before / digest_after, 1),
              "audit_before_s": round(audit_before, 3), "audit_after_s": round(audit_after, 3),
              "audit_ratio": round(audit_before / audit_after, 1)}
    print(f"{args.files} files x {args.kib} KiB: digest {digest_before:.2f} s -> {digest_after:.2f} s, "
          f"audit {audit_before:.2f} s -> {audit_after:.2f} s (hashed once at production: {record_s:.2f} s)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Predictions on disk: one .npz written phrase by phrase and read back lazily.

Layout (that of the reference `predictions_test.npz`), per phrase:
`mask__{task_id}` np.packbits of the H x W bool mask (row-major), `shape__{task_id}` [H, W],
`boxes__{task_id}` K x 4 float [x, y, w, h] (K may be 0); plus `task_ids` in writing order.
Each array is streamed into the zip as it comes, so writing holds one phrase in memory at a time.
"""
import contextlib
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..infra.io import atomic_path

FIELDS = ("mask", "shape", "boxes")


class PredictionWriter:
    """Context manager appending one phrase at a time; the file appears (atomically) only on a clean exit.

        with PredictionWriter("predictions_test.npz") as out:
            out.add(task_id, mask, boxes)
    """

    def __init__(self, path, compress=True):
        self.path = Path(path)
        self.compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        self.task_ids = {}  # insertion-ordered set
        self._stack = contextlib.ExitStack()
        self._zip = None

    def __enter__(self):
        tmp = self._stack.enter_context(atomic_path(self.path, suffix=".npz"))
        self._zip = self._stack.enter_context(zipfile.ZipFile(tmp, "w", self.compression, allowZip64=True))
        return self

    def add(self, task_id, mask, boxes):
        """Append one phrase: `mask` H x W (bool or 0/1), `boxes` K x 4 [x, y, w, h]."""
        task_id = str(task_id)
        mask = np.asarray(mask)
        boxes = np.asarray(boxes, dtype=np.float64)
        if task_id in self.task_ids:
            raise InputError(f"{self.path}: task_id {task_id}: written twice")
        if mask.ndim != 2:
            raise InputError(f"{self.path}: task_id {task_id}: mask must be H x W, got shape {mask.shape}")
        if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
            raise InputError(f"{self.path}: task_id {task_id}: boxes must be K x 4, got shape {boxes.shape}")
        self._member(f"mask__{task_id}", np.packbits(mask.astype(bool, copy=False)))
        self._member(f"shape__{task_id}", np.array(mask.shape, dtype=np.int64))
        self._member(f"boxes__{task_id}", boxes.reshape(-1, 4))
        self.task_ids[task_id] = None

    def _member(self, name, array):
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, array, allow_pickle=False)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._member("task_ids", np.array(list(self.task_ids), dtype=str))
        return self._stack.__exit__(exc_type, exc, tb)


class PackedMask:
    """A mask as stored (np.packbits, row-major) with its `shape`; `np.asarray(m)` unpacks it to H x W bool.

    Eight times smaller to pass between processes than the unpacked mask.
    """

    __slots__ = ("packed", "shape")

    def __init__(self, packed, shape):
        self.packed = packed
        self.shape = shape

    def __array__(self, dtype=None, copy=None):
        mask = np.unpackbits(self.packed, count=self.shape[0] * self.shape[1]).reshape(self.shape).view(bool)
        return mask if dtype is None else mask.astype(dtype, copy=False)


def read_predictions(path, packed=False):
    """Yield (task_id, mask, boxes K x 4 float64) per phrase, in file order, one at a time.

    mask: H x W bool array, or with `packed` a PackedMask (unpacked by whoever needs the pixels).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: predictions file not found")
    with np.load(path, allow_pickle=False) as npz:
        if "task_ids" not in npz:
            raise InputError(f"{path}: task_ids is missing")
        for task_id in npz["task_ids"].tolist():
            missing = [f"{field}__{task_id}" for field in FIELDS if f"{field}__{task_id}" not in npz]
            if missing:
                raise InputError(f"{path}: task_id {task_id}: {', '.join(missing)} missing")
            bits, shape, boxes = (npz[f"{field}__{task_id}"] for field in FIELDS)
            if shape.shape != (2,):
                raise InputError(f"{path}: task_id {task_id}: shape__ must be [H, W], got {shape.tolist()}")
            height, width = (int(v) for v in shape)
            if bits.size != -(-height * width // 8):
                raise InputError(f"{path}: task_id {task_id}: mask has {bits.size} bytes, "
                                 f"shape__ [{height}, {width}] needs {-(-height * width // 8)}")
            if boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 4):
                raise InputError(f"{path}: task_id {task_id}: boxes must be K x 4, got shape {boxes.shape}")
            mask = PackedMask(bits, (height, width))
            yield task_id, mask if packed else np.asarray(mask), boxes.reshape(-1, 4).astype(np.float64, copy=False)

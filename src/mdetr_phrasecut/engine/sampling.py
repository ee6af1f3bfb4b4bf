"""Deterministic, resumable data order: which batches each process sees, and per-item augmentation seeds.

An epoch's batches depend only on (seed, epoch, world size, batch size), so a run can restart at any
step; each item's random augmentations depend only on (seed, epoch, index), so they do not depend on
the number of data-loader workers, on the process that loads the item, or on where a run was resumed.
"""
import atexit
import os
import random
import signal
import weakref
from functools import partial
from typing import List

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..infra.lifetime import die_with_parent
from .resume_state import STOP_SIGNALS
from .distributed import DistEnv


class SeededItems(Dataset):
    """Wraps a dataset so that item `i` of epoch `e` is produced with python/numpy/torch RNGs seeded
    from (seed, e, i); the caller's RNG states are left untouched."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item_seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(item_seed)
                random.seed(item_seed)
                np.random.seed(item_seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def epoch_batches(dataset: Dataset, batch_size: int, denv: DistEnv, seed: int, epoch: int,
                  max_steps: int = 0) -> List[List[int]]:
    """This process's batches of dataset indices for `epoch` (shuffled, full batches only)."""
    sampler = DistributedSampler(dataset, num_replicas=denv.world_size, rank=denv.rank, shuffle=True,
                                 seed=seed)
    sampler.set_epoch(epoch)
    indices = list(sampler)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices) - batch_size + 1, batch_size)]
    return batches[:max_steps] if max_steps else batches


def release_eval_batches(n: int, processes: int, batch_size: int) -> List[List[int]]:
    """The release's evaluation batches of `n` items (its main.py: DistributedSampler(shuffle=False), batches of
    `batch_size`, drop_last=False), every process's, in the order its evaluator gathers them (rank 0's first).
    Each process takes every `processes`-th item, the first items repeated to even the shares; an item's image
    is padded to its batch partners' size. `processes` 1: consecutive batches."""
    batches = []
    for rank in range(processes):
        own = list(DistributedSampler(range(n), num_replicas=processes, rank=rank, shuffle=False))
        batches += [own[i:i + batch_size] for i in range(0, len(own), batch_size)]
    return batches


def start_worker(parent, _worker_id):
    """Data-loader workers die with the process that started them (`parent`, at once rather than at torch's next
    5-second check) and leave SIGTERM / SIGUSR1 to it: Slurm (and `timeout`) signal the whole process group, and a
    worker dying of it would kill the main process before it saves its checkpoint."""
    die_with_parent(parent)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


_LIVE_ITERATORS = weakref.WeakSet()


class WorkerLoader(DataLoader):
    """A DataLoader whose workers (which ignore stop signals) are shut down as soon as an iteration ends, fails
    (e.g. on an unreadable image) or is abandoned, and at the latest before multiprocessing's exit hook, which
    would otherwise wait forever for workers that ignore its SIGTERM."""

    def __iter__(self):
        iterator = super().__iter__()
        _LIVE_ITERATORS.add(iterator)
        try:
            yield from iterator
        finally:
            _shutdown(iterator)


def _shutdown(iterator):
    if hasattr(iterator, "_shutdown_workers"):  # multi-process iterators only
        iterator._shutdown_workers()


@atexit.register  # registered after torch's and multiprocessing's hooks, so it runs before them
def _shutdown_all():
    for iterator in list(_LIVE_ITERATORS):
        _shutdown(iterator)


def train_loader(items: SeededItems, batches: List[List[int]], collate_fn, num_workers: int,
                 epoch: int, pin_memory: bool = False) -> DataLoader:
    """A loader over pre-computed batches; its own generator keeps the global torch RNG untouched."""
    items.set_epoch(epoch)
    generator = torch.Generator().manual_seed(items.seed + epoch)
    return WorkerLoader(items, batch_sampler=batches, collate_fn=collate_fn, num_workers=num_workers,
                        generator=generator, pin_memory=pin_memory, worker_init_fn=partial(start_worker, os.getpid()))


def val_loader(dataset: Dataset, batch_size: int, denv: DistEnv, collate_fn, num_workers: int,
               pin_memory: bool = False):
    """This process's share of the validation set: every world_size-th item, padded by repeating the first
    ones so that all processes run the same number of batches (the criterion synchronises).

    Returns (loader, number of items that are not padding; they come first)."""
    own = list(range(denv.rank, len(dataset), denv.world_size))
    per_process = -(-len(dataset) // denv.world_size)
    padded = own + list(range(per_process - len(own)))
    loader = WorkerLoader(Subset(dataset, padded), batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                          num_workers=num_workers, generator=torch.Generator().manual_seed(0),
                          pin_memory=pin_memory, worker_init_fn=partial(start_worker, os.getpid()))
    return loader, len(own)

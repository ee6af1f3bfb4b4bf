"""What `evaluate` writes (per_task.json, metrics.json) and Snakemake benchmark files, made from given IoUs."""
import json

import numpy as np

from mdetr_phrasecut.evaluation.phrasecut_metrics import SubsetStats


def tasks(iou, union=None, images=None, subsets=None):
    """per_task.json content: phrase k of image images[k] with mask IoU iou[k] (I = round(IoU x U))."""
    n = len(iou)
    union = np.full(n, 1000) if union is None else union
    images = np.arange(n) if images is None else images
    return {f"{images[k]}__{k}": {"image_id": int(images[k]), "mask_i": int(round(iou[k] * union[k])),
                                  "mask_u": int(union[k]), "mask_iou": round(iou[k] * union[k]) / union[k],
                                  "box_iou": 0.5, "subsets": subsets(k) if subsets else ["all"]}
            for k in range(n)}


def write(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def write_evaluation(test_dir, dataset="d", n=2000, seed=13):
    """`evaluate`'s per_task.json and a metrics.json made from it (the evaluator's sums) in `test_dir`; returns
    (per-task content, metrics)."""
    rng = np.random.default_rng(seed)
    content = tasks(rng.uniform(0, 1, n), rng.integers(100, 1000, n))
    write(test_dir / "per_task.json", content)
    stats_ = SubsetStats()
    for task in content.values():
        stats_.add(task)
    metrics = {"dataset": dataset, "split": "test", "split_file": "s", "split_sha256": "ab", "checkpoint": "c",
               "checkpoint_sha256": "cd", "num_phrases": n, "missing": 0, "subsets": {"all": stats_.metrics()}}
    write(test_dir / "metrics.json", metrics)
    return content, metrics


def write_benchmark(path, seconds, cpu_seconds):
    """A Snakemake benchmark file (the columns the cost reads, and one it does not)."""
    write(path, "").write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\tx\t1\t{cpu_seconds}\n")
    return path

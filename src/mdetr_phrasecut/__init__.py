"""MDETR referring-expression segmentation on PhraseCut: data, model, training, evaluation."""
from pathlib import Path

__version__ = "0.1.0"
ASSETS = Path(__file__).resolve().parent / "assets"  # package data: the config schema, the tiny text encoder

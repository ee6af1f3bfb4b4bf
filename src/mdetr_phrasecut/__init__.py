"""MDETR referring-expression segmentation on PhraseCut: data, model, training, evaluation."""
__version__ = "0.1.0"

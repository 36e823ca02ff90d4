"""Data: the training and test tables, image reading and checks, the decoded-image cache, augmentation
pipelines and datasets. Reads comp.yaml"s tables and image files; writes only the caches under .cache/.
"""

__all__ = ["augment", "cache", "checked", "dataset", "images", "tables", "workers"]

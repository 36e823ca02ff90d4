"""Data: the training and test tables, image reading and checks, the decoded-image cache, augmentation
pipelines, datasets, and the fold assignment. Reads comp.yaml"s tables and image files; writes the caches under
.cache/ and the folds files under folds/ (comp.data.folds).
"""

__all__ = ["augment", "cache", "checked", "dataset", "folds", "images", "tables", "workers"]

"""Training: one fold (engine.fit_fold), every fold of an experiment (fold_train), the epoch kept
(selection), the learning-rate finder (lrfind), seeds per fold (seeds), per-row targets (targets), the
parts built for a fold (parts, loaders), experiment trackers (track) and folds in child processes, one per
device (devices). Reads the tables and folds file; writes experiments/<exp>/fold*/, oof.csv, scores.json.
"""

__all__ = ["devices", "engine", "fold_train", "loaders", "lrfind", "parts", "seeds", "selection", "targets", "track"]

"""More from the same data, as inputs to fold-train: pseudo-labelled test rows (pseudo, `comp pseudo`) and
distillation from a teacher (distill, train.distill); inputs turns an experiment's recipes into each fold's
training table and targets. Seeds per fold live in comp.train.seeds; SWA and progressive resizing in the
engine (comp/train/engine.py, comp/train/parts.py).
"""

__all__ = ["distill", "inputs", "pseudo"]

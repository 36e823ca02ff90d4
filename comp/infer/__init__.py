"""Inference: test-set probabilities per fold with test-time augmentation (predict), the TTA chosen on
out-of-fold evidence (tta_auto), and the prediction tables" format (predictions).
"""

__all__ = ["predict", "predictions", "tta_auto"]

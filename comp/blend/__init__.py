"""Blending: ensemble weights (ensemble), the blend chosen by nested score (auto), stacking (stack),
submission files in the competition"s format (submission) and the leaderboard (leaderboard).
"""

__all__ = ["auto", "ensemble", "leaderboard", "stack", "submission"]

"""Models: the timm factory (factory), pretrained weights from the hub or a local file or folder (weights),
losses, and the checkpoint format every stage reads and writes (checkpoint).
"""

__all__ = ["checkpoint", "factory", "losses", "weights"]

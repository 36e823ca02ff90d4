"""Where a model runs: the device and precision (device), torchrun / DistributedDataParallel helpers
(distributed) and the machine check behind `comp doctor` (doctor).
"""

__all__ = ["device", "distributed", "doctor"]

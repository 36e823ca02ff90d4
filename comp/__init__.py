"""comp: Kaggle-style image classification from folds to submissions."""
__version__ = "0.1.0"

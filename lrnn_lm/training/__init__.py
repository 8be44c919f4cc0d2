"""Pieces of the training job; train.py at the repository root is the loop that uses them."""

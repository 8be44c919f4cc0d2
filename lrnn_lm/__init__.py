"""lrnn-lm."""

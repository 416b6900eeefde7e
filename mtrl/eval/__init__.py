"""Evaluation: episodes in the real environments, evaluate.py's run, videos."""

"""Baselines: single-task learning, hard sharing, cross-stitch, MGDA / MGDA-UB."""

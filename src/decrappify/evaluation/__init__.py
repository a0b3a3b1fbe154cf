"""Scoring restorations: evaluate against baselines and peers, metrics, perceptual distance, reports, the demo."""

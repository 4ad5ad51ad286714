"""Downstream task heads for the OrthoFoundation encoder: registry, datasets, training, evaluation."""

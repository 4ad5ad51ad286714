"""Self-supervised pretraining of the OrthoFoundation encoder with the DINOv3 recipe."""

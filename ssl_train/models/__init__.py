"""Models of the pretraining: the DINOv3 backbone with mask-token support, and the DINO / iBOT heads."""

from ssl_train.models.backbone import BackboneOutput, SSLBackbone
from ssl_train.models.heads import DINOHead

__all__ = ["BackboneOutput", "DINOHead", "SSLBackbone"]

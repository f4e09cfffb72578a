"""Backbones (timm, one feature contract), heads and necks. Never imports Lightning."""

from omnivis.models.backbones import Backbone, create_backbone, list_backbones

__all__ = ["Backbone", "create_backbone", "list_backbones"]

"""The training engine: ``trainer`` (a Lightning Trainer built from a config) and ``config``.

The bundle format lives below every layer, in ``omnivis.bundle``: models read pretrained bundles,
and predictors, export and serve read bundles without importing Lightning.
"""

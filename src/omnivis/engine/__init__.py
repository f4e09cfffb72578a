"""The training engine (``trainer``: a Lightning Trainer built from a config), seeding (``seed``) and
the bundle format (``bundle``).

Nothing is imported here: ``omnivis.engine.bundle`` is read by predictors, export and serve, which
must not pay for importing Lightning.
"""

"""omnivis: one self-supervised vision backbone for understanding, generation, export and serving."""

__version__ = "0.1.0"

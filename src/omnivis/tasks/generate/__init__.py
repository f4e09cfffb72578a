"""Image generation: ae, vae, vqvae (+ autoregressive prior), gan and diffusion, one bundle format.

``train_generator`` trains any method into a bundle; ``GeneratorPredictor`` samples and
interpolates from one; ``evaluate_generator`` measures FID/KID with a classifier omnivis trained.
"""

from omnivis.tasks.generate.config import METHODS, GenerateConfig
from omnivis.tasks.generate.evaluate import evaluate_generator
from omnivis.tasks.generate.sample import GeneratorPredictor
from omnivis.tasks.generate.train import train_generator

__all__ = ["METHODS", "GenerateConfig", "GeneratorPredictor", "evaluate_generator", "train_generator"]

"""One module per task: a config dataclass, a LightningModule, training, evaluation and a predictor."""

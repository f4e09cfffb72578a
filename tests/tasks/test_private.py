"""Differentially private classification (DP-SGD through Opacus) and the membership audit.

The references are Opacus' own: its RDP accountant fed the run's sampling rate, noise multiplier and
steps must give the epsilon the bundle reports, and its ``get_noise_multiplier`` the noise. The
membership audit of a model that never trained must be at chance, whatever the machine.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from omnivis.bundle import load_bundle, save_bundle
from omnivis.data.builtin import resolve_classification_data
from omnivis.data.poisson import EmptySafeCollate, PoissonBatches
from omnivis.data.transforms import AugmentConfig
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.inference.classify import ClassifyPredictor, class_split
from omnivis.inference.membership import audit_membership
from omnivis.tasks.classify import ClassifyConfig, build_model, bundle_config, train_classifier
from omnivis.tasks.private import PrivateTraining
from tests.conftest import tiny_classify_config

STEPS = 6


def private_config(**overrides) -> ClassifyConfig:
    """The tiny digits classifier, private: the 0.23 M-parameter micro ResNet, a few steps."""
    trainer = dict(max_steps=STEPS, early_stopping_patience=0, checkpoint_every_n_steps=2)
    trainer.update(overrides.pop("trainer", {}))
    base = dict(model="omnivis_resnet_micro", dp_epsilon=8.0, dp_delta=1e-5, dp_max_grad_norm=1.0, lr=5e-3)
    base.update(overrides)
    return tiny_classify_config(**base, trainer=trainer)


@pytest.fixture(scope="module")
def private_bundle(tmp_path_factory):
    return train_classifier(private_config(), tmp_path_factory.mktemp("dp") / "run")


def test_private_run_writes_a_bundle_that_reloads_and_predicts(private_bundle):
    bundle = load_bundle(private_bundle, task="classify")
    dp = bundle.config["dp"]
    assert bundle.config["batchnorm_to_groupnorm"] is True
    assert dp["steps"] == STEPS and dp["delta"] == 1e-5 and dp["max_grad_norm"] == 1.0
    assert 0 < dp["epsilon"] <= dp["target_epsilon"] == 8.0
    assert bundle.metrics["dp_epsilon"] == dp["epsilon"]
    assert bundle.metrics["dp_noise_multiplier"] == dp["noise_multiplier"]

    predictor = ClassifyPredictor.from_dir(private_bundle)
    norms = {type(m).__name__ for m in predictor.model.modules()}
    assert "GroupNorm" in norms and not any("BatchNorm" in n for n in norms)
    state = load_file(str(private_bundle / "model.safetensors"))
    assert predictor.model.state_dict().keys() == state.keys()  # the same module as training built
    images = [np.full((8, 8), v, dtype=np.uint8) for v in (0, 128, 255)]
    probs = predictor.predict_proba(images)
    assert probs.shape == (3, 10) and torch.allclose(probs.sum(dim=1), torch.ones(3), atol=1e-5)
    assert len(predictor.predict(images, top_k=2)[0]["top_k"]) == 2


def test_epsilon_is_opacus_rdp_accountant_on_the_same_schedule(private_bundle):
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    dp = load_bundle(private_bundle).config["dp"]
    train_size = load_bundle(private_bundle).config["split"]["train_size"]
    assert dp["sample_rate"] == pytest.approx(32 / train_size)  # batch / N: Poisson rate
    sigma = get_noise_multiplier(target_epsilon=8.0, target_delta=1e-5, sample_rate=dp["sample_rate"], steps=STEPS,
                                 accountant="rdp")
    assert dp["noise_multiplier"] == pytest.approx(sigma)
    reference = RDPAccountant()
    reference.history = [(dp["noise_multiplier"], dp["sample_rate"], STEPS)]
    assert dp["epsilon"] == pytest.approx(reference.get_epsilon(delta=1e-5), abs=1e-3)


def test_epsilon_is_logged_every_epoch(private_bundle):
    text = (private_bundle / "logs" / "metrics.csv").read_text()
    assert "train/dp_epsilon" in text.splitlines()[0]


@pytest.mark.parametrize("epsilon, batch, advice", [
    (1e-3, 32, "raise --dp-epsilon or --dp-delta"),  # below RDP's floor: no noise gets there
    (0.5, 2, "train fewer --epochs (or --max-steps), or raise --batch-size"),  # noise 1.1 > half the batch
])
def test_unreachable_epsilon_is_one_clear_error_before_anything_is_written(tmp_path, epsilon, batch, advice):
    with pytest.raises(ConfigError, match=rf"--dp-epsilon {epsilon:g} cannot be reached in 6 steps .* of batch {batch} "
                                          "from 1257 images at delta 1e-05") as err:
        train_classifier(private_config(dp_epsilon=epsilon, batch_size=batch), tmp_path / "run")
    assert advice in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "run" / "run_config.json").exists()


@pytest.mark.parametrize("delta", [0.5, 1e-3, 0.0, -1e-5])
def test_a_delta_outside_0_to_1_over_n_is_refused(tmp_path, delta):
    # 1257 training images: 1/N = 8e-4, so 1e-3 is already too large
    with pytest.raises(ConfigError, match="--dp-delta .* must be > 0 and below 1/N"):
        train_classifier(private_config(dp_delta=delta), tmp_path / "run")


def test_mixup_and_bad_values_are_refused():
    with pytest.raises(ConfigError, match="Mixup/CutMix"):
        ClassifyConfig(dp_epsilon=3.0, augment=AugmentConfig(mixup=0.2))
    with pytest.raises(ConfigError, match="dp_epsilon must be > 0"):
        ClassifyConfig(dp_epsilon=0.0)
    with pytest.raises(ConfigError, match="dp_max_grad_norm"):
        ClassifyConfig(dp_epsilon=1.0, dp_max_grad_norm=0.0)


def test_poisson_batches_are_a_function_of_seed_epoch_and_step():
    sampler = PoissonBatches(1000, 50, seed=3)
    assert len(sampler) == 20 and sampler.sample_rate == 0.05
    first = list(sampler)
    assert first == list(PoissonBatches(1000, 50, seed=3))
    assert first != list(PoissonBatches(1000, 50, seed=4))
    sizes = [len(batch) for batch in first]
    assert len(set(sizes)) > 1 and 20 <= np.mean(sizes) <= 80  # Poisson: sizes vary around 50
    sampler.set_epoch(1)
    second = list(sampler)
    assert all(epoch == 1 for batch in second for epoch, _ in batch) and second != first
    resumed = PoissonBatches(1000, 50, seed=3)
    resumed.set_position(20 + 7)  # killed after 7 steps of epoch 1
    resumed.set_epoch(1)  # Lightning sets the epoch it resumes in: the skip is kept
    assert list(resumed) == second[7:]


def test_an_empty_draw_collates_to_zero_rows():
    dataset = [(torch.zeros(1, 4, 4), 3)]
    images, labels = EmptySafeCollate(dataset)([])
    assert images.shape == (0, 1, 4, 4) and labels.shape == (0,)


def test_an_empty_draw_still_takes_a_noisy_step():
    model = build_model(private_config(), 10)
    private = PrivateTraining(model, epsilon=8.0, delta=1e-5, max_grad_norm=1.0, batch_size=32, train_size=1000)
    loss = private.loss(torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad_sample.shape[0] == 1 and not p.grad_sample.any() for p in model.parameters())


def test_resume_without_the_accountant_is_refused():
    model = build_model(private_config(), 10)
    private = PrivateTraining(model, epsilon=8.0, delta=1e-5, max_grad_norm=1.0, batch_size=32, train_size=1000)
    with pytest.raises(ConfigError, match="no privacy accountant"):
        private.load_state_dict(None, global_step=4)
    with pytest.raises(ConfigError, match="counted 3 steps but the run is at step 4"):
        private.load_state_dict({"history": [[1.0, 0.03, 3]]}, global_step=4)


class _Crash(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= 3:
            raise RuntimeError("killed")


def test_a_killed_private_run_resumes_with_its_accountant_history(tmp_path, private_bundle):
    with pytest.raises(RuntimeError, match="killed"):
        train_classifier(private_config(), tmp_path / "run", callbacks=[_Crash()])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3 and sum(n for _, _, n in ckpt["dp_accountant"]["history"]) == 3
    resumed = train_classifier(private_config(), tmp_path / "run", resume=True)
    assert load_bundle(resumed).config["dp"] == load_bundle(private_bundle).config["dp"]  # all 6 steps counted
    a, b = load_file(str(resumed / "model.safetensors")), load_file(str(private_bundle / "model.safetensors"))
    for key in a:  # batches, noise and augmentation are functions of (seed, step): the same weights
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def untrained_bundle(folder, val_fraction: float = 0.5):
    """A classify bundle with the seed's initial weights: its losses know nothing of membership."""
    config = tiny_classify_config(val_fraction=val_fraction)
    data = resolve_classification_data(config.data)
    train_idx, _ = class_split(data, val_fraction, config.trainer.seed)
    torch.manual_seed(0)
    model = build_model(config, len(data.classes))
    header = bundle_config(config, data.classes, len(train_idx), [0.3], [0.38])
    return save_bundle(folder, model.state_dict(), header)


def test_membership_audit_of_an_untrained_model_is_at_chance(tmp_path):
    bundle = untrained_bundle(tmp_path / "untrained")
    metrics = audit_membership(bundle, out_dir=tmp_path / "audit", progress=False)
    assert metrics["members"] == metrics["nonmembers"] >= 850  # balanced: ~900 images a side
    assert 0.35 <= metrics["auc"] <= 0.65
    assert 0.0 <= metrics["advantage"] <= 0.3
    assert (tmp_path / "audit" / "membership_roc.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "audit" / "membership.json").read_text())
    assert saved["auc"] == pytest.approx(metrics["auc"])


def test_membership_audit_needs_a_classifier_with_a_held_out_split(tmp_path):
    other = save_bundle(tmp_path / "detector", {"w": torch.zeros(1)}, {"task": "detect"})
    with pytest.raises(BundleError, match="'detect' bundle"):
        audit_membership(other, progress=False)
    with pytest.raises(DataError, match="without a held-out split"):
        audit_membership(untrained_bundle(tmp_path / "all", val_fraction=0.0), progress=False)

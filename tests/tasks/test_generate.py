"""Generators: each method trains a few steps, saves a bundle and samples identically from a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnivis.bundle import save_bundle
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import BundleError, ConfigError, TrainingError
from omnivis.tasks.generate import GenerateConfig, GeneratorPredictor, train_generator

TINY = dict(img_size=8, width=16, batch_size=16, latent_dim=8, codebook_size=16, embed_dim=4, prior_width=32)


def tiny(method: str, **overrides) -> GenerateConfig:
    trainer = dict(epochs=1, max_steps=3, progress=False, seed=0)
    trainer.update(overrides.pop("trainer", {}))
    return GenerateConfig(method=method, **{**TINY, **overrides}, trainer=TrainerConfig(**trainer))


@pytest.fixture(scope="module")
def vq_bundle(tmp_path_factory):
    return train_generator(tiny("vqvae"), tmp_path_factory.mktemp("gen") / "vq")


@pytest.fixture(scope="module")
def diffusion_bundle(tmp_path_factory):
    return train_generator(tiny("diffusion", conditional=True), tmp_path_factory.mktemp("gen") / "diff")


@pytest.mark.parametrize("method,conditional", [("vae", True), ("gan", True), ("gan", False), ("diffusion", False)])
def test_method_trains_and_samples_reproducibly(tmp_path, method, conditional):
    out = train_generator(tiny(method, conditional=conditional), tmp_path / method)
    gen = GeneratorPredictor.from_dir(out)
    a = gen.generate(6, steps=3, seed=7)
    assert a.shape == (6, 8, 8, 1) and a.dtype == np.uint8
    assert np.array_equal(a, GeneratorPredictor.from_dir(out).generate(6, steps=3, seed=7))  # reloaded: same images
    assert not np.array_equal(a, gen.generate(6, steps=3, seed=8))
    assert gen.interpolate(4, steps=2).shape == (4, 8, 8, 1)


def test_conditional_diffusion_with_guidance_and_samplers(diffusion_bundle):
    gen = GeneratorPredictor.from_dir(diffusion_bundle)
    assert gen.config["net"]["num_classes"] == 10
    for sampler in ("ddim", "dpm", "ddpm"):
        a = gen.generate(3, class_="7", steps=4, guidance=2.0, seed=1, sampler=sampler)
        assert np.array_equal(a, gen.generate(3, class_="7", steps=4, guidance=2.0, seed=1, sampler=sampler))
    assert not np.array_equal(gen.generate(3, class_="7", steps=4, guidance=1.0, seed=1),
                              gen.generate(3, class_="7", steps=4, guidance=4.0, seed=1))


def test_ae_reconstructs_and_interpolates_images_but_does_not_sample(tmp_path):
    out = train_generator(tiny("ae"), tmp_path / "ae")
    gen = GeneratorPredictor.from_dir(out)
    digits = np.random.default_rng(0).integers(0, 255, (2, 8, 8), dtype=np.uint8)
    walk = gen.interpolate(5, images=[digits[0], digits[1]])
    assert walk.shape == (5, 8, 8, 1)
    with pytest.raises(BundleError, match="no prior"):
        gen.generate(2)


def test_vq_prior_samples_valid_codes(tmp_path, vq_bundle):
    with pytest.raises(BundleError, match="vqvae-ar"):
        GeneratorPredictor.from_dir(vq_bundle).generate(2)
    out = train_generator(tiny("vqvae-ar", conditional=True, vq_bundle=str(vq_bundle)), tmp_path / "ar")
    gen = GeneratorPredictor.from_dir(out)
    prior = gen.model.prior
    codes = prior.sample(5, torch.tensor([0, 1, 2, 3, 4]), temperature=1.0, top_k=4, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (5, 4) and codes.dtype == torch.long  # 8 px / 4 -> a 2 x 2 grid
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    a = gen.generate(4, class_="3", seed=2, top_k=5)
    assert np.array_equal(a, GeneratorPredictor.from_dir(out).generate(4, class_="3", seed=2, top_k=5))


def test_vq_prior_needs_matching_vqvae(tmp_path, vq_bundle):
    with pytest.raises(ConfigError, match="--img-size 8"):
        train_generator(tiny("vqvae-ar", img_size=16, vq_bundle=str(vq_bundle)), tmp_path / "ar")


def test_bad_input_is_one_clear_error(tmp_path, diffusion_bundle):
    gen = GeneratorPredictor.from_dir(diffusion_bundle)
    with pytest.raises(ConfigError, match="class 'cat'"):
        gen.generate(2, class_="cat")
    with pytest.raises(ConfigError, match="--n must be in 1..1024"):
        gen.generate(5000)
    with pytest.raises(ConfigError, match="--steps must be in 1..1000"):
        gen.generate(2, steps=5000)
    with pytest.raises(ConfigError, match="makes 8 px images, not 32 px"):
        gen.check_size(32)
    with pytest.raises(ConfigError, match="img_size must be"):
        tiny("diffusion", img_size=20)
    other = save_bundle(tmp_path / "clf", {"w": torch.zeros(1)}, {"task": "classify"})
    with pytest.raises(BundleError, match="not a generator"):
        GeneratorPredictor.from_dir(other)
    with pytest.raises(BundleError, match="omnivis generate"):
        gen.predict(["x.png"])


def test_gan_non_finite_loss_names_the_step(tmp_path, monkeypatch):
    from omnivis.tasks.generate import modules

    monkeypatch.setattr(modules, "hinge_d_loss", lambda real, fake: (real.mean() + fake.mean()) * float("nan"))
    with pytest.raises(TrainingError, match="at step 0"):
        train_generator(tiny("gan"), tmp_path / "nan")


def test_gan_collapse_is_reported(tmp_path, monkeypatch):
    from omnivis.tasks.generate import modules

    monkeypatch.setattr(modules, "GAN_COLLAPSE_STEPS", 2)
    monkeypatch.setattr(modules, "hinge_d_loss", lambda real, fake: (real.mean() + fake.mean()) * 0.0)
    with pytest.raises(TrainingError, match="GAN collapsed"):
        train_generator(tiny("gan", trainer=dict(max_steps=10)), tmp_path / "collapse")


def test_generate_together_gives_each_call_its_own_images(tmp_path, diffusion_bundle, vq_bundle):
    """Calls batched into one sampler call give what each gives alone (its own seed, class and n), within
    one 8-bit level; DDPM (noise at every step) and a VQ prior (at every token) are not batched."""
    import dataclasses

    predictor = GeneratorPredictor.from_dir(diffusion_bundle)
    assert predictor.batchable()
    calls = [{"n": 2, "class_": "0", "seed": 3, "steps": 4, "guidance": 2.0},
             {"n": 1, "class_": None, "seed": 8, "steps": 4, "guidance": 2.0},
             {"n": 3, "class_": "1", "seed": 3, "steps": 4, "guidance": 2.0}]
    decoded = []
    spec = predictor.spec
    predictor.spec = dataclasses.replace(spec, decode=lambda *a, **k: decoded.append(len(a[2])) or spec.decode(*a, **k))
    together = predictor.generate_together(calls)
    assert decoded == [6]  # one sampler call for the six images
    predictor.spec = spec
    for call, images in zip(calls, together):
        alone = predictor.generate(call["n"], call["class_"], steps=4, guidance=2.0, seed=call["seed"])
        assert images.shape == alone.shape and np.abs(images.astype(int) - alone.astype(int)).max() <= 1
    assert not np.array_equal(together[0], together[2][:2])  # another class from the same seed
    import omnivis.tasks.generate.sample as sample_module

    decoded.clear()
    predictor.spec = dataclasses.replace(spec, decode=lambda *a, **k: decoded.append(len(a[2])) or spec.decode(*a, **k))
    original, sample_module.BATCH_DRAW = sample_module.BATCH_DRAW, 4
    try:  # sampler calls stay within BATCH_DRAW images, the answers do not change
        chunked = predictor.generate_together(calls)
    finally:
        sample_module.BATCH_DRAW, predictor.spec = original, spec
    assert decoded == [4, 2] and all(np.array_equal(a, b) for a, b in zip(chunked, together))

    gan = GeneratorPredictor.from_dir(train_generator(tiny("gan", conditional=True), tmp_path / "gan"))
    pair = gan.generate_together([{"n": 2, "class_": "1", "seed": 5}, {"n": 2, "class_": "1", "seed": 6}])
    assert np.array_equal(pair[0], gan.generate(2, "1", seed=5)) and not np.array_equal(pair[0], pair[1])

    predictor.config = {**predictor.config, "sampling": {**predictor.config.get("sampling", {}), "sampler": "ddpm"}}
    assert not predictor.batchable()
    vq_prior = train_generator(tiny("vqvae-ar", vq_bundle=str(vq_bundle)), tmp_path / "ar")
    assert not GeneratorPredictor.from_dir(vq_prior).batchable()

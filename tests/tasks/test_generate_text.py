"""Text-to-image diffusion: the text-conditioned UNet and its guidance sampler, a tiny end-to-end run on a
captions CSV, the prompt checks, the recorded text encoder, evaluation and the OpenAI endpoint."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import BundleError, ConfigError, OmnivisWarning
from omnivis.models.generative.text_unet import TextConditionedUNet, text_diffusion_sample
from omnivis.models.generative.unet import build_sampler, build_train_scheduler
from omnivis.tasks.generate import GenerateConfig, GeneratorPredictor, train_generator

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 180, 40)}
SHAPES = ("square", "circle")


def _image(colour: str, shape: str, size: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    if shape == "square":
        inside = (np.abs(yy - 7.5) < 5) & (np.abs(xx - 7.5) < 5)
    else:
        inside = (yy - 7.5) ** 2 + (xx - 7.5) ** 2 < 30
    image = np.full((size, size, 3), 255, np.uint8)
    image[inside] = COLOURS[colour]
    return image


@pytest.fixture(scope="module")
def captions_csv(tmp_path_factory):
    """24 16 px RGB images, two captions each (the second one shorter), as a path,caption CSV."""
    root = tmp_path_factory.mktemp("t2i_data")
    rows = ["path,caption"]
    for i in range(24):
        colour, shape = list(COLOURS)[i % 3], SHAPES[(i // 3) % 2]
        Image.fromarray(_image(colour, shape)).save(root / f"{i:02d}.png")
        rows += [f"{i:02d}.png,a {colour} {shape} on white", f"{i:02d}.png,a {colour} {shape}"]
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root / "captions.csv"


def text_config(data, **overrides) -> GenerateConfig:
    trainer = dict(epochs=2, max_steps=6, progress=False, seed=0)
    trainer.update(overrides.pop("trainer", {}))
    base = dict(method="diffusion", text=True, data=str(data), img_size=16, channels=3, width=16, batch_size=8,
                sample_steps=3)
    return GenerateConfig(**{**base, **overrides}, trainer=TrainerConfig(**trainer))


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory, captions_csv):
    return train_generator(text_config(captions_csv), tmp_path_factory.mktemp("t2i") / "bundle")


@pytest.fixture(scope="module")
def text_gen(text_bundle):
    return GeneratorPredictor.from_dir(text_bundle)


@pytest.fixture(scope="module")
def class_bundle(tmp_path_factory):
    from tests.tasks.test_generate import tiny

    return train_generator(tiny("diffusion", conditional=True), tmp_path_factory.mktemp("t2i") / "classes")


# --- (a) the net and its sampler, random weights ----------------------------------------------------

def _tiny_net(seed: int = 0) -> TextConditionedUNet:
    torch.manual_seed(seed)
    net = TextConditionedUNet(img_size=8, channels=1, width=16, text_dim=8).eval()
    with torch.no_grad():
        net.null.normal_()  # a trained null differs from zero; so does this one
    return net


def _sample(net, text, guidance, seed=0, sampler="ddim", steps=3):
    scheduler = build_sampler(sampler, dict(build_train_scheduler(100).config))
    noise = torch.randn((len(text), 1, 8, 8), generator=torch.Generator().manual_seed(seed))
    return text_diffusion_sample(net, scheduler, noise, steps, text, guidance, torch.Generator().manual_seed(seed))


def test_text_unet_shapes_and_what_the_bundle_holds():
    net = _tiny_net()
    text = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    eps = net(torch.randn(3, 1, 8, 8), torch.tensor([1, 50, 99]), text)
    assert eps.shape == (3, 1, 8, 8)
    assert net.null_text(3).shape == (3, 8) and net.text_proj[-1].out_features == 4 * 16  # the time embedding
    assert {k.split(".")[0] for k in net.state_dict()} == {"unet", "text_proj", "null"}
    with pytest.raises(ValueError, match=r"text must be \(3, 8\)"):
        net(torch.randn(3, 1, 8, 8), 5, text[:, :4])


def test_new_text_bundles_scale_and_shift_with_the_text_and_older_ones_still_load(text_gen):
    from omnivis.tasks.generate.diffusion import build

    assert text_gen.net["film"] is True  # what training writes now
    old = {k: v for k, v in text_gen.net.items() if k != "film"}  # a bundle made before FiLM
    resnet = lambda model: model.unet.down_blocks[0].resnets[0]  # noqa: E731
    film, shift = resnet(build(text_gen.net)), resnet(build(old))
    assert film.time_embedding_norm == "scale_shift" and shift.time_embedding_norm == "default"
    assert film.time_emb_proj.out_features == 2 * shift.time_emb_proj.out_features  # a scale per channel too


def test_min_snr_weights_each_noise_level_by_min_snr_gamma_over_snr():
    from omnivis.tasks.generate.diffusion import net_config
    from omnivis.tasks.generate.modules import DiffusionModule

    def module(gamma):
        config = GenerateConfig(method="diffusion", img_size=8, width=16, snr_gamma=gamma,
                                trainer=TrainerConfig(epochs=1, progress=False))
        return DiffusionModule(config, net_config(config, 0))

    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    predicted, t = torch.zeros_like(noise), torch.tensor([0, 300, 999])
    weighted = module(5.0)
    abar = weighted.scheduler.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    expected = ((noise.double() ** 2).mean(dim=(1, 2, 3)) * torch.clamp(snr, max=5.0) / snr).mean()
    # the loss is float32: compare at float32's tolerance, not float64's (other CPUs round it otherwise)
    torch.testing.assert_close(weighted.noise_loss(predicted, noise, t), expected.float())
    assert snr[0] > 5_000 and snr[2] < 5.0  # the nearly clean level counts < 1/1000, the noisiest in full
    plain = module(None).noise_loss(predicted, noise, t)
    torch.testing.assert_close(plain, torch.nn.functional.mse_loss(predicted, noise))
    torch.testing.assert_close(module(1e12).noise_loss(predicted, noise, t), plain)  # gamma above every SNR
    with pytest.raises(ConfigError, match="snr_gamma must be > 0"):
        GenerateConfig(method="diffusion", snr_gamma=0.0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_text_sampler_is_seeded_and_reads_the_text(sampler):
    net = _tiny_net()
    text = torch.nn.functional.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    a = _sample(net, text, 2.0, seed=4, sampler=sampler)
    assert a.shape == (2, 1, 8, 8) and float(a.abs().max()) <= 1.0
    assert torch.equal(a, _sample(net, text, 2.0, seed=4, sampler=sampler))
    assert not torch.equal(a, _sample(net, text.flip(0), 2.0, seed=4, sampler=sampler))  # other prompts
    assert not torch.equal(a, _sample(net, text, 2.0, seed=5, sampler=sampler))


def test_guidance_one_is_the_text_only_path_and_guidance_mixes_the_null_prediction():
    net = _tiny_net()
    text = torch.nn.functional.normalize(torch.randn(2, 8, generator=torch.Generator().manual_seed(2)), dim=1)

    def by_hand(guidance):  # the reference: separate text and null passes, no batching
        scheduler = build_sampler("ddim", dict(build_train_scheduler(100).config))
        scheduler.set_timesteps(3)
        x = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            for t in scheduler.timesteps:
                eps = cond = net(x, t, text)
                if guidance != 1.0:
                    uncond = net(x, t, net.null_text(2))
                    eps = uncond + guidance * (cond - uncond)
                x = scheduler.step(eps, t, x).prev_sample
        return x.clamp(-1, 1)

    assert torch.equal(_sample(net, text, 1.0), by_hand(1.0))  # guidance 1: the conditional prediction alone
    torch.testing.assert_close(_sample(net, text, 3.0), by_hand(3.0), atol=1e-5, rtol=1e-5)  # one batch of 2B
    assert not torch.allclose(_sample(net, text, 1.0), _sample(net, text, 3.0))


def test_training_draws_each_image_one_of_its_own_captions():
    from omnivis.data.captions import caption_index
    from omnivis.tasks.generate.modules import TextDiffusionModule

    class Sample:
        def __init__(self, *captions):
            self.captions = captions

    texts, ids, counts = caption_index([Sample("a", "b"), Sample("c"), Sample("b", "d", "a")])
    assert texts == ["a", "b", "c", "d"]
    # padded by repeating the image's first caption: every entry of a row is one of its own
    assert ids.tolist() == [[0, 1, 0], [2, 2, 2], [1, 3, 0]] and counts.tolist() == [2, 1, 3]
    config = GenerateConfig(text=True, img_size=8, width=16, cfg_dropout=0.0)
    net = {"img_size": 8, "channels": 1, "width": 16, "num_classes": 0, "text_dim": 4,
           "scheduler": dict(build_train_scheduler(100).config)}
    table = torch.eye(4)  # caption k embeds as the k-th unit vector
    module = TextDiffusionModule(config, net, table, ids, counts)
    assert "text_table" not in module.state_dict() and "caption_ids" not in module.state_dict()
    torch.manual_seed(0)
    index = torch.tensor([0, 1, 2] * 20)
    drawn = module.batch_text(index).argmax(1)
    own = {0: {0, 1}, 1: {2}, 2: {1, 3, 0}}
    assert all(int(k) in own[int(i)] for i, k in zip(index, drawn))
    assert {int(k) for i, k in zip(index, drawn) if i == 2} == {0, 1, 3}  # 20 draws reach all three captions
    torch.manual_seed(0)
    assert torch.equal(module.batch_text(index).argmax(1), drawn)  # the step's reseeded RNG decides
    module.config = GenerateConfig(text=True, img_size=8, width=16, cfg_dropout=0.99)
    dropped = module.batch_text(index)
    null = (dropped == module.model.null).all(1)
    assert null.sum() > 40  # ~99% of 60 rows are the null text


# --- (b) end to end ----------------------------------------------------------------------------------

def test_text_bundle_samples_the_same_images_from_a_seed(text_bundle, text_gen, captions_csv):
    from omnivis.models.text import load_text_encoder

    a = text_gen.generate(4, prompt="a red circle", seed=3)
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, text_gen.generate(4, prompt="a red circle", seed=3))
    assert np.array_equal(a, GeneratorPredictor.from_dir(text_bundle).generate(4, prompt="a red circle", seed=3))
    assert not np.array_equal(a, text_gen.generate(4, prompt="a blue square", seed=3))
    assert not np.array_equal(a, text_gen.generate(4, prompt="a red circle", seed=4))
    both = text_gen.generate(2, prompt=["a red circle", "a blue square"], seed=3)  # one prompt per image
    assert both.shape == (2, 16, 16, 3)
    assert text_gen.interpolate(3, prompt="a green square", steps=2).shape == (3, 16, 16, 3)

    cfg = json.loads((text_bundle / "config.json").read_text())
    encoder = load_text_encoder(None)
    assert cfg["text"] is True and cfg["conditional"] is False and cfg["classes"] == []
    assert cfg["text_encoder"]["name"] == "all-MiniLM-L6-v2" and cfg["text_encoder"]["dim"] == encoder.dim == 384
    assert cfg["text_encoder"] == encoder.identity()
    assert cfg["net"]["text_dim"] == 384 and cfg["sampling"]["guidance"] == 2.0  # the text default
    captions = {line.split(",", 1)[1] for line in captions_csv.read_text().splitlines()[1:]}
    assert 1 <= len(cfg["example_prompts"]) <= 8 and set(cfg["example_prompts"]) <= captions
    assert cfg["captions"]["train_images"] == cfg["split"]["train_size"] == 19  # 24 images, 5 held out
    assert {k.split(".")[0] for k in text_gen.bundle.state_dict} == {"unet", "text_proj", "null"}
    # the same encoder named explicitly is accepted
    assert np.array_equal(a, GeneratorPredictor.from_dir(text_bundle, text_encoder="all-MiniLM-L6-v2")
                          .generate(4, prompt="a red circle", seed=3))


# --- (c) bad input -----------------------------------------------------------------------------------

def test_config_refuses_text_with_another_method_or_with_classes():
    with pytest.raises(ConfigError, match="method diffusion, not gan"):
        GenerateConfig(method="gan", text=True)
    with pytest.raises(ConfigError, match="exclude each other"):
        GenerateConfig(text=True, conditional=True)
    with pytest.raises(ConfigError, match="add --text"):
        GenerateConfig(text_encoder="all-MiniLM-L6-v2")


def test_prompts_are_checked(text_gen, class_bundle):
    with pytest.raises(ConfigError, match="text-conditioned: give --prompt"):
        text_gen.generate(2, seed=0)
    with pytest.raises(ConfigError, match="text-conditioned: give --prompt, not --class"):
        text_gen.generate(2, class_="red", prompt="a red circle")
    with pytest.raises(ConfigError, match="empty"):
        text_gen.generate(2, prompt="   ")
    with pytest.raises(ConfigError, match="one prompt or 3 prompts"):
        text_gen.generate(3, prompt=["a", "b"])
    with pytest.warns(OmnivisWarning, match="tokens"):
        long = text_gen.generate(1, prompt="a red circle " * 120, seed=0)
    assert long.shape == (1, 16, 16, 3)
    classes = GeneratorPredictor.from_dir(class_bundle)
    with pytest.raises(ConfigError, match="not text-conditioned"):
        classes.generate(2, class_="3", prompt="the digit three")
    with pytest.raises(ConfigError, match="not text-conditioned"):
        GeneratorPredictor.from_dir(class_bundle, text_encoder="all-MiniLM-L6-v2")


@pytest.mark.parametrize("edit,message", [
    (lambda enc: enc.update(probe_embedding=[-v for v in enc["probe_embedding"]]), "embeds text differently"),
    (lambda enc: enc.update(dim=383, probe_embedding=enc["probe_embedding"][:383]), "383-d"),
])
def test_a_bundle_recorded_with_another_encoder_is_refused_naming_both(tmp_path, text_bundle, edit, message):
    copy = tmp_path / "edited"
    shutil.copytree(text_bundle, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    cfg = json.loads((copy / "config.json").read_text())
    edit(cfg["text_encoder"])
    (copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match=message) as error:
        GeneratorPredictor.from_dir(copy)
    assert str(copy) in str(error.value) and str(error.value).count("all-MiniLM-L6-v2") >= 2  # recorded and given


# --- evaluation --------------------------------------------------------------------------------------

def test_eval_prompts_with_held_out_captions(tmp_path, text_bundle):
    from omnivis.tasks.classify import train_classifier
    from omnivis.tasks.generate.evaluate import evaluate_generator
    from tests.conftest import tiny_classify_config

    with pytest.raises(ConfigError, match="no reference classifier"):
        evaluate_generator(text_bundle, progress=False)
    reference = train_classifier(tiny_classify_config(trainer=dict(max_steps=3)), tmp_path / "ref")
    metrics = evaluate_generator(text_bundle, reference=reference, progress=False, num_samples=4,
                                 out_dir=tmp_path / "e")
    assert metrics["num_real"] == metrics["num_generated"] == 4 and np.isfinite(metrics["fid"])
    assert "class_accuracy" not in metrics and "text-conditioned" in metrics["note"]
    assert (tmp_path / "e" / "eval_report.html").exists()


# --- (d) the OpenAI endpoint -------------------------------------------------------------------------

def test_openai_endpoint_draws_the_prompt(text_bundle, text_gen, class_bundle):
    from fastapi.testclient import TestClient

    from omnivis.serve.app import create_app
    from omnivis.serve.runner import load_models

    models = load_models([f"t2i={text_bundle}", f"digits={class_bundle}"])
    with TestClient(create_app(models)) as client:
        answer = client.post("/v1/images/generations",
                             json={"prompt": "a red circle", "model": "t2i", "n": 2, "seed": 3})
        assert answer.status_code == 200, answer.text
        data = answer.json()["data"]
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"])))) for d in data]
        assert np.array_equal(np.stack(images), text_gen.generate(2, prompt="a red circle", seed=3))
        assert data[0]["revised_prompt"] == "a red circle" and answer.json()["size"] == "16x16"
        empty = client.post("/v1/images/generations", json={"prompt": " ", "model": "t2i"})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "prompt"
        # a class-conditional generator still takes its class from the prompt
        digits = client.post("/v1/images/generations", json={"prompt": "a 7", "model": "digits", "seed": 1})
        assert digits.status_code == 200, digits.text
        described = {m["name"]: m for m in client.get("/api/models").json()["models"]}
        assert described["t2i"]["text"] is True and described["t2i"]["example_prompts"]
        assert described["digits"]["text"] is False


def test_native_endpoint_takes_the_prompt(text_bundle, text_gen, class_bundle):
    from fastapi.testclient import TestClient

    from omnivis.serve.app import create_app
    from omnivis.serve.runner import load_models

    models = load_models([f"t2i={text_bundle}", f"digits={class_bundle}"])
    with TestClient(create_app(models)) as client:
        answer = client.post("/api/generate/t2i", json={"prompt": "a green square", "n": 2, "seed": 5})
        assert answer.status_code == 200, answer.text
        images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(png)))) for png in answer.json()["images"]]
        assert np.array_equal(np.stack(images), text_gen.generate(2, prompt="a green square", seed=5))
        missing = client.post("/api/generate/t2i", json={"n": 1})
        assert missing.status_code == 422 and "prompt" in missing.text
        wrong = client.post("/api/generate/digits", json={"prompt": "a seven"})
        assert wrong.status_code == 422 and "not text-conditioned" in wrong.text


def test_web_page_sends_the_typed_prompt(text_bundle, text_gen):
    from playwright.sync_api import expect

    from omnivis.serve.runner import load_models
    from tests.deploy.serving import live_server
    from tests.deploy.test_web_page import CHROMIUM_ARGS, _open

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); the web page test needs it")
    from playwright.sync_api import sync_playwright

    with live_server(load_models([f"t2i={text_bundle}"])) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page()
        _open(page, url)
        expect(page.locator("#prompt")).to_be_visible()
        assert page.locator("#class").is_hidden()
        page.fill("#prompt", "a blue circle")
        page.fill("#n", "2")
        page.fill("#seed", "4")
        page.click("#run")
        images = page.locator("img.generated")
        expect(images).to_have_count(2)
        page.wait_for_function("[...document.querySelectorAll('img.generated')].every(i => i.complete)")
        shown = [base64.b64decode(src.split(",", 1)[1]) for src in images.evaluate_all("els => els.map(i => i.src)")]
        drawn = np.stack([np.asarray(Image.open(io.BytesIO(png))) for png in shown])
        assert np.array_equal(drawn, text_gen.generate(2, prompt="a blue circle", seed=4))
        page.fill("#prompt", "  ")
        page.click("#run")
        expect(page.locator("#error")).to_contain_text("prompt")
        browser.close()


def test_export_writes_the_text_denoiser_and_its_null_text(tmp_path, text_bundle, text_gen):
    import onnxruntime as ort

    from omnivis.deploy.generator_export import export_generator

    report = export_generator(text_bundle, tmp_path / "t2i.onnx", opset=18)
    assert set(report["inputs"]) == {"sample", "timestep", "text"} and report["inputs"]["text"]["shape"] == ["batch", 384]
    assert all(row["max_abs_difference"] < 1e-3 for row in report["parity"])
    null = np.load(report["null_text"])
    assert np.array_equal(null, text_gen.model.null.detach().numpy())
    # one guided step by hand from the ONNX file equals the torch model's
    session = ort.InferenceSession(report["file"], providers=["CPUExecutionProvider"])
    sample = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
    text = np.stack([text_gen.encoder.encode(["a red circle"])[0].numpy(), null]).astype(np.float32)
    got = session.run(None, {"sample": sample, "timestep": np.array([10, 10]), "text": text})[0]
    with torch.no_grad():
        expected = text_gen.model(torch.from_numpy(sample), torch.tensor([10, 10]), torch.from_numpy(text)).numpy()
    assert np.abs(got - expected).max() < 1e-3


def test_repaint_refuses_a_text_bundle(text_gen):
    from omnivis.inference.repaint import repaint

    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    with pytest.raises(ConfigError, match="text-conditioned"):
        repaint(text_gen, np.zeros((16, 16, 3), np.uint8), mask, steps=2)

"""Image-text alignment: the contrastive loss, an end-to-end run on solid colours (an answer any working
aligner finds), zero-shot and search through the CLI, and the refusals (another encoder, bad labels,
a foreign index)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnivis.cli import app
from omnivis.data.transforms import AugmentConfig
from omnivis.engine.trainer import TrainerConfig
from omnivis.errors import BundleError, ConfigError, DataError
from omnivis.models.align import contrastive_loss
from omnivis.tasks.align import AlignConfig, train_align

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 60, 230)}
PHRASES = ("a {} image", "something {}", "all {}")


def solid(colour: str, seed: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.array(COLOURS[colour], dtype=np.float64)[None, None, :] + rng.normal(0, 10, (size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def write_solid_captions(root: Path, per_colour: int = 12, seed: int = 0) -> Path:
    """A ``path,caption`` CSV: solid noisy colour images, each with every phrasing of its colour."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for c, colour in enumerate(COLOURS):
        for k in range(per_colour):
            name = f"{colour}_{k}.png"
            Image.fromarray(solid(colour, seed * 1000 + c * 100 + k)).save(root / name)
            rows += [(name, phrase.format(colour)) for phrase in PHRASES]
    path = root / "captions.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def align_bundle(tmp_path_factory) -> Path:
    data = write_solid_captions(tmp_path_factory.mktemp("solid"))
    config = AlignConfig(data=str(data), model="omnivis_resnet_tiny", img_size=16, channels=3, batch_size=24,
                         lr=3e-3, val_fraction=0.25, augment=AugmentConfig(preset="none", hflip=False),
                         trainer=TrainerConfig(epochs=None, max_steps=60, progress=False, seed=0))
    return train_align(config, tmp_path_factory.mktemp("align") / "bundle")


def test_contrastive_loss_prefers_matched_pairs_and_shares_duplicate_captions():
    torch.manual_seed(0)
    texts = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    scale = torch.tensor(10.0)
    matched = contrastive_loss(texts, texts, torch.eye(4, dtype=torch.bool), scale)
    shuffled = contrastive_loss(texts[[1, 2, 3, 0]], texts, torch.eye(4, dtype=torch.bool), scale)
    assert matched < shuffled
    # two rows with the same caption: either image is a right answer, so the loss of a perfect match
    # is exactly that of the 3 distinct captions with the duplicate's mass split evenly
    dup = torch.cat([texts[:3], texts[:1]])
    dup_ids = torch.tensor([0, 1, 2, 0])
    same = dup_ids[:, None] == dup_ids[None, :]
    loss = contrastive_loss(dup, dup, same, scale)
    logits = scale * dup @ dup.T
    right = same.float()
    expected = -(right / right.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    assert math.isfinite(float(loss))


def test_alignment_learns_colours_and_records_its_encoder(align_bundle):
    header = json.loads((align_bundle / "config.json").read_text())
    metrics = json.loads((align_bundle / "metrics.json").read_text())
    assert header["task"] == "align" and header["text_encoder"]["name"] == "all-MiniLM-L6-v2"
    assert header["text_encoder"]["dim"] == 384 and len(header["text_encoder"]["probe_embedding"]) == 384
    assert (align_bundle / "retrieval.png").exists()
    logged = [row for row in csv.DictReader(open(align_bundle / "logs" / "metrics.csv")) if row.get("train/loss")]
    # a model that cannot tell the images apart scores exactly log(batch) (24 images); telling the
    # 3 colours apart reaches the targets' entropy, log(8): here the loss must sit near that floor
    last = float(logged[-1]["train/loss"])
    assert last < math.log(24) - 0.8, last
    # held-out images: each colour's caption finds an image of that colour first
    assert metrics["text_to_image_recall@1"] >= 0.9


def test_zeroshot_names_unseen_phrasings_of_the_colour(align_bundle):
    from omnivis.inference.align import AlignPredictor

    predictor = AlignPredictor.from_dir(align_bundle)
    labels = ["a red square", "a green square", "a blue square"]  # phrasings never seen in training
    images = [solid(colour, 5000 + i) for i, colour in enumerate(COLOURS)]
    results = predictor.predict(images, top_k=3, labels=labels)
    assert [r["label"] for r in results] == labels
    probs = predictor.zeroshot_proba(images, labels)
    assert torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    # the matched pair scores above every mismatched one
    sims = predictor.embed_images(images) @ predictor.embed_texts(labels).T
    mismatched = sims.masked_fill(torch.eye(3, dtype=torch.bool), -2.0)
    assert (sims.diag() > mismatched.max(dim=1).values).all()


def test_zeroshot_and_search_commands(align_bundle, tmp_path):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i, colour in enumerate(COLOURS):
        Image.fromarray(solid(colour, 7000 + i)).save(folder / f"{colour}.png")
    runner = CliRunner()
    result = runner.invoke(app, ["zeroshot", str(align_bundle), str(folder), "--labels", "blue,green,red", "--json"])
    assert result.exit_code == 0, result.output
    answers = {Path(p["image"]).stem: p["label"] for p in json.loads(result.output)["predictions"]}
    assert answers == {"red": "red", "green": "green", "blue": "blue"}
    index = tmp_path / "index"
    result = runner.invoke(app, ["search", str(align_bundle), "something blue", "--images", str(folder),
                                 "--index", str(index), "--top-k", "2", "--json", "--out", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.output)["searches"][0]["results"][0]["image"]).stem == "blue"
    assert (tmp_path / "s.png").exists()
    result = runner.invoke(app, ["search", str(align_bundle), "all green", "--index", str(index), "--json"])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.output)["searches"][0]["results"][0]["image"]).stem == "green"


def test_refusals(align_bundle, tmp_path):
    from omnivis.inference.align import AlignPredictor, parse_labels
    from omnivis.inference.text_search import ImageIndex, load_index, save_index

    with pytest.raises(ConfigError, match="twice"):
        parse_labels("a,b,a")
    with pytest.raises(ConfigError, match="give the labels"):
        parse_labels(" , ")
    predictor = AlignPredictor.from_dir(align_bundle)
    with pytest.raises(ConfigError, match="empty"):
        predictor.predict([solid("red", 1)], labels=["red", "  "])
    with pytest.raises(ConfigError, match="does not exist"):
        AlignPredictor.from_dir(align_bundle, text_encoder="./no/such/encoder").text_encoder
    # a bundle recorded with another encoder: refused, naming both
    other = tmp_path / "other"
    other.mkdir()
    for f in align_bundle.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    header = json.loads((other / "config.json").read_text())
    header["text_encoder"]["probe_embedding"] = [0.0] * 383 + [1.0]
    header["text_encoder"]["name"] = "some-other-encoder"
    (other / "config.json").write_text(json.dumps(header))
    with pytest.raises(BundleError, match="some-other-encoder.*all-MiniLM-L6-v2"):
        AlignPredictor.from_dir(other, text_encoder="all-MiniLM-L6-v2").text_encoder
    # an index is only searched by the model that made it
    index = save_index(ImageIndex(torch.zeros(1, 384), [tmp_path / "x.png"], tmp_path), tmp_path / "idx", predictor)
    meta = json.loads((index / "index.json").read_text())
    meta["fingerprint"] = [1.0] + [0.0] * 383
    (index / "index.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="rebuild"):
        load_index(index, predictor)
    (index / "index.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="unreadable search index"):
        load_index(index, predictor)


def test_eval_command_scores_the_bundle(align_bundle, tmp_path):
    result = CliRunner().invoke(app, ["eval", str(align_bundle), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["images"] == 9 and 0.0 <= metrics["image_to_text_recall@5"] <= 1.0

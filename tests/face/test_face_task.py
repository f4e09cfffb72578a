"""Face recognition end to end: train, store the threshold, enrol, identify, verify, evaluate, calibrate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from omnivis.cli import app
from omnivis.inference.face import FacePredictor
from omnivis.metrics.face import templates
from tests.face.conftest import person_photos, tiny_face_config, write_people

pytestmark = pytest.mark.slow
runner = CliRunner()


def test_arcface_separates_the_people_it_learned_with_a_wide_margin(face_bundle):
    predictor = FacePredictor.from_dir(face_bundle)

    def photos_of_training_people(seed: int) -> tuple[torch.Tensor, np.ndarray]:
        photos = [photo for person in range(6) for photo in person_photos(person, 4, seed=seed + person)]
        return predictor.embed(photos), np.repeat(np.arange(6), 4)

    gallery, gallery_people = photos_of_training_people(100)
    probes, probe_people = photos_of_training_people(777)  # fresh photos: another noise and shift draw
    temps, _ = templates(gallery, gallery_people)
    sims = (probes @ temps.T).numpy()
    own = sims[np.arange(len(probe_people)), probe_people]
    best_other = np.where(np.eye(6, dtype=bool)[probe_people], -np.inf, sims).max(axis=1)
    margin = own - best_other  # cosine similarity to one's own template minus the closest other person's
    assert margin.min() > 0.1 and np.median(margin) > 0.5, np.round(margin, 2)


def test_bundle_records_the_setting_and_a_calibrated_threshold(face_bundle):
    config = json.loads((face_bundle / "config.json").read_text())
    assert config["task"] == "face" and config["embedding_size"] == 32
    assert config["loss"]["name"] == "arcface" and config["normalization"]["embedding"] == "l2"
    assert config["crop"]["size"] == 32 and config["split"]["test_identities"] == ["p06", "p07"]
    threshold = config["threshold"]
    assert threshold["far"] == 0.01 and -1.0 <= threshold["value"] <= 1.0
    metrics = json.loads((face_bundle / "metrics.json").read_text())
    assert 0.0 <= metrics["eer"] <= 1.0 and 0.0 <= metrics["auc"] <= 1.0
    assert (face_bundle / "roc.png").stat().st_size > 1000 and (face_bundle / "face_report.html").exists()


def test_enroll_then_identify_names_the_right_people(face_bundle, tmp_path):
    gallery = write_people(tmp_path / "gallery", range(6), photos=3, seed=3)
    result = runner.invoke(app, ["face", "enroll", str(face_bundle), "--gallery", str(gallery), "--out",
                                 str(tmp_path / "index"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["people"] == 6
    queries = tmp_path / "queries"
    queries.mkdir()
    for person in range(6):
        Image.fromarray(person_photos(person, 1, seed=55 + person)[0]).save(queries / f"p{person:02d}.png")
    result = runner.invoke(app, ["face", "identify", str(face_bundle), str(tmp_path / "index"), str(queries),
                                 "--json", "--top-k", "2"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.output)
    named = {a["image"].rsplit("/", 1)[-1]: a["faces"][0]["top_k"][0]["identity"] for a in answers}
    assert named == {f"p{p:02d}.png": f"p{p:02d}" for p in range(6)}
    assert all(a["faces"][0]["far"] == 0.01 for a in answers)
    # enrolling into an existing index without --add is refused (no lost gallery)
    again = runner.invoke(app, ["face", "enroll", str(face_bundle), "--gallery", str(gallery), "--out",
                                str(tmp_path / "index")])
    assert again.exit_code != 0 and "already holds an index" in str(again.exception)


def test_verify_two_photos_and_a_pairs_file(face_bundle, tmp_path):
    root = write_people(tmp_path / "people", range(2), photos=2, seed=9)
    result = runner.invoke(app, ["face", "verify", str(face_bundle), str(root / "p00" / "0.png"),
                                 str(root / "p00" / "1.png"), "--json"])
    assert result.exit_code == 0, result.output
    [decision] = json.loads(result.output)
    assert set(decision) >= {"same", "score", "threshold", "far"}
    (tmp_path / "pairs.txt").write_text("p00 1 2\np00 1 p01 2\n")
    result = runner.invoke(app, ["face", "verify", str(face_bundle), "--pairs", str(tmp_path / "pairs.txt"),
                                 "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    decisions = json.loads(result.output)
    assert [d["labelled_same"] for d in decisions] == [True, False]
    assert decisions[0]["score"] > decisions[1]["score"]


def test_eval_and_calibrate_on_a_folder_with_groups(face_bundle, people_folder, tmp_path):
    import shutil

    face_bundle = shutil.copytree(face_bundle, tmp_path / "bundle")  # calibrate rewrites the threshold: not the shared one
    groups = tmp_path / "groups.csv"
    groups.write_text("identity,group\n" + "".join(f"p{p:02d},{'a' if p % 2 else 'b'}\n" for p in range(8)))
    result = runner.invoke(app, ["eval", str(face_bundle), "--data", str(people_folder), "--split", "all", "--out",
                                 str(tmp_path / "eval"), "--groups", str(groups), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)
    assert metrics["images"] == 64 and metrics["genuine_pairs"] == 8 * 28
    assert set(metrics["per_group"]["groups"]) == {"a", "b"} and "auc" in metrics["per_group"]["largest_gap"]
    assert (tmp_path / "eval" / "roc.png").exists() and (tmp_path / "eval" / "hardest_pairs.png").exists()
    result = runner.invoke(app, ["face", "calibrate", str(face_bundle), "--data", str(people_folder), "--split", "all",
                                 "--far", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    calibrated = json.loads(result.output)
    assert calibrated["far_measured"] <= 0.05
    stored = json.loads((face_bundle / "config.json").read_text())["threshold"]
    assert stored["value"] == calibrated["threshold"] and stored["far"] == 0.05


@pytest.mark.parametrize("loss", ["cosface", "softmax"])
def test_other_losses_train_and_embed(loss, people_folder, tmp_path):
    from omnivis.tasks.face import train_face

    bundle = train_face(tiny_face_config(str(people_folder), loss=loss, trainer={"max_steps": 4}), tmp_path / loss)
    emb = FacePredictor.from_dir(bundle).embed(person_photos(0, 3, seed=1))
    assert emb.shape == (3, 32) and np.allclose(emb.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert json.loads((bundle / "config.json").read_text())["loss"]["name"] == loss

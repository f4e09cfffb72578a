"""Galleries: saved without pickle, refused when made by another model or changed, enrolment rules."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omnivis.errors import BundleError, DataError
from omnivis.inference.face import FacePredictor, bundle_id
from omnivis.inference.face_index import enroll, identify, load_index
from tests.face.conftest import save_untrained_face_bundle, write_people


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    return save_untrained_face_bundle(tmp_path_factory.mktemp("bundle") / "face")


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    return write_people(tmp_path_factory.mktemp("gallery"), range(3), photos=2)


def test_index_round_trip_and_identify_its_own_photos(untrained, gallery, tmp_path):
    predictor = FacePredictor.from_dir(untrained)
    index = enroll(predictor, gallery)
    index.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "index.json").read_text())
    assert manifest["setting"]["bundle_id"] == bundle_id(untrained) and manifest["count"] == 6
    loaded = load_index(tmp_path / "index", predictor.setting())
    assert torch.equal(loaded.embeddings, index.embeddings) and loaded.names == index.names
    # known answer: with one photo per person, a person's template is that photo's embedding, so the photo
    # itself is found with similarity 1
    single = enroll(predictor, write_people(tmp_path / "single", range(3), photos=1))
    [result] = identify(predictor, single, [tmp_path / "single" / "p01" / "0.png"], top_k=3)
    face = result["faces"][0]
    assert face["identity"] == "p01" and face["score"] == pytest.approx(1.0, abs=1e-5)
    assert face["threshold"] == 0.5 and face["far"] == 0.01 and len(face["top_k"]) == 3


def test_index_from_another_model_is_refused_naming_both(untrained, gallery, tmp_path):
    index = enroll(FacePredictor.from_dir(untrained), gallery)
    index.save(tmp_path / "index")
    other = FacePredictor.from_dir(save_untrained_face_bundle(tmp_path / "other", seed=1))
    with pytest.raises(BundleError, match=f"enrolled by model {bundle_id(untrained)}, but this bundle is {other.id}"):
        load_index(tmp_path / "index", other.setting())


def test_index_with_another_setting_is_refused(untrained, gallery, tmp_path):
    predictor = FacePredictor.from_dir(untrained)
    enroll(predictor, gallery).save(tmp_path / "index")
    setting = {**predictor.setting(), "crop": {**predictor.setting()["crop"], "margin": 0.5}}
    with pytest.raises(BundleError, match="enrolled with crop="):
        load_index(tmp_path / "index", setting)


def test_tampered_index_is_refused(untrained, gallery, tmp_path):
    predictor = FacePredictor.from_dir(untrained)
    enroll(predictor, gallery).save(tmp_path / "index")
    weights = tmp_path / "index" / "index.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one embedding value changed
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum does not match"):
        load_index(tmp_path / "index")
    manifest_path = tmp_path / "index" / "index.json"
    enroll(predictor, gallery).save(tmp_path / "index")
    manifest = json.loads(manifest_path.read_text())
    manifest["count"] = 7
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"shape \(6, 16\) does not match the manifest \(7 photos"):
        load_index(tmp_path / "index")
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(BundleError, match="truncated or not a face index"):
        load_index(tmp_path / "index")


def test_pickle_is_never_read(untrained, gallery, tmp_path):
    import pickle

    predictor = FacePredictor.from_dir(untrained)
    enroll(predictor, gallery).save(tmp_path / "index")
    (tmp_path / "index" / "index.safetensors").write_bytes(pickle.dumps({"embeddings": np.zeros((6, 16))}))
    with pytest.raises(BundleError, match="truncated or not a face index"):
        load_index(tmp_path / "index")


def test_enrolment_rules(untrained, gallery, tmp_path):
    predictor = FacePredictor.from_dir(untrained)
    index = enroll(predictor, gallery)
    with pytest.raises(DataError, match="'p00' is already enrolled"):
        enroll(predictor, gallery, index)
    more = write_people(tmp_path / "more", range(3, 5), photos=1)  # people with one photo each
    enroll(predictor, more, index)
    assert index.people == ["p00", "p01", "p02", "p03", "p04"] and len(index.names) == 8
    enroll(predictor, write_people(tmp_path / "again", range(0, 1), photos=3), index, replace=True)
    assert index.names.count("p00") == 3 and len(index.names) == 9


def test_identify_without_a_face_says_so(untrained, gallery):
    predictor = FacePredictor.from_dir(untrained)
    index = enroll(predictor, gallery)

    class NoFaces:
        def detect(self, images):
            return [[] for _ in images]

    [result] = identify(predictor, index, [np.zeros((40, 40), np.uint8)], detector=NoFaces())
    assert result["faces"] == [] and result["summary"] == "no face found"


def test_several_faces_are_each_named_in_the_detector_order(untrained, gallery):
    from omnivis.inference.face import Box

    predictor = FacePredictor.from_dir(untrained)
    index = enroll(predictor, gallery)

    class TwoFaces:
        def detect(self, images):
            return [[Box(0, 0, 20, 20), Box(20, 20, 40, 40)] for _ in images]

    [result] = identify(predictor, index, [np.zeros((40, 40), np.uint8)], detector=TwoFaces())
    assert [f["box"] for f in result["faces"]] == [[0, 0, 20, 20], [20, 20, 40, 40]]


def test_flip_test_embeds_a_face_and_its_mirror_alike(tmp_path):
    predictor = FacePredictor.from_dir(save_untrained_face_bundle(tmp_path / "flip", flip_test=True))
    photo = np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)
    both = predictor.embed([photo, photo[:, ::-1].copy()])
    assert torch.allclose(both[0], both[1], atol=1e-5)
    assert predictor.setting()["flip_test"] is True
    plain = FacePredictor.from_dir(save_untrained_face_bundle(tmp_path / "plain"))
    assert not torch.allclose(*plain.embed([photo, photo[:, ::-1].copy()]), atol=1e-3)

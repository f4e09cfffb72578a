"""Tiny trained bundles shared by the server tests (each trains in a few seconds)."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_classify_config


@pytest.fixture(scope="package")
def digits_bundle(tmp_path_factory):
    from omnivis.tasks.classify import train_classifier

    return train_classifier(tiny_classify_config(), tmp_path_factory.mktemp("serve") / "digits")


@pytest.fixture(scope="package")
def generator_bundle(tmp_path_factory):
    from omnivis.tasks.generate import train_generator
    from tests.tasks.test_generate import tiny

    return train_generator(tiny("diffusion", conditional=True), tmp_path_factory.mktemp("serve") / "gen")


@pytest.fixture(scope="package")
def shapes_bundle(tmp_path_factory):
    from omnivis.tasks.segment import train_segmenter
    from tests.tasks.test_segment import tiny_segment_config

    return train_segmenter(tiny_segment_config(), tmp_path_factory.mktemp("serve") / "shapes")


@pytest.fixture(scope="package")
def detector_bundle(tmp_path_factory):
    from omnivis.tasks.detect import train_detector
    from tests.tasks.test_detect import tiny_detect_config

    return train_detector(tiny_detect_config(), tmp_path_factory.mktemp("serve") / "det")

"""``omnivis audit membership`` and the private-training options, as a user runs them."""

from __future__ import annotations

import json

import torch

from omnivis.bundle import save_bundle
from tests.tasks.test_private import untrained_bundle
from tests.test_cli import omnivis


def test_train_classify_help_lists_the_privacy_options():
    out = omnivis("train", "classify", "--help").stdout
    for option in ("--dp-epsilon", "--dp-delta", "--dp-max-grad-norm"):
        assert option in out
    assert "--dp-epsilon" not in omnivis("distill", "--help").stdout  # a student of a public teacher is not private


def test_audit_membership_json_and_help(tmp_path):
    assert "--data" in omnivis("audit", "membership", "--help").stdout
    bundle = untrained_bundle(tmp_path / "untrained")
    result = omnivis("audit", "membership", str(bundle), "--out", str(tmp_path / "audit"), "--json")
    metrics = json.loads(result.stdout)
    assert 0.35 <= metrics["auc"] <= 0.65 and metrics["members"] == metrics["nonmembers"]
    assert (tmp_path / "audit" / "membership.json").exists() and (tmp_path / "audit" / "membership_roc.png").exists()


def test_audit_membership_of_another_task_is_one_line(tmp_path):
    other = save_bundle(tmp_path / "detector", {"w": torch.zeros(1)}, {"task": "detect"})
    result = omnivis("audit", "membership", str(other), check=False)
    assert result.returncode == 2
    assert "'detect' bundle" in result.stderr and "Traceback" not in result.stderr

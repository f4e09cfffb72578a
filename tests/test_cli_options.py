"""The train, pretrain and distill commands take their options from the config dataclasses.

Every option's default is checked against the dataclass field's default and every field against
an option; ``--config`` files and command-line overrides are checked in-process with the training
function replaced, so nothing trains here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omnivis.cli import app
from omnivis.commands.docs import config_commands
from omnivis.commands.options import ALIASES, ConfigCommand, parse_attributes
from omnivis.errors import ConfigError

TRAIN_COMMANDS = {"train classify", "train detect", "train segment", "train multitask", "train generate", "train face",
                  "train edit", "train align", "pretrain",
                  "distill"}

# The option names each command had before its options came from the configs: all still work.
EARLIER_NAMES = {
    "train classify": "data out model img-size channels epochs max-steps batch-size lr weight-decay label-smoothing "
                      "val-fraction manifest augment hflip no-hflip rotation color-jitter scale-min mixup cutmix "
                      "init-from freeze-backbone unfreeze-after layer-decay resume accelerator devices strategy "
                      "num-nodes precision seed deterministic checkpoint-every patience workers strict progress "
                      "no-progress json",
    "pretrain": "method data out model img-size channels epochs max-steps max-images batch-size lr weight-decay hflip "
                "no-hflip crop-scale temperature momentum local-crops mask-ratio resume accelerator devices strategy "
                "num-nodes precision seed checkpoint-every workers strict progress no-progress json",
    "distill": "teacher student out data epochs max-steps batch-size lr temperature alpha feature-weight val-fraction "
               "augment hflip no-hflip rotation scale-min resume accelerator devices strategy num-nodes precision "
               "seed checkpoint-every workers progress no-progress json",
    "train detect": "data images out arch model img-size epochs max-steps batch-size lr weight-decay num-train "
                    "num-test val-fraction score-threshold fpn-channels hflip no-hflip scale-min photometric "
                    "init-from resume accelerator devices strategy num-nodes precision seed deterministic "
                    "checkpoint-every patience workers strict progress no-progress json",
    "train segment": "out kind data arch model img-size channels epochs max-steps batch-size lr weight-decay "
                     "decoder-width dice-weight val-fraction train-images val-images train-seed val-seed hflip "
                     "no-hflip scale-min color-jitter init-from resume accelerator devices strategy num-nodes "
                     "precision seed deterministic checkpoint-every patience workers strict progress no-progress json",
    "train multitask": "out data images labels val-fraction strict tasks weighting cls-weight seg-weight det-weight "
                       "seg-label-fraction cls-label-fraction det-label-fraction arch model img-size channels epochs "
                       "max-steps batch-size lr weight-decay decoder-width fpn-channels score-threshold train-images "
                       "val-images train-seed val-seed init-from resume accelerator devices strategy num-nodes "
                       "precision seed checkpoint-every workers progress no-progress json",
    "train face": "data out model img-size channels test-identities test-fraction embedding-size loss margin scale "
                  "crop-margin flip-test no-flip-test init-from epochs max-steps batch-size lr hflip no-hflip resume "
                  "seed workers progress no-progress json",  # the names docs/face.md used when it was written
    "train align": "data images out model img-size channels init-from text-encoder epochs max-steps batch-size lr "
                   "val-fraction resume seed workers progress no-progress json",  # the names docs/multimodal.md uses
    "train edit": "op data test-data out scale noise sigma masks arch width blocks crop-size tile epochs max-steps "
                  "batch-size lr resume seed workers progress no-progress json",  # the names docs/edit.md uses
    "train generate": "method data out img-size channels conditional width latent-dim kl-weight codebook-size "
                      "vq-bundle cfg-dropout ema-decay sampler sample-steps guidance reference val-fraction epochs "
                      "max-steps batch-size lr hflip resume accelerator devices strategy num-nodes precision seed "
                      "checkpoint-every workers progress no-progress json",
}


def field_defaults(cls: type) -> dict[str, object]:
    """Dotted field path -> default, read straight off the dataclasses (nested instances included)."""
    found: dict[str, object] = {}

    def walk(klass: type, instance: object | None, prefix: str) -> None:
        for f in dataclasses.fields(klass):
            if not f.init:
                continue
            if instance is not None:
                value = getattr(instance, f.name)
            elif f.default is not dataclasses.MISSING:
                value = f.default
            else:
                value = f.default_factory()
            if dataclasses.is_dataclass(value):
                walk(type(value), value, f"{prefix}{f.name}.")
            else:
                found[prefix + f.name] = value

    walk(cls, None, "")
    return found


@pytest.fixture(scope="module")
def commands() -> dict[str, ConfigCommand]:
    return config_commands()


def test_every_train_command_takes_its_options_from_a_config(commands):
    assert set(commands) == TRAIN_COMMANDS
    from omnivis.commands.docs import commands as all_commands

    assert all(isinstance(c, ConfigCommand) for name, c in all_commands() if name.startswith("train "))


@pytest.mark.parametrize("name", sorted(TRAIN_COMMANDS))
def test_options_and_config_fields_agree(commands, name):
    command = commands[name]
    defaults = field_defaults(command.config_class())
    options = {option.key: option for option in command.config_options()}
    params = {param.name: param for param in command.params}
    # every field has an option, except the few a command names with the reason
    assert set(defaults) - set(options) == set(command.spec.exclude), name
    for key, option in options.items():
        param = params[option.dest]
        assert option.to_config(param.default) == defaults[key], f"{name} --{option.name}"
        assert type(option.to_config(param.default)) is type(defaults[key]), f"{name} --{option.name}"
        assert option.help, f"{name}: {key} has no entry in its class docstring's Attributes"
        expected = command.spec.aliases.get(key) or ALIASES.get(key) or key.rsplit(".", 1)[-1].replace("_", "-")
        assert option.name == expected
        spelled = [*param.opts, *param.secondary_opts]
        assert spelled == ([f"--{expected}", f"--no-{expected}"] if option.kind is bool else [f"--{expected}"])


@pytest.mark.parametrize("name", sorted(TRAIN_COMMANDS))
def test_the_earlier_option_names_still_work(commands, name):
    spelled = {opt.lstrip("-") for param in commands[name].params for opt in [*param.opts, *param.secondary_opts]}
    assert set(EARLIER_NAMES[name].split()) <= spelled


def test_the_benchmark_defaults_live_in_the_configs(commands):
    """Where the command line's defaults were once different, BENCHMARKS.md and docs/ used the command's."""
    epochs = {name: field_defaults(commands[name].config_class())["trainer.epochs"] for name in commands}
    assert epochs["pretrain"] == 20 and epochs["train multitask"] == 12
    # classify, detect and segment size their steps by the data (tasks/budget.py); the benchmarks use that
    assert epochs["train classify"] is None and epochs["train detect"] is None and epochs["train segment"] is None
    distill = field_defaults(commands["distill"].config_class())
    assert (distill["model"], distill["lr"], distill["val_fraction"]) == ("omnivis_resnet_micro", 3e-3, 0.3)


def test_help_imports_neither_torch_nor_lightning():
    code = ("import sys; from typer.testing import CliRunner; from omnivis.cli import app; "
            "r = [CliRunner().invoke(app, a) for a in (['--help'], ['train', '--help'])]; "
            "assert all(x.exit_code == 0 for x in r), [x.output for x in r]; "
            "print(sorted(m for m in ('torch', 'lightning', 'timm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_parse_attributes_reads_groups_and_continuations():
    doc = """A config.

    Attributes:
        a: the first
            line and its continuation.
        b, c: shared (with: a colon).
        d (int): typed.

    Raises:
        e: not an attribute.
    """
    assert parse_attributes(doc) == {"a": "the first line and its continuation.", "b": "shared (with: a colon).",
                                     "c": "shared (with: a colon).", "d": "typed."}


# --- the config a command runs with -------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch):
    """Replace every training function by one that records the config and writes empty metrics."""
    configs: list = []

    def fake(config, out, resume=False):
        configs.append(config)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text("{}")
        return Path(out)

    import omnivis.tasks.classify as classify

    monkeypatch.setattr(classify, "train_classifier", fake)
    return configs


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_config_file_then_command_line(tmp_path, captured):
    path = tmp_path / "digits.yaml"
    path.write_text("channels: 1\nlr: 3e-3\naugment: {hflip: false, rotation: 10}\ntrainer: {epochs: 7, max_steps: 5}\n")
    result = run("train", "classify", "--config", str(path), "--max-steps", "3", "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    config = captured[0]
    assert config.channels == 1 and config.lr == 3e-3  # YAML reads 3e-3 as a string: it is taken as the number
    assert config.augment.hflip is False and config.augment.rotation == 10.0
    assert config.augment.preset == "light" and config.img_size is None  # left out: the defaults (read off the data)
    assert config.trainer.epochs == 7 and config.trainer.max_steps == 3  # the command line wins over the file
    assert config.trainer.progress is False  # --json
    assert json.loads(result.stdout) == {"bundle": str(tmp_path / "r")}


def test_run_config_json_round_trips(tmp_path, captured):
    from omnivis.config import config_to_dict
    from omnivis.data.transforms import AugmentConfig
    from omnivis.engine.trainer import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig

    original = ClassifyConfig(channels=1, img_size=16, dropout=0.1, augment=AugmentConfig(hflip=False, mixup=0.2),
                              trainer=TrainerConfig(epochs=3, seed=4, progress=False))
    path = tmp_path / "run_config.json"
    path.write_text(json.dumps(config_to_dict(original)))
    assert run("train", "classify", "--config", str(path), "--out", str(tmp_path / "r")).exit_code == 0
    assert captured[0] == original


def test_plain_options_give_the_dataclass_defaults_plus_the_given(tmp_path, captured):
    from omnivis.tasks.classify import ClassifyConfig

    assert run("train", "classify", "--warmup-epochs", "2", "--no-hflip", "--out", str(tmp_path / "r")).exit_code == 0
    expected = ClassifyConfig(warmup_epochs=2.0)
    expected.augment.hflip = False
    assert captured[0] == expected


@pytest.mark.parametrize("text, message", [
    ("trainer: {epoch: 3}\n", "trainer: unknown key 'epoch'; did you mean 'epochs'"),
    ("epochs: 3\n", "unknown key 'epochs'; did you mean 'epochs' under 'trainer' (trainer.epochs)"),
    ("img_szie: 3\n", "unknown key 'img_szie'; did you mean 'img_size'"),
    ("trainer: {epochs: ten}\n", "trainer.epochs must be an integer or null, got 'ten'"),
    ("- 1\n", "expected a mapping of config fields"),
])
def test_config_file_mistakes_are_one_line_errors(tmp_path, captured, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run("train", "classify", "--config", str(path), "--out", str(tmp_path / "r"))
    assert isinstance(result.exception, ConfigError) and message in str(result.exception)
    assert not captured


def test_config_file_must_exist_and_not_go_with_resume(tmp_path, captured):
    result = run("train", "classify", "--config", str(tmp_path / "none.json"), "--out", str(tmp_path / "r"))
    assert isinstance(result.exception, ConfigError) and "config file not found" in str(result.exception)
    (tmp_path / "c.json").write_text("{}")
    result = run("train", "classify", "--config", str(tmp_path / "c.json"), "--resume", "--out", str(tmp_path / "r"))
    assert isinstance(result.exception, ConfigError) and "--resume" in str(result.exception)


def test_resume_reads_the_run_config_and_names_what_it_ignores(tmp_path, captured):
    from omnivis.config import config_to_dict
    from omnivis.engine.config import TrainerConfig
    from omnivis.tasks.classify import ClassifyConfig

    out = tmp_path / "r"
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps(config_to_dict(ClassifyConfig(channels=1, trainer=TrainerConfig(epochs=10)))))
    result = run("train", "classify", "--out", str(out), "--resume", "--epochs", "99", "--no-progress")
    assert result.exit_code == 0, result.output
    assert captured[0].channels == 1 and captured[0].trainer.epochs == 10 and captured[0].trainer.progress is False
    assert "ignoring --epochs" in result.output


def test_distill_needs_a_teacher(tmp_path):
    result = run("distill", "--out", str(tmp_path / "s"))
    assert isinstance(result.exception, ConfigError) and "missing option --teacher" in str(result.exception)


def test_segment_instance_fills_a_detect_config(tmp_path, monkeypatch):
    import omnivis.tasks.detect as detect

    configs = []

    def fake(config, out, resume=False):
        configs.append(config)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(detect, "train_detector", fake)
    result = run("train", "segment", "--kind", "instance", "--batch-size", "4", "--no-hflip", "--out", str(tmp_path / "a"))
    assert result.exit_code == 0, result.output
    config = configs[0]
    assert isinstance(config, detect.DetectConfig) and config.arch == "maskrcnn"
    assert config.trainer.epochs is None and config.img_size is None  # segment's defaults (from the data) carry over
    assert config.channels == 3  # not given: the detector's own (RGB)
    assert config.batch_size == 4 and config.hflip is False  # given: mapped
    assert config.lr == detect.DetectConfig().lr and config.scale_min == detect.DetectConfig().scale_min  # not given
    result = run("train", "segment", "--kind", "instance", "--decoder-width", "32", "--out", str(tmp_path / "b"))
    assert isinstance(result.exception, ConfigError) and "--decoder-width do not apply" in str(result.exception)


def test_multitask_tasks_is_a_comma_separated_option(tmp_path, monkeypatch):
    import omnivis.tasks.multitask as multitask

    configs = []

    def fake(config, out, resume=False):
        configs.append(config)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(multitask, "train_multitask", fake)
    assert run("train", "multitask", "--tasks", "detect,classify", "--out", str(tmp_path / "m")).exit_code == 0
    assert configs[0].tasks == ("classify", "detect") and configs[0].trainer.epochs == 12


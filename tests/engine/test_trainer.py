"""How ``build_trainer`` picks Lightning settings from a ``TrainerConfig``."""

from __future__ import annotations

from omnivis.engine.trainer import TrainerConfig, ddp_strategy_for_partial_graphs


def test_partial_graph_tasks_get_ddp_that_looks_for_unused_parameters():
    def strategy(**kwargs) -> str:
        return ddp_strategy_for_partial_graphs(TrainerConfig(accelerator="cpu", **kwargs))

    assert strategy(strategy="ddp") == "ddp_find_unused_parameters_true"
    assert strategy(strategy="ddp_spawn") == "ddp_spawn_find_unused_parameters_true"
    assert strategy(strategy="auto", devices="2") == "ddp_find_unused_parameters_true"
    assert strategy(strategy="auto", devices="1", num_nodes=2) == "ddp_find_unused_parameters_true"
    assert strategy(strategy="auto", devices="1") == "auto"
    assert strategy(strategy="auto") == "auto"  # devices auto on a CPU: one process
    assert strategy(strategy="fsdp", devices="2") == "fsdp"


def test_the_trainer_profiles_nothing_at_no_cost(tmp_path):
    from omnivis.engine.trainer import NoProfiler, build_trainer

    trainer = build_trainer(TrainerConfig(accelerator="cpu", epochs=1, progress=False), tmp_path)
    assert isinstance(trainer.profiler, NoProfiler)
    with trainer.profiler.profile("[Callback]x.on_train_batch_start") as entered:
        assert entered is None
    assert trainer.profiler.profile("a") is trainer.profiler.profile("b")  # one shared no-op, nothing built per call

"""Uni-Mlip through the one training step: a term the network cannot feed is refused before the first
forward (typed error naming the term and the key); the SimCLR warm-up switches I2I on (and with it the
strong views) at the iteration the BatchNorm statistics freeze; the learnable tau trains."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from monai_medunic.engines.batchnorm import FreezeBatchNormStatistics
from monai_medunic.engines.optim import trainable_parameters
from monai_medunic.engines.step import TrainStep
from monai_medunic.engines.warmup import ObjectiveTermWarmup
from monai_medunic.errors import ConfigurationError, MissingOutputError
from monai_medunic.losses import UniMlipLoss, build_objective
from monai_medunic.networks import UniMlip

B, L, SIZE = 4, 10, 32
INPUTS = {"images": "image", "input_ids": "input_ids", "attention_mask": "attention_mask",
          "images_strong_a": "image_strong_a", "images_strong_b": "image_strong_b",
          "mlm_input_ids": "mlm_input_ids", "mlm_token_labels": "mlm_labels"}
OPTIONAL = ["images_strong_a", "images_strong_b", "mlm_input_ids", "mlm_token_labels"]


def _loader(n: int = 4, strong: bool = True) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n):
        x = torch.rand(B, 1, SIZE, SIZE, generator=g)
        ids = torch.randint(5, 100, (B, L), generator=g)
        mlm, labels = ids.clone(), torch.full_like(ids, -100)
        mlm[:, 2], labels[:, 2] = 4, ids[:, 2]
        batch = {"image": x, "input_ids": ids, "attention_mask": torch.ones_like(ids), "mlm_input_ids": mlm, "mlm_labels": labels}
        if strong:
            batch.update(image_strong_a=x.flip(-1) * 1.5, image_strong_b=(x + 0.3).clamp(max=1))
        out.append(batch)
    return out


def _trainer(net, objective, loader, epochs: int = 1) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=loader, network=net,
        optimizer=torch.optim.AdamW(trainable_parameters(net, objective), lr=1e-3), loss_function=objective,
        iteration_update=TrainStep(INPUTS, "fp32", optional_inputs=OPTIONAL), decollate=False,
    )


def _calls(module: torch.nn.Module) -> list[int]:
    sizes: list[int] = []
    module.register_forward_hook(lambda m, args, out: sizes.append(int(args[0].shape[0])))
    return sizes


def test_fused_mlm_on_a_network_without_fusion_is_refused_before_the_first_forward(tiny_bert_config) -> None:
    net = UniMlip("resnet18", text_config=tiny_bert_config, img_size=SIZE, embed_dim=8, fused_mlm=False)
    calls = _calls(net.image_encoder)
    trainer = _trainer(net, UniMlipLoss(), _loader())
    with pytest.raises(MissingOutputError, match="'fused_mlm' reads 'mlm_logits'") as info:
        trainer.run()
    assert "fusion module" in str(info.value) and calls == []


def test_i2i_without_strong_views_in_the_batch_is_refused(tiny_bert_config) -> None:
    net = UniMlip("resnet18", text_config=tiny_bert_config, img_size=SIZE, embed_dim=8)
    trainer = _trainer(net, build_objective({"itc": 1.0, "i2i": 0.5}), _loader(strong=False))
    with pytest.raises(MissingOutputError, match="'i2i' reads 'image_strong_a_emb'"):
        trainer.run()


def test_warmup_switches_i2i_and_strong_views_on_when_the_statistics_freeze(tiny_bert_config) -> None:
    net = UniMlip("resnet18", text_config=tiny_bert_config, img_size=SIZE, embed_dim=8)
    objective = UniMlipLoss()
    calls = _calls(net.image_encoder)
    trainer = _trainer(net, objective, _loader(), epochs=2)
    warmup = ObjectiveTermWarmup(objective, {"i2i": 0.5}, warmup_epochs=1)
    freeze = FreezeBatchNormStatistics(net, warmup_epochs=1, submodule="image_encoder")
    warmup.attach(trainer)
    freeze.attach(trainer)
    outputs, stats = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stats.append(FreezeBatchNormStatistics.statistics(net.image_encoder)))
    trainer.run()
    assert calls == [B] * 4 + [3 * B] * 4  # strong views are encoded only once I2I is on
    assert all("loss_i2i" not in o for o in outputs[:4]) and all("loss_i2i" in o for o in outputs[4:])
    assert objective.weights["i2i"] == 0.5
    assert all(torch.equal(stats[3][k], s[k]) for s in stats[4:] for k in s)  # frozen from the first I2I step
    assert not all(torch.equal(stats[0][k], stats[3][k]) for k in stats[0])  # and moving during the warm-up
    # the learnable tau of ITC (shared by the perturbed terms) trained
    assert objective.itc.temperature != pytest.approx(0.07)


def test_warmup_follows_the_engine_state_on_resume_and_refuses_bad_settings() -> None:
    from ignite.engine import Engine

    objective = UniMlipLoss()
    warmup = ObjectiveTermWarmup(objective, {"i2i": 0.5, "fused_mlm": 0.25}, warmup_iterations=10)
    assert objective.weights["i2i"] == 0.0 and "i2i" not in objective.active_terms
    engine = Engine(lambda e, b: None)
    engine.state.iteration, engine.state.epoch = 11, 3  # a run resumed after the warm-up
    warmup(engine)
    assert objective.weights["i2i"] == 0.5 and objective.weights["fused_mlm"] == 0.25
    engine.state.iteration = 4
    warmup(engine)
    assert objective.weights["i2i"] == 0.0
    with pytest.raises(ConfigurationError, match="no term 'simclr'"):
        ObjectiveTermWarmup(UniMlipLoss(), {"simclr": 0.5}, warmup_epochs=1)
    with pytest.raises(ConfigurationError, match="not both"):
        ObjectiveTermWarmup(UniMlipLoss(), {"i2i": 0.5}, warmup_epochs=1, warmup_iterations=3)
    with pytest.raises(ConfigurationError, match="no other term"):
        ObjectiveTermWarmup(build_objective({"i2i": 1.0}), {"i2i": 0.5}, warmup_epochs=1)


def test_a_disabled_freeze_attaches_nothing(tiny_bert_config) -> None:
    """``enabled: false`` is the config switch of the naive-SimCLR ablation: the statistics keep moving."""
    net = UniMlip("resnet18", text_config=tiny_bert_config, img_size=SIZE, embed_dim=8, fused_mlm=False)
    trainer = _trainer(net, build_objective({"itc": 1.0, "i2i": 0.5}), _loader(2))
    freeze = FreezeBatchNormStatistics(net, submodule="image_encoder", enabled=False)
    freeze.attach(trainer)
    stats = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: stats.append(FreezeBatchNormStatistics.statistics(net.image_encoder)))
    trainer.run()
    assert not freeze.frozen and not all(torch.equal(stats[0][k], stats[1][k]) for k in stats[0])

"""Frozen BatchNorm statistics (Uni-Mlip Sec. 3.3): after the warm-up the running mean and variance stay
bitwise unchanged over training steps that call ``network.train()`` while the affine weights move;
sub-module restriction, epoch warm-up, resume from a checkpoint, bad configuration."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine, Events
from monai.networks.nets import ResNet
from torch import nn

from monai_medunic.engines.batchnorm import FreezeBatchNormStatistics, batchnorm_layers
from monai_medunic.engines.handlers import AtomicCheckpointSaver, ResumeFromLatestCheckpoint
from monai_medunic.errors import ConfigurationError
from monai_medunic.losses.simclr import I2ILoss
from monai_medunic.networks import CXRImageEncoder, ProjectionHead


class _TinyResNetEncoder(nn.Module):
    """MONAI's ResNet (the class behind CXRImageEncoder's ResNets) at CPU-test width."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet("basic", [1, 1, 1, 1], [8, 16, 32, 64], spatial_dims=2, n_input_channels=1, feed_forward=False)
        self.out_dim = 64

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": self.backbone(images)}


class _TwoViewNet(nn.Module):
    """An image encoder and a BatchNorm projector, as in a CLIP + SimCLR image tower."""

    def __init__(self, encoder: nn.Module | None = None) -> None:
        super().__init__()
        self.image_encoder = encoder or _TinyResNetEncoder()
        self.image_projection = ProjectionHead(self.image_encoder.out_dim, 16, 32)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"image_emb": self.image_projection(self.image_encoder(images)["pooled"])}


def _batches(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    return [torch.rand(4, 1, 32, 32, generator=g) for _ in range(n)]


def _trainer(net: nn.Module, lr: float = 1e-2) -> tuple[Engine, torch.optim.Optimizer]:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = I2ILoss()

    def step(engine: Engine, x: torch.Tensor) -> float:
        net.train()  # as the real training step does, every iteration
        opt.zero_grad()
        strong = torch.cat([x.flip(-1) * 1.8, (x + 0.4).clamp(max=1.0)])  # two strong intensity views
        emb = net(strong)["image_emb"]
        loss = loss_fn(emb[: len(x)], emb[len(x) :])
        loss.backward()
        opt.step()
        return float(loss.detach())

    return Engine(step), opt


def _record(engine: Engine, net: nn.Module, scope: nn.Module | None = None) -> list[dict]:
    history: list[dict] = []
    scope = scope or net

    def snap(e: Engine) -> None:
        history.append({
            "stats": FreezeBatchNormStatistics.statistics(scope),
            "weights": {n: m.weight.detach().clone() for n, m in batchnorm_layers(scope) if m.weight is not None},
            "tracked": {n: int(m.num_batches_tracked) for n, m in batchnorm_layers(scope)},
        })

    engine.add_event_handler(Events.ITERATION_COMPLETED, snap)
    return history


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("normalize_with", ["running", "batch"])
def test_statistics_bitwise_frozen_after_warmup_while_weights_train(normalize_with: str) -> None:
    net = _TwoViewNet()
    engine, _ = _trainer(net)
    handler = FreezeBatchNormStatistics(net, warmup_iterations=2, normalize_with=normalize_with)
    handler.attach(engine)
    history = _record(engine, net)
    engine.run(_batches(), max_epochs=2)  # 8 iterations
    assert handler.frozen and len(history) == 8
    # the warm-up updates the statistics ...
    assert not _equal(history[0]["stats"], history[1]["stats"])
    # ... and from iteration 3 on they stay bitwise those at the end of iteration 2
    for rec in history[2:]:
        assert _equal(rec["stats"], history[1]["stats"])
        assert rec["tracked"] == history[1]["tracked"]
    # while every affine BatchNorm weight keeps training
    for prev, cur in zip(history[2:], history[3:]):
        assert all(not torch.equal(prev["weights"][k], cur["weights"][k]) for k in cur["weights"])


def test_running_mode_normalises_with_the_frozen_statistics() -> None:
    x = _batches(1)[0]
    for mode, same in (("running", True), ("batch", False)):
        net = _TwoViewNet(CXRImageEncoder("resnet18", img_size=32))
        handler = FreezeBatchNormStatistics(net, normalize_with=mode)
        handler.freeze()
        net.train()
        with torch.no_grad():
            y_train = net(x)["image_emb"]
            y_eval = net.eval()(x)["image_emb"]
        assert torch.allclose(y_train, y_eval, atol=1e-6) is same
        # unfreezing restores batch statistics in train mode
        handler.unfreeze()
        net.train()
        before = FreezeBatchNormStatistics.statistics(net)
        with torch.no_grad():
            net(x)
        assert not _equal(before, FreezeBatchNormStatistics.statistics(net))


def test_restricted_to_the_image_encoder() -> None:
    net = _TwoViewNet()
    engine, _ = _trainer(net)
    FreezeBatchNormStatistics(net, submodule="image_encoder").attach(engine)
    enc_hist = _record(engine, net, net.image_encoder)
    proj_hist = _record(engine, net, net.image_projection)
    engine.run(_batches(3), max_epochs=1)
    assert all(_equal(r["stats"], enc_hist[0]["stats"]) for r in enc_hist)
    assert not _equal(proj_hist[0]["stats"], proj_hist[-1]["stats"])  # the projector still updates


def test_epoch_warmup() -> None:
    net = _TwoViewNet()
    engine, _ = _trainer(net)
    handler = FreezeBatchNormStatistics(net, warmup_epochs=1)
    handler.attach(engine)
    history = _record(engine, net)
    engine.run(_batches(3), max_epochs=3)
    assert not _equal(history[1]["stats"], history[2]["stats"])  # epoch 1 (iterations 1-3) updates
    assert all(_equal(r["stats"], history[2]["stats"]) for r in history[3:])  # frozen from iteration 4


def test_freeze_survives_checkpoint_and_resume(tmp_path) -> None:
    torch.manual_seed(0)
    net = _TwoViewNet()
    engine, opt = _trainer(net)
    FreezeBatchNormStatistics(net, warmup_iterations=2).attach(engine)
    AtomicCheckpointSaver(tmp_path, {"network": net, "optimizer": opt}, every_n_epochs=1).attach(engine)
    engine.run(_batches(), max_epochs=1)  # iterations 1-4: frozen from 3, saved at 4
    saved = FreezeBatchNormStatistics.statistics(net)

    torch.manual_seed(1)
    resumed = _TwoViewNet()  # fresh statistics, overwritten by the checkpoint
    engine2, opt2 = _trainer(resumed)
    ResumeFromLatestCheckpoint(tmp_path, {"network": resumed, "optimizer": opt2}).attach(engine2)
    handler = FreezeBatchNormStatistics(resumed, warmup_iterations=2)
    handler.attach(engine2)
    history = _record(engine2, resumed)
    weights_before = {n: m.weight.detach().clone() for n, m in batchnorm_layers(resumed) if m.weight is not None}
    engine2.run(_batches(), max_epochs=2)  # resumes at iteration 5
    assert engine2.state.iteration == 8 and len(history) == 4 and handler.frozen
    assert all(_equal(r["stats"], saved) for r in history)
    assert any(not torch.equal(history[-1]["weights"][k], weights_before[k]) for k in weights_before)


def test_bad_configuration_raises_typed_errors(caplog) -> None:
    net = _TwoViewNet()
    with pytest.raises(ConfigurationError, match="not both"):
        FreezeBatchNormStatistics(net, warmup_iterations=1, warmup_epochs=1)
    with pytest.raises(ConfigurationError, match="warmup_epochs"):
        FreezeBatchNormStatistics(net, warmup_epochs=-1)
    with pytest.raises(ConfigurationError, match="normalize_with"):
        FreezeBatchNormStatistics(net, normalize_with="eval")
    with pytest.raises(ConfigurationError, match="text_encoder"):
        FreezeBatchNormStatistics(net, submodule="text_encoder")
    # a network without BatchNorm: nothing frozen, and the log says so
    plain = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    engine = Engine(lambda e, b: None)
    FreezeBatchNormStatistics(plain).attach(engine)
    with caplog.at_level(logging.WARNING, logger="monai_medunic.engines.batchnorm"):
        engine.run([0], max_epochs=1)
    assert "no BatchNorm layer" in caplog.text


def test_kept_on_every_rank_by_the_handler_filter() -> None:
    from monai_medunic.engines.distributed import runs_on_all_ranks

    assert runs_on_all_ranks(FreezeBatchNormStatistics(_TwoViewNet()))


def test_with_the_training_step_and_an_i2i_objective() -> None:
    """The real step (TrainStep in MONAI's SupervisedTrainer) calls network.train() every iteration."""
    from monai.engines import SupervisedTrainer

    from monai_medunic.engines.step import TrainStep
    from monai_medunic.losses import CompositeObjective, ObjectiveTerm

    class _Views(_TwoViewNet):
        def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
            emb = super().forward(torch.cat([view_a, view_b]))["image_emb"]
            return {"image_a_emb": emb[: len(view_a)], "image_b_emb": emb[len(view_a) :]}

    net = _Views()
    objective = CompositeObjective({"i2i": ObjectiveTerm(I2ILoss(), ("image_a_emb", "image_b_emb"), 0.5)})
    loader = [{"view_a": x.flip(-1) * 1.8, "view_b": (x + 0.4).clamp(max=1.0)} for x in _batches(4)]
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=1e-2), loss_function=objective,
        iteration_update=TrainStep({"view_a": "view_a", "view_b": "view_b"}, "fp32"), decollate=False,
    )
    FreezeBatchNormStatistics(net, warmup_iterations=1, submodule="image_encoder").attach(trainer)
    history = _record(trainer, net, net.image_encoder)
    trainer.run()
    assert len(history) == 4
    assert all(_equal(r["stats"], history[0]["stats"]) for r in history[1:])
    assert all(not torch.equal(history[-1]["weights"][k], history[1]["weights"][k]) for k in history[1]["weights"])

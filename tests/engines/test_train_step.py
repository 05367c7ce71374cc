"""The one training step (TrainStep) with MONAI's SupervisedTrainer: the masked-LM and Med-UniC
configurations, accumulation within the epoch, precision, the NaN guard, trainable objective
parameters, checkpoint and resume of the objective; the MLM helpers (schedule, layer freeze)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.transforms import Compose

from monai_medunic.data.corpora import IUXRayCorpus, PadChestCorpus, load_report_records
from monai_medunic.engines.handlers import AtomicCheckpointSaver, ResumeFromLatestCheckpoint
from monai_medunic.engines.mlm import freeze_lower_layers, load_masked_lm
from monai_medunic.engines.optim import linear_warmup_schedule, parameter_groups, trainable_parameters
from monai_medunic.engines.precision import resolve_precision
from monai_medunic.engines.step import NetworkInputs, TrainStep
from monai_medunic.errors import CheckpointError, ConfigurationError, ModelLoadError, NonFiniteLossError
from monai_medunic.losses import CompositeObjective, CVLLoss, MedUniCLoss, build_objective
from monai_medunic.networks import MedUniC
from monai_medunic.text.masking import RandMaskTokensd
from monai_medunic.text.tokenize import TokenizeReportd
from monai_medunic.text.vocab import build_base_model

MLM_INPUTS = {"input_ids": "input_ids", "attention_mask": "attention_mask"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlm_eng") / "base"
    build_base_model(d, IUXRayCorpus(limit=400), vocab_size=600, hidden_size=32, num_layers=2, num_heads=2)
    return str(d)


def _mlm_trainer(model_dir, epochs=2, acc=1, precision="fp32", lr=2e-3, n=32, batch=8):
    recs = load_report_records([IUXRayCorpus(limit=n // 2), PadChestCorpus(limit=n // 2)], seed=0)
    tf = Compose([TokenizeReportd("report", model_dir, max_length=48), RandMaskTokensd("input_ids", tokenizer=model_dir)])
    tf.set_random_state(0)
    loader = DataLoader(Dataset(recs, tf), batch_size=batch, shuffle=False)
    net = load_masked_lm(model_dir)
    opt = torch.optim.AdamW(parameter_groups(net), lr=lr)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=loader, network=net,
                                optimizer=opt, loss_function=build_objective({"mlm": 1.0}),
                                iteration_update=TrainStep(MLM_INPUTS, precision), accumulation_steps=acc, decollate=False)
    return trainer, net, opt


def test_mlm_loss_falls_with_gradient_accumulation(model_dir):
    trainer, net, opt = _mlm_trainer(model_dir, epochs=4, acc=2)
    steps = []
    opt_step = opt.step

    def counting_step(*a, **k):
        steps.append(trainer.state.iteration)
        return opt_step(*a, **k)

    opt.step = counting_step
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    trainer.run()
    assert steps[:2] == [2, 4]  # one optimiser step every 2 iterations
    assert len(steps) == 8  # 4 iterations per epoch, 4 epochs
    assert set(trainer.state.output) >= {"loss", "loss_mlm", "lr", "batch_size"}
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2


def test_bf16_autocast_on_cpu_runs(model_dir):
    trainer, _, _ = _mlm_trainer(model_dir, epochs=1, precision="bf16", n=16)
    dtypes = []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: dtypes.append(e.state.output["pred"]["logits"].dtype))
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"]) and dtypes == [torch.bfloat16, torch.bfloat16]


def test_precision_resolution():
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    with pytest.raises(ConfigurationError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigurationError, match="precision must be"):
        resolve_precision("int8", torch.device("cpu"))


def test_non_finite_loss_is_reported(model_dir):
    trainer, net, _ = _mlm_trainer(model_dir, epochs=1, n=16)
    with torch.no_grad():
        net.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="'mlm' is nan at iteration 1"):
        trainer.run()


def test_missing_batch_key_names_argument_and_key():
    with pytest.raises(ConfigurationError, match="'images' needs batch key 'image'"):
        NetworkInputs({"images": "image"}).kwargs({"input_ids": torch.zeros(2, 3)})
    assert NetworkInputs({"images": "image", "images_aug": "image_aug"}, optional=["images_aug"]).kwargs(
        {"image": 1}) == {"images": 1}
    with pytest.raises(ConfigurationError, match="not among"):
        NetworkInputs({"images": "image"}, optional=["image_aug"])


# ------------------------------------------------------------------ accumulation within the epoch
class _Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": self.w * x}


class _MeanY(torch.nn.Module):
    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y.mean()


@pytest.mark.parametrize("epoch_length,acc", [(5, 2), (7, 3), (4, 4), (3, 1)])
def test_every_optimizer_step_averages_its_own_micro_batches(epoch_length, acc):
    """Each step sees exactly N micro-batches, or the epoch's remainder r with the loss divided by r:
    with loss = w * mean(x) the gradient of a step is the mean of its micro-batches' x."""
    xs = [torch.full((2,), float(i + 1)) for i in range(epoch_length)]
    net = _Linear()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    seen: list[tuple[int, float]] = []
    opt_step = opt.step

    def step(*a, **k):
        seen.append((trainer.state.iteration, float(net.w.grad)))
        return opt_step(*a, **k)

    opt.step = step
    objective = CompositeObjective({"mean": {"loss": _MeanY(), "inputs": ["y"]}})
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=3, train_data_loader=[{"x": x} for x in xs],
                                network=net, optimizer=opt, loss_function=objective, accumulation_steps=acc,
                                iteration_update=TrainStep({"x": "x"}, "fp32", grad_clip_norm=None), decollate=False)
    trainer.run()
    expected = []
    for epoch in range(3):
        for start in range(0, epoch_length, acc):
            group = list(range(start, min(start + acc, epoch_length)))
            expected.append((epoch * epoch_length + group[-1] + 1, sum(i + 1 for i in group) / len(group)))
    assert [it for it, _ in seen] == [it for it, _ in expected]
    assert [g for _, g in seen] == pytest.approx([g for _, g in expected])


def test_accumulation_group_bookkeeping():
    group = TrainStep.accumulation_group
    assert [group(i, 5, 2) for i in (1, 2, 3, 4, 5, 6)] == [
        (True, False, 2), (False, True, 2), (True, False, 2), (False, True, 2), (True, True, 1), (True, False, 2)]


# ------------------------------------------------------------------ trainable objective parameters
def _tiny_medunic(cfg):
    torch.manual_seed(0)
    return MedUniC("resnet18", text_config=cfg, img_size=32, embed_dim=16, ctr_dim=16)


def _medunic_loader(n=8, vocab=120):
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        batches.append({"image": torch.rand(n, 1, 32, 32, generator=g), "image_aug": torch.rand(n, 1, 32, 32, generator=g),
                        "input_ids": torch.randint(5, vocab, (n, 12), generator=g), "attention_mask": torch.ones(n, 12, dtype=torch.long)})
    return batches


MEDUNIC_INPUTS = {"images": "image", "images_aug": "image_aug", "input_ids": "input_ids", "attention_mask": "attention_mask"}


def _medunic_trainer(net, loss, params, epochs, handlers=()):
    opt = torch.optim.AdamW(params, lr=1e-2)
    return SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=_medunic_loader(),
                             network=net, optimizer=opt, loss_function=loss, train_handlers=list(handlers),
                             iteration_update=TrainStep(MEDUNIC_INPUTS, "fp32", optional_inputs=["images_aug"]),
                             decollate=False), opt


def test_objective_parameters_outside_the_optimizer_are_refused(tiny_bert_config):
    net = _tiny_medunic(tiny_bert_config)
    trainer, _ = _medunic_trainer(net, MedUniCLoss(learnable_temperature=True), net.parameters(), 1)
    with pytest.raises(ConfigurationError, match=r"\['cvl.log_logit_scale'\] are not in the optimizer"):
        trainer.run()


def test_learnable_temperature_trains_and_survives_resume(tiny_bert_config, tmp_path):
    net = _tiny_medunic(tiny_bert_config)
    loss = MedUniCLoss(learnable_temperature=True)
    start = float(loss.cvl.log_logit_scale.detach())
    saver = AtomicCheckpointSaver(tmp_path, {"network": net}, every_n_epochs=1)
    trainer, opt = _medunic_trainer(net, loss, trainable_parameters(net, loss), 2, [saver])
    trainer.run()
    trained = float(loss.cvl.log_logit_scale.detach())
    assert abs(trained - start) > 1e-3  # the temperature moved over 4 steps
    ckpt = torch.load(sorted(tmp_path.glob("checkpoint_*.pt"))[-1], weights_only=True)
    assert float(ckpt["objective"]["cvl.log_logit_scale"]) == pytest.approx(trained)

    # a fresh run resumes the temperature (and the weights) from the checkpoint, then keeps training it
    net2, loss2 = _tiny_medunic(tiny_bert_config), MedUniCLoss(learnable_temperature=True)
    assert float(loss2.cvl.log_logit_scale.detach()) == pytest.approx(start)
    resumed = []
    resume = ResumeFromLatestCheckpoint(tmp_path, {"network": net2})
    trainer2, _ = _medunic_trainer(net2, loss2, trainable_parameters(net2, loss2), 3, [resume])
    trainer2.add_event_handler(Events.STARTED, lambda e: resumed.append(float(loss2.cvl.log_logit_scale.detach())))
    trainer2.run()
    assert resumed == [pytest.approx(trained)]
    assert trainer2.state.iteration == 6 and float(loss2.cvl.log_logit_scale.detach()) != pytest.approx(trained)


def test_without_ctr_the_text_dropout_view_is_not_computed(tiny_bert_config):
    net = _tiny_medunic(tiny_bert_config).train()
    batch = _medunic_loader()[0]
    objective = MedUniCLoss(ctr_weight=0.0)
    out = NetworkInputs(MEDUNIC_INPUTS)(net, batch, objective.required_keys)
    assert "ctr_a" not in out and {"image_emb", "image_aug_emb", "text_emb"} <= set(out)
    assert "ctr_a" in NetworkInputs(MEDUNIC_INPUTS)(net, batch, MedUniCLoss().required_keys)


def test_resume_from_another_architecture_is_a_typed_error(tiny_bert_config, tmp_path):
    net = _tiny_medunic(tiny_bert_config)
    torch.save({"network": net.state_dict(), "trainer": {"epoch": 1, "iteration": 2, "epoch_length": 2, "max_epochs": 1}},
               tmp_path / "checkpoint_2.pt")
    other = MedUniC("resnet18", text_config=tiny_bert_config, img_size=32, embed_dim=8, ctr_dim=16)
    trainer, _ = _medunic_trainer(other, MedUniCLoss(), other.parameters(), 2, [ResumeFromLatestCheckpoint(tmp_path, {"network": other})])
    with pytest.raises(CheckpointError, match=r"checkpoint_2.pt: the checkpoint does not fit.*size mismatch.*--resume false"):
        trainer.run()


def test_cvl_learnable_scale_is_clamped():
    loss = CVLLoss(temperature=0.001, learnable_temperature=True)  # log(1000) > log(100)
    assert float(loss.logit_scale) == pytest.approx(100.0)


# ------------------------------------------------------------------ MLM helpers
def test_linear_warmup_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = linear_warmup_schedule(opt, max_epochs=2, steps_per_epoch=list(range(10)), warmup_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[1] == 0.5 and lrs[2] == 1.0  # 2 warm-up steps (10% of 20)
    assert lrs[11] == pytest.approx(0.5) and lrs[-1] == pytest.approx(1 / 18)


def test_freeze_lower_layers(model_dir):
    net = load_masked_lm(model_dir, freeze_layers=1)
    layers = net.bert.encoder.layer
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert net.bert.embeddings.word_embeddings.weight.requires_grad  # new Spanish rows stay trainable
    n_trainable = sum(p.numel() for g in parameter_groups(net) for p in g["params"])
    assert n_trainable == sum(p.numel() for p in net.parameters() if p.requires_grad)
    with pytest.raises(ConfigurationError, match="has 2 layers"):
        freeze_lower_layers(net, 3)
    with pytest.raises(ModelLoadError, match="not found"):
        load_masked_lm(model_dir + "_missing")

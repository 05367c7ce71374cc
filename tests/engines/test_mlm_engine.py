"""MLMIteration with MONAI's SupervisedTrainer: accumulation, precision, warm-up schedule, freezing, NaN guard."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from monai.inferers import SimpleInferer
from monai.transforms import Compose

from monai_medunic.data.corpora import IUXRayCorpus, PadChestCorpus, load_report_records
from monai_medunic.engines.mlm import (
    MaskedLMLoss,
    MLMIteration,
    freeze_lower_layers,
    linear_warmup_schedule,
    load_masked_lm,
    parameter_groups,
    prepare_mlm_batch,
    resolve_precision,
)
from monai_medunic.errors import ConfigurationError, ModelLoadError, NonFiniteLossError
from monai_medunic.text.masking import RandMaskTokensd
from monai_medunic.text.tokenize import TokenizeReportd
from monai_medunic.text.vocab import build_base_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlm_eng") / "base"
    build_base_model(d, IUXRayCorpus(limit=400), vocab_size=600, hidden_size=32, num_layers=2, num_heads=2)
    return str(d)


def _trainer(model_dir, epochs=2, acc=1, precision="fp32", lr=2e-3, n=32, batch=8):
    recs = load_report_records([IUXRayCorpus(limit=n // 2), PadChestCorpus(limit=n // 2)], seed=0)
    tf = Compose([TokenizeReportd("report", model_dir, max_length=48),
                  RandMaskTokensd("input_ids", tokenizer=model_dir)])
    tf.set_random_state(0)
    loader = DataLoader(Dataset(recs, tf), batch_size=batch, shuffle=False)
    net = load_masked_lm(model_dir)
    opt = torch.optim.AdamW(parameter_groups(net), lr=lr)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=loader, network=net,
                                optimizer=opt, loss_function=MaskedLMLoss(), inferer=SimpleInferer(),
                                prepare_batch=prepare_mlm_batch, iteration_update=MLMIteration(precision),
                                accumulation_steps=acc, decollate=False)
    return trainer, net, opt


def test_loss_falls_with_gradient_accumulation(model_dir):
    trainer, net, opt = _trainer(model_dir, epochs=4, acc=2)
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
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2


def test_bf16_autocast_on_cpu_runs(model_dir):
    trainer, _, _ = _trainer(model_dir, epochs=1, precision="bf16", n=16)
    trainer.run()
    assert torch.isfinite(trainer.state.output["loss"]) and trainer.state.output["pred"].dtype == torch.bfloat16


def test_precision_resolution():
    assert resolve_precision("fp32", torch.device("cpu")) == (False, None, False)
    assert resolve_precision("bf16", torch.device("cpu"))[:2] == (True, torch.bfloat16)
    assert resolve_precision("fp16", torch.device("cuda")) == (True, torch.float16, True)
    with pytest.raises(ConfigurationError, match="CUDA"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(ConfigurationError, match="precision must be"):
        resolve_precision("int8", torch.device("cpu"))


def test_non_finite_loss_is_reported(model_dir):
    trainer, net, _ = _trainer(model_dir, epochs=1, n=16)
    with torch.no_grad():
        net.get_input_embeddings().weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="'mlm' is nan at iteration 1"):
        trainer.run()


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

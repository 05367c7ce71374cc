"""UniMedI through the shared training step: mixed 2D + 3D batches from the mixed-dimension loader, the
objective built from TERM_LIBRARY (clip, distill_cls, distill_patch), the EMA teacher as an Ignite handler,
every term reported, and the "no self-distillation" ablation (weights 0) skipping the teacher."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer
from torch.utils.data import ConcatDataset

from monai_medunic.data.mixed import MixedDimensionBatchSampler, collate_mixed_dimensions
from monai_medunic.engines.optim import trainable_parameters
from monai_medunic.engines.step import TrainStep
from monai_medunic.engines.teacher import EMATeacher
from monai_medunic.losses import TERM_LIBRARY, build_objective
from monai_medunic.networks import UniMedI

K = 16


def _loader(n2: int = 4, n3: int = 4) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    two = [{"image": torch.rand(1, 32, 32, generator=g), "input_ids": torch.randint(5, 100, (10,), generator=g),
            "attention_mask": torch.ones(10, dtype=torch.long)} for _ in range(n2)]
    three = [{"volume": torch.rand(1, 16, 32, 32, generator=g), "input_ids": torch.randint(5, 100, (10,), generator=g),
              "attention_mask": torch.ones(10, dtype=torch.long)} for _ in range(n3)]
    return DataLoader(ConcatDataset([Dataset(two), Dataset(three)]), batch_sampler=MixedDimensionBatchSampler((n2, n3), (2, 2), seed=0),
                      collate_fn=collate_mixed_dimensions)


def _model(cfg: dict) -> UniMedI:
    torch.manual_seed(0)
    return UniMedI("vit_tiny", text_config=cfg, img_size=32, volume_size=(16, 32, 32), embed_dim=16, num_slices=2,
                   distill_dim=K, distill_hidden_dim=16, distill_bottleneck_dim=8, mask_ratio=0.5)


def _trainer(model: UniMedI, objective) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_loader(), network=model,
        optimizer=torch.optim.AdamW(trainable_parameters(model, objective), lr=1e-3), loss_function=objective,
        iteration_update=TrainStep({"images": "image", "volumes": "volume", "input_ids": "input_ids", "attention_mask": "attention_mask"},
                                   optional_inputs=["images", "volumes"], precision="fp32"),
        decollate=False,
    )


def _run(cfg: dict, distill_weight: float) -> tuple[list[dict], UniMedI, EMATeacher]:
    model = _model(cfg)
    objective = build_objective({"clip": 1.0, "distill_cls": {"weight": distill_weight, "out_dim": K},
                                 "distill_patch": {"weight": distill_weight, "out_dim": K}})
    trainer = _trainer(model, objective)
    teacher = EMATeacher(model, momentum=0.5)
    teacher.attach(trainer)
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    return outputs, model, teacher


def test_terms_are_registered_with_their_inputs() -> None:
    assert TERM_LIBRARY["clip"].inputs == ("image_emb", "text_emb")
    assert TERM_LIBRARY["distill_cls"].inputs == ("distill_student_cls", "distill_teacher_cls")
    assert TERM_LIBRARY["distill_patch"].inputs == ("distill_student_patch", "distill_teacher_patch", "distill_patch_index")
    objective = build_objective({"clip": 1.0, "distill_cls": {"weight": 0.5, "out_dim": K}, "distill_patch": {"out_dim": K}})
    assert set(objective.state_dict()) == {"distill_cls.center", "distill_patch.center"}  # the centres ride in checkpoints


def test_mixed_batches_train_every_term_and_update_the_teacher(tiny_bert_config) -> None:
    outputs, model, teacher = _run(tiny_bert_config, 1.0)
    assert len(outputs) == 2
    for out in outputs:
        assert {"loss", "loss_clip", "loss_distill_cls", "loss_distill_patch", "lr"} <= set(out)
        total = out["loss_clip"] + out["loss_distill_cls"] + out["loss_distill_patch"]
        assert torch.allclose(out["loss"], total, atol=1e-5)
    assert teacher.num_updates == 2
    s = model.image_encoder.patch_embedding_3d.patch_embeddings.weight
    t = teacher.teacher["image_encoder"].patch_embedding_3d.patch_embeddings.weight
    assert not torch.equal(s, t)  # EMA: between the initial weights and the student's
    for name in ("patch_embedding_2d", "patch_embedding_3d", "mask_token"):  # both tokenizers and the masked student trained
        p = getattr(model.image_encoder, name)
        grad = p.grad if isinstance(p, torch.Tensor) else p.patch_embeddings.weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_without_self_distillation_the_teacher_is_not_run(tiny_bert_config) -> None:
    outputs, model, _ = _run(tiny_bert_config, 0.0)
    assert all("loss_distill_cls" not in o and torch.allclose(o["loss"], o["loss_clip"]) for o in outputs)
    assert model.image_encoder.mask_token.grad is None  # the student saw the full input


def test_distillation_terms_without_the_teacher_handler_fail_before_any_compute(tiny_bert_config) -> None:
    from monai_medunic.errors import MissingOutputError

    model = _model(tiny_bert_config)
    trainer = _trainer(model, build_objective({"clip": 1.0, "distill_cls": {"out_dim": K}}))  # no EMATeacher attached
    with pytest.raises(MissingOutputError, match="distill_cls.*EMATeacher"):
        trainer.run()
    assert model.available_outputs(["images", "volumes", "input_ids"]) >= {"image_emb", "text_emb", "slice_indices"}

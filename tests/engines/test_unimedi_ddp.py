"""UniMedI under DDP (2 gloo processes): a mixed 2D + 3D step with the EMA teacher and both distillation
losses runs with ``find_unused_parameters=False`` (every parameter is used), and students, teachers and
distillation centres stay identical on every rank while each rank sees different data."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_medunic.engines.teacher import EMATeacher
from monai_medunic.losses import CVLLoss, DINOLoss, MaskedPatchDistillationLoss
from monai_medunic.networks import UniMedI

pytestmark = pytest.mark.distributed

WORLD, K_OUT, STEPS = 2, 32, 2
TEXT = dict(model_type="bert", vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = UniMedI("vit_tiny", text_config=TEXT, img_size=32, volume_size=(16, 32, 32), embed_dim=16, num_slices=2,
                        distill_dim=K_OUT, distill_hidden_dim=32, distill_bottleneck_dim=8, mask_ratio=0.5)
        ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=False)
        teacher = EMATeacher(ddp, momentum=0.9)
        cvl, dino, patch = CVLLoss(), DINOLoss(K_OUT), MaskedPatchDistillationLoss(K_OUT)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(100 + rank)  # different data on each rank
        losses = []
        for _ in range(STEPS):
            out = ddp(images=torch.rand(2, 1, 32, 32, generator=g), volumes=torch.rand(2, 1, 16, 32, 32, generator=g),
                      input_ids=torch.randint(5, 100, (4, 10), generator=g))
            loss = (cvl(out["image_emb"], out["text_emb"]) + dino(out["distill_student_cls"], out["distill_teacher_cls"])
                    + patch(out["distill_student_patch"], out["distill_teacher_patch"], out["distill_patch_index"]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            teacher.update()
            losses.append(loss.detach())
        torch.save({"student": model.state_dict(), "teacher": teacher.teacher.state_dict(), "dino_center": dino.center,
                    "patch_center": patch.center, "losses": torch.stack(losses)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def test_students_and_teachers_stay_in_sync(ranks: list[dict]) -> None:
    a, b = ranks
    for part in ("student", "teacher"):
        for key, value in a[part].items():
            if "running" in key or "num_batches" in key:  # BatchNorm statistics are per rank (no SyncBatchNorm)
                continue
            assert torch.equal(value, b[part][key]), f"{part}.{key} differs between ranks"
    assert torch.equal(a["dino_center"], b["dino_center"]) and a["dino_center"].abs().sum() > 0
    assert torch.equal(a["patch_center"], b["patch_center"]) and a["patch_center"].abs().sum() > 0
    assert not torch.equal(a["losses"], b["losses"])  # the ranks saw different data


def test_teacher_lags_behind_the_student(ranks: list[dict]) -> None:
    student, teacher = ranks[0]["student"], ranks[0]["teacher"]
    key = "blocks.0.attn.qkv.weight"
    assert not torch.equal(teacher[f"image_encoder.{key}"], student[f"image_encoder.{key}"])
    assert set(k.split(".")[0] for k in teacher) == {"image_encoder", "distill_head"}

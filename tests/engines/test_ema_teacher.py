"""EMATeacher: DINO's cosine momentum schedule, the EMA update, an Ignite run, DDP-wrapped students,
the optimizer, and checkpoint/resume through Ignite's Checkpoint."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver
from torch import nn

from monai_medunic.engines.teacher import EMATeacher, cosine_momentum
from monai_medunic.errors import ConfigurationError, ModelLoadError


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_cosine_momentum_schedule_values() -> None:
    assert cosine_momentum(0, 100) == pytest.approx(0.996)
    assert cosine_momentum(50, 100) == pytest.approx(0.998)
    assert cosine_momentum(100, 100) == pytest.approx(1.0)
    assert cosine_momentum(25, 100, base=0.9, final=1.0) == pytest.approx(1.0 - 0.1 * (2 ** -0.5 + 1) / 2)
    values = [cosine_momentum(i, 10) for i in range(12)]
    assert all(a <= b for a, b in zip(values, values[1:])) and values[-1] == pytest.approx(1.0)  # clamped past the end
    with pytest.raises(ConfigurationError):
        cosine_momentum(0, 0)


def test_update_is_the_ema_formula_and_moves_toward_the_student() -> None:
    student = _student()
    ema = EMATeacher(student, momentum=0.8)
    before = [p.clone() for p in ema.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(16, 4))  # new BatchNorm running statistics
    dist_before = sum((t - s).norm() for t, s in zip(ema.teacher.parameters(), student.parameters()))
    m = ema.update()
    assert m == 0.8  # no total_steps: the base momentum
    for t0, t, s in zip(before, ema.teacher.parameters(), student.parameters()):
        assert torch.allclose(t, 0.8 * t0 + 0.2 * s.detach(), atol=1e-7)
    dist_after = sum((t - s).norm() for t, s in zip(ema.teacher.parameters(), student.parameters()))
    assert dist_after < dist_before
    bn_t, bn_s = ema.teacher["student"][1], student[1]
    assert torch.equal(bn_t.running_mean, bn_s.running_mean)  # buffers are copied
    assert ema.num_updates == 1
    # the teacher is frozen, in eval mode, and outside the optimizer built from the student
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in ema.teacher.parameters()}
    assert not any(p.requires_grad for p in ema.teacher.parameters()) and not ema.teacher.training


def _run(student: nn.Module, ema: EMATeacher, epochs: int, epoch_length: int = 5, accumulation_steps: int = 1) -> tuple[Engine, list[float]]:
    opt = torch.optim.SGD(student.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        student(batch).pow(2).mean().backward()
        opt.step()

    engine = Engine(step)
    engine.accumulation_steps = accumulation_steps  # as MONAI's SupervisedTrainer has it
    ema.attach(engine)
    momenta: list[float] = []
    updated_at: list[int] = []

    def record(e: Engine) -> None:
        momenta.append(e.state.metrics.get("teacher_momentum"))
        if ema.num_updates > len(updated_at):
            updated_at.append(e.state.iteration)

    engine.add_event_handler(Events.ITERATION_COMPLETED, record)
    engine.updated_at = updated_at  # type: ignore[attr-defined]
    data = [torch.randn(4, 4) for _ in range(epoch_length)]
    engine.run(data, max_epochs=epochs)
    return engine, momenta


def test_ignite_schedule_over_the_run() -> None:
    student = _student()
    ema = EMATeacher(student, momentum=0.99)
    engine, momenta = _run(student, ema, epochs=2)
    assert ema.total_steps == 10 and ema.num_updates == 10
    assert momenta == pytest.approx([cosine_momentum(i, 10, 0.99, 1.0) for i in range(10)])
    # gradient accumulation: after each optimizer step, i.e. every 2 micro-batches within the epoch and at its end
    acc = EMATeacher(_student(), momentum=0.99)
    e2, m2 = _run(acc.network, acc, epochs=2, accumulation_steps=2)
    assert acc.num_updates == 6 and e2.updated_at == [2, 4, 5, 7, 9, 10]
    explicit = EMATeacher(_student(), every=3)
    e3, _ = _run(explicit.network, explicit, epochs=1, accumulation_steps=2)
    assert e3.updated_at == [3, 5]
    assert m2[1] == pytest.approx(cosine_momentum(1, 10, 0.99, 1.0))  # the schedule follows the iteration


def test_ddp_wrapped_student(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        student = _student()
        ddp = nn.parallel.DistributedDataParallel(student)
        ema = EMATeacher(ddp, momentum=0.5)
        assert set(ema.teacher.keys()) == {"student"}
        assert not any(k.startswith("module.") for k in ema.teacher["student"].state_dict())
        _run(ddp, ema, epochs=1)
        first = next(ema.teacher.parameters())
        assert not torch.equal(first, next(student.parameters()))  # the EMA lags behind the trained student
    finally:
        dist.destroy_process_group()


def test_teacher_modules_and_registration() -> None:
    class Net(nn.Module):
        teacher_modules = ("body",)

        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(3, 3), nn.Linear(3, 1)
            self.registered = None

        def set_teacher(self, teacher: nn.Module) -> None:
            self.__dict__["registered"] = teacher

    net = Net()
    ema = EMATeacher(net)
    assert list(ema.teacher.keys()) == ["body"] and net.registered is ema.teacher
    assert list(EMATeacher(net, modules=["head"]).teacher.keys()) == ["head"]
    with pytest.raises(ConfigurationError, match="no submodule"):
        EMATeacher(net, modules=["neck"])
    with pytest.raises(ConfigurationError):
        EMATeacher(net, momentum=1.5)


def test_checkpoint_and_resume_with_ignite(tmp_path) -> None:
    student = _student()
    ema = EMATeacher(student, momentum=0.9)
    engine, _ = _run(student, ema, epochs=1)
    to_save = {"model": student, "teacher": ema, "trainer": engine}
    Checkpoint(to_save, DiskSaver(str(tmp_path), require_empty=False), filename_prefix="ckpt")(engine)
    path = next(p for p in os.listdir(tmp_path) if p.startswith("ckpt"))
    state = torch.load(tmp_path / path, weights_only=True)

    fresh_student = _student()
    fresh = EMATeacher(fresh_student, momentum=0.9)
    Checkpoint.load_objects({"model": fresh_student, "teacher": fresh}, state)
    for a, b in zip(fresh.teacher.state_dict().values(), ema.teacher.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh.num_updates == ema.num_updates == 5
    assert not torch.equal(next(fresh.teacher.parameters()), next(fresh_student.parameters()))

    with pytest.raises(ModelLoadError, match="does not fit"):
        EMATeacher(nn.Linear(2, 2)).load_state_dict(state["teacher"])
    with pytest.raises(ModelLoadError, match="no 'teacher'"):
        fresh.load_state_dict({})

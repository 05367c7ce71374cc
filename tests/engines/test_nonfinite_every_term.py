"""A NaN batch in the middle of training stops it with the term and the iteration named, for every
registered objective term (``monai_medunic.losses.TERM_LIBRARY``, which grows with each method: the test
iterates over it, so a new term is covered, or fails here until it has an input recipe).

Each term runs alone as the objective of a real ``SupervisedTrainer`` with the package's ``TrainStep``;
the network passes its inputs through a learnable scale (so the optimiser has a parameter and the loss a
gradient). Batches 1, 2, 4, 5 are clean, batch 3 holds NaN in the term's first floating-point input.
"""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer
from torch import nn

from monai_medunic.engines.optim import trainable_parameters
from monai_medunic.engines.step import TrainStep
from monai_medunic.errors import NonFiniteLossError
from monai_medunic.losses import TERM_LIBRARY, build_objective

B, D, L, V = 8, 16, 6, 11


def _recipes(keys: tuple[str, ...], gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Candidate inputs for a term reading ``keys``, by what the key names: embeddings (B, D), logits (B, L, V)
    with labels (B, L) (-100 where ignored), patch tokens (N, D) with their image index (N,)."""

    def value(key: str, kind: str) -> torch.Tensor:
        if "label" in key:
            labels = torch.randint(0, V, (B, L), generator=gen)
            labels[:, ::2] = -100
            return labels
        if "index" in key:
            return torch.randint(0, B, (3 * B,), generator=gen)
        if "logits" in key:
            return torch.randn(B, L, V, generator=gen)
        n = 3 * B if kind == "patch" and "patch" in key else B
        return torch.randn(n, D, generator=gen)

    return [{k: value(k, kind) for k in keys} for kind in ("plain", "patch")]


def _objective(name: str):
    """The term alone, weight 1, with its required size arguments (``out_dim`` of the distillation heads ...) set to
    this test's sizes."""
    import importlib
    import inspect

    factory = TERM_LIBRARY[name].factory
    if isinstance(factory, str):
        module, attr = factory.split(":")
        factory = getattr(importlib.import_module(module), attr)
    sizes = {"out_dim": D, "dim": D, "embed_dim": D, "vocab_size": V, "num_classes": V}
    options = {p.name: sizes[p.name] for p in inspect.signature(factory).parameters.values()
               if p.default is inspect.Parameter.empty and p.name in sizes}
    return build_objective({name: {"weight": 1.0, **options}})


class PassThrough(nn.Module):
    """Returns its floating-point inputs times a learnable scale (integer inputs as they are)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v * self.scale if v.is_floating_point() else v for k, v in inputs.items()}


def _clean_inputs(name: str) -> dict[str, torch.Tensor]:
    spec = TERM_LIBRARY[name]
    gen = torch.Generator().manual_seed(0)
    objective = _objective(name)
    tried = []
    for inputs in _recipes(tuple(spec.inputs), gen):
        try:
            value = objective(inputs)["loss"]
        except Exception as err:  # the recipe does not fit this term
            tried.append(f"{ {k: tuple(v.shape) for k, v in inputs.items()} }: {type(err).__name__}: {err}")
            continue
        if torch.isfinite(value):
            return inputs
    pytest.fail(f"term '{name}' ({spec.factory}) accepts none of the input recipes of this test; add one:\n" + "\n".join(tried))


@pytest.mark.parametrize("name", sorted(TERM_LIBRARY))
def test_nan_batch_stops_training_naming_the_term_and_iteration(name: str) -> None:
    clean = _clean_inputs(name)
    first_float = next(k for k in TERM_LIBRARY[name].inputs if clean[k].is_floating_point())
    batches = []
    for i in range(5):
        batch = {k: v.clone() for k, v in clean.items()}
        if i == 2:
            batch[first_float].fill_(float("nan"))
        batches.append(batch)
    network = PassThrough()
    objective = _objective(name)
    optimizer = torch.optim.SGD(trainable_parameters(network, objective), lr=1e-3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=network, optimizer=optimizer,
        loss_function=objective, iteration_update=TrainStep({k: k for k in TERM_LIBRARY[name].inputs}, precision="fp32"),
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    err = info.value
    assert err.term == name and err.iteration == 3, (err.term, err.iteration)
    assert f"loss term '{name}'" in str(err) and "at iteration 3" in str(err)
    assert trainer.state.iteration == 3  # stopped there: batches 4 and 5 were not trained on
    assert torch.isfinite(network.scale).all()  # the optimiser never stepped on the NaN


def test_every_registered_term_is_covered() -> None:
    """The parametrisation above is TERM_LIBRARY itself: nothing registered escapes the check."""
    assert len(TERM_LIBRARY) >= 4 and {"cvl", "ssv", "ctr", "mlm"} <= set(TERM_LIBRARY)


class ScalePred(nn.Module):
    """Returns ``pred`` times a learnable scale, ``label`` as it is."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, pred: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pred": pred * self.scale, "label": label}


def test_nan_batch_in_a_bundle_defined_term() -> None:
    """A term written inline in a bundle config instead of TERM_LIBRARY (cxr_segmentation's ``dice_focal``, the
    objective parsed from its train.json) stops the same way."""
    from pathlib import Path

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[2] / "bundles" / "cxr_segmentation" / "configs" / "train.json"))
    objective = parser.get_parsed_content("loss")
    gen = torch.Generator().manual_seed(0)
    batches = []
    for i in range(5):
        pred = torch.randn(2, 3, 16, 16, generator=gen)
        if i == 2:
            pred[0, 0, 0, 0] = float("nan")
        batches.append({"pred": pred, "label": (torch.rand(2, 3, 16, 16, generator=gen) > 0.7).float()})
    network = ScalePred()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=network,
        optimizer=torch.optim.SGD(trainable_parameters(network, objective), lr=1e-3), loss_function=objective,
        iteration_update=TrainStep({"pred": "pred", "label": "label"}, precision="fp32"),
    )
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    assert info.value.term == "dice_focal" and info.value.iteration == 3, (info.value.term, info.value.iteration)
    assert "loss term 'dice_focal'" in str(info.value) and "at iteration 3" in str(info.value)
    assert trainer.state.iteration == 3 and torch.isfinite(network.scale).all()

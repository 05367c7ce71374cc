"""Uni-Mlip's objective (Eq. 1-4) as terms of the one composable objective: loop transcriptions of the
perturbed ITC terms and of the total, the one shared temperature, mixing with Med-UniC's terms, and the
typed errors for bad objective configurations."""

from __future__ import annotations

import math

import pytest
import torch

from monai_medunic.engines.optim import trainable_parameters
from monai_medunic.errors import ConfigurationError, MissingOutputError
from monai_medunic.losses import TERM_LIBRARY, CVLLoss, MedUniCLoss, UniMlipLoss, build_objective, itc_loss
from monai_medunic.losses.perturbation import UNIMLIP_LAMBDA_CM

UNIMLIP_TERMS = ("itc", "itc_perturbed_image", "itc_perturbed_text", "i2i", "fused_mlm")


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v) / math.sqrt(float(u @ u) * float(v @ v))


def _eq1_loop(img: torch.Tensor, txt: torch.Tensor, tau: float) -> float:
    """Uni-Mlip Eq. 1 transcribed term by term (I2T and T2I NT-Xent, each over 2B)."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        pos = math.exp(_cos(img[i], txt[i]) / tau)
        total -= math.log(pos / sum(math.exp(_cos(img[i], txt[j]) / tau) for j in range(n))) / (2 * n)
        total -= math.log(pos / sum(math.exp(_cos(img[j], txt[i]) / tau) for j in range(n))) / (2 * n)
    return total


def _eq2_loop(a: torch.Tensor, b: torch.Tensor, tau: float) -> float:
    return _eq1_loop(a, b, tau)  # Eq. 2 has Eq. 1's form over the two strong views


def _eq3_loop(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Eq. 3: mean cross-entropy over the masked positions."""
    terms = []
    for row, y in zip(logits, labels):
        terms.append(-(float(row[y]) - math.log(sum(math.exp(float(v)) for v in row))))
    return sum(terms) / len(terms)


def _tensors(b: int = 5, d: int = 6, vocab: int = 9, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, d, generator=g, dtype=torch.float64)
    txt = img + 0.8 * torch.randn(b, d, generator=g, dtype=torch.float64)
    return {
        "image_emb": img, "text_emb": txt,
        "image_emb_perturbed": img + 0.5 * torch.randn(b, d, generator=g, dtype=torch.float64),
        "text_emb_perturbed": txt + 0.6 * torch.randn(b, d, generator=g, dtype=torch.float64),
        "image_strong_a_emb": torch.randn(b, d, generator=g, dtype=torch.float64),
        "image_strong_b_emb": torch.randn(b, d, generator=g, dtype=torch.float64),
        "mlm_logits": torch.randn(7, vocab, generator=g, dtype=torch.float64),
        "mlm_labels": torch.randint(0, vocab, (7,), generator=g),
    }


@pytest.mark.parametrize("term,image_key,text_key", [
    ("itc", "image_emb", "text_emb"),
    ("itc_perturbed_image", "image_emb_perturbed", "text_emb"),
    ("itc_perturbed_text", "image_emb", "text_emb_perturbed"),
])
def test_each_cross_modal_term_equals_the_loop_transcription_of_eq1(term: str, image_key: str, text_key: str) -> None:
    t = _tensors()
    objective = UniMlipLoss(temperature=0.2)
    out = objective(t)
    assert float(out[term]) == pytest.approx(_eq1_loop(t[image_key], t[text_key], 0.2), rel=1e-5)


def test_total_equals_eq4_transcribed() -> None:
    t = _tensors(seed=3)
    tau, tau_i2i = 0.07, 0.1
    out = UniMlipLoss()(t)
    cm = _eq1_loop(t["image_emb"], t["text_emb"], tau) + _eq1_loop(t["image_emb_perturbed"], t["text_emb"], tau) \
        + _eq1_loop(t["image_emb"], t["text_emb_perturbed"], tau)
    expected = 0.5 / 3 * cm + 0.5 * _eq2_loop(t["image_strong_a_emb"], t["image_strong_b_emb"], tau_i2i) \
        + 0.5 * _eq3_loop(t["mlm_logits"], t["mlm_labels"])
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-5)
    assert UNIMLIP_LAMBDA_CM == pytest.approx(0.167, abs=5e-4)


def test_one_temperature_for_the_three_cross_modal_terms() -> None:
    """Eq. 1 has one tau: the perturbed terms share ITC's module, whose gradient sums the three terms."""
    objective = build_objective({t: 1.0 for t in UNIMLIP_TERMS})
    assert objective.itc is objective.itc_perturbed_image is objective.itc_perturbed_text
    scale = objective.itc.log_logit_scale
    assert [n for n, _ in objective.named_parameters()] == ["itc.log_logit_scale"]
    net = torch.nn.Linear(2, 2)
    assert sum(p is scale for p in trainable_parameters(net, objective)) == 1
    t = _tensors()
    out = objective(t)
    grads = [torch.autograd.grad(out[k], scale, retain_graph=True)[0] for k in UNIMLIP_TERMS[:3]]
    (total,) = torch.autograd.grad(out["loss"], scale)
    assert all(float(g) != 0.0 for g in grads)
    assert torch.allclose(total, sum(grads))
    # an optimiser step moves the one tau, and every term then uses the moved value
    opt = torch.optim.SGD(trainable_parameters(net, objective), lr=0.5)
    objective(t)["loss"].backward()
    opt.step()
    tau = objective.itc.temperature
    assert tau != pytest.approx(0.07)
    assert float(objective(t)["itc_perturbed_text"]) == pytest.approx(_eq1_loop(t["image_emb"], t["text_emb_perturbed"], tau), rel=1e-4)


def test_shared_temperature_round_trips_through_state_dict() -> None:
    a = UniMlipLoss()
    with torch.no_grad():
        a.itc.log_logit_scale.fill_(math.log(20.0))
    b = UniMlipLoss()
    b.load_state_dict(a.state_dict())
    assert b.itc is b.itc_perturbed_image and b.itc_perturbed_image.temperature == pytest.approx(0.05)
    assert {"itc.log_logit_scale", "itc_perturbed_image.log_logit_scale"} <= set(a.state_dict())


def test_preset_equals_the_objective_built_from_term_names() -> None:
    t = _tensors(seed=5)
    built = build_objective({"itc": UNIMLIP_LAMBDA_CM, "itc_perturbed_image": UNIMLIP_LAMBDA_CM,
                             "itc_perturbed_text": UNIMLIP_LAMBDA_CM, "i2i": 0.5, "fused_mlm": 0.5})
    a, b = UniMlipLoss()(t), built(t)
    assert set(a) == set(b) and all(torch.allclose(a[k], b[k]) for k in a)
    assert isinstance(built.itc, CVLLoss) and isinstance(built.itc.log_logit_scale, torch.nn.Parameter)
    assert isinstance(itc_loss(), CVLLoss) and itc_loss().temperature == pytest.approx(0.07)


def test_mixing_the_terms_of_med_unic_and_uni_mlip() -> None:
    """Med-UniC + perturbed ITC + SimCLR: the perturbed terms share CVL's temperature (sigma_1)."""
    objective = build_objective({"cvl": 1.0, "ssv": 1.0, "ctr": {"weight": 1.0, "lambd": 0.0051},
                                 "itc_perturbed_image": 0.2, "itc_perturbed_text": 0.2, "i2i": 0.5})
    assert objective.itc_perturbed_image is objective.cvl and not isinstance(objective.cvl.log_logit_scale, torch.nn.Parameter)
    assert objective.required_keys == {"image_emb", "text_emb", "image_aug_emb", "ctr_a", "ctr_b", "image_emb_perturbed",
                                       "text_emb_perturbed", "image_strong_a_emb", "image_strong_b_emb"}
    # the Med-UniC part is MedUniCLoss: same values
    g = torch.Generator().manual_seed(1)
    t = {k: torch.randn(6, 8, generator=g) for k in objective.required_keys}
    ref = MedUniCLoss()(t)
    out = objective(t)
    for k in ("cvl", "ssv", "ctr"):
        assert torch.allclose(out[k], ref[k])
    # UniMedI's CLIP term: the same sharing, and the three papers' terms in one objective
    mixed = build_objective({"clip": 1.0, "distill_cls": {"weight": 0.5, "out_dim": 16}, "ctr": 0.5, "itc_perturbed_text": 0.2, "i2i": 0.5})
    assert mixed.itc_perturbed_text is mixed.clip
    assert {"distill_student_cls", "ctr_a", "text_emb_perturbed", "image_strong_a_emb"} <= mixed.required_keys
    own = build_objective({"cvl": 1.0, "itc_perturbed_image": {"weight": 0.2, "share_loss_with": None, "temperature": 0.5}})
    assert own.itc_perturbed_image is not own.cvl and own.itc_perturbed_image.temperature == pytest.approx(0.5)


def test_library_names_the_papers() -> None:
    for term in UNIMLIP_TERMS:
        assert TERM_LIBRARY[term].paper.startswith("Uni-Mlip")
    assert {"cvl", "ssv", "ctr"} <= set(TERM_LIBRARY)


@pytest.mark.parametrize("terms,match", [
    ({"itc": 1.0, "simclr": 0.5}, "unknown objective term 'simclr'"),
    ({"itc": 1.0, "i2i": -0.5}, "negative weight"),
    ({"itc": 1.0, "i2i": "half"}, "weight must be a number"),
    ({"itc": 0.0, "i2i": 0.0}, "every term weight"),
    ({"itc": 1.0, "itc_perturbed_text": {"weight": 1.0, "temperature": 0.2}}, "shares the loss of 'itc'"),
    ({"cvl": 1.0, "itc_perturbed_text": {"weight": 1.0, "share_loss_with": "itc"}}, "not another term"),
    ({"itc": {"weight": 1.0, "temprature": 0.2}}, "temprature"),
])
def test_bad_objective_configurations_raise_typed_errors(terms: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        build_objective(terms)


def test_check_available_names_the_term_and_the_key() -> None:
    objective = UniMlipLoss()
    have = set(_tensors()) - {"mlm_logits"}
    with pytest.raises(MissingOutputError, match="'fused_mlm' reads 'mlm_logits'") as info:
        objective.check_available(have, {"mlm_logits": "a fusion module"})
    assert info.value.term == "fused_mlm" and "a fusion module" in str(info.value)
    objective.set_weight("fused_mlm", 0.0)  # an inactive term is not checked
    objective.check_available(have)
    with pytest.raises(ConfigurationError, match="no term 'mlm'"):
        objective.set_weight("mlm", 1.0)
    with pytest.raises(ConfigurationError, match="negative"):
        objective.set_weight("i2i", -1.0)

"""UniMlip: the keys every Med-UniC and Uni-Mlip term reads, from one backbone pass and one text pass,
computing only what the objective asks; perturbed projections leave the projector statistics alone;
strong views (MONAI transforms); export and load as a trained bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.losses import UniMlipLoss, build_objective
from monai_medunic.networks import MedUniC, UniMlip
from monai_medunic.networks.unimlip import running_statistics_untouched
from monai_medunic.transforms.augment import strong_views_transform

B, L, SIZE = 4, 10, 64


def _net(tiny_bert_config, **kw) -> UniMlip:
    torch.manual_seed(0)
    return UniMlip("resnet18", text_config=tiny_bert_config, img_size=SIZE, embed_dim=16, **kw)


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, 1, SIZE, SIZE, generator=g)
    ids = torch.randint(5, 100, (B, L), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    mlm_ids, labels = ids.clone(), torch.full_like(ids, -100)
    mlm_ids[:, 3], labels[:, 3] = 4, ids[:, 3]
    return {"images": x, "input_ids": ids, "attention_mask": mask, "images_strong_a": x.flip(-1) * 1.3,
            "images_strong_b": (x + 0.2) ** 2, "mlm_input_ids": mlm_ids, "mlm_token_labels": labels}


class _BatchSizes:
    """Records the batch size of every call of a module."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.sizes: list[int] = []
        module.register_forward_hook(lambda m, args, out: self.sizes.append(int(args[0].shape[0])))


def test_every_uni_mlip_key_from_one_image_pass_and_one_text_pass(tiny_bert_config) -> None:
    net = _net(tiny_bert_config)
    images, text = _BatchSizes(net.image_encoder), _BatchSizes(net.text_encoder)
    objective = UniMlipLoss()
    out = net(**_batch(), required_outputs=objective.required_keys)
    assert objective.required_keys <= set(out)
    assert images.sizes == [3 * B]  # clean + two strong views, one backbone call: no second pass for ~I
    assert text.sizes == [2 * B]  # clean report + its masked copy
    assert out["image_emb_perturbed"].shape == out["image_emb"].shape == (B, 16)
    assert out["mlm_logits"].shape == (B, 120) and torch.equal(out["mlm_labels"], _batch()["input_ids"][:, 3])
    loss = objective(out)["loss"]
    loss.backward()
    for name in ("image_encoder", "text_encoder", "i2i_projection", "fused_mlm", "image_projection", "text_projection"):
        grads = [p.grad for p in getattr(net, name).parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_only_what_the_active_terms_read_is_computed(tiny_bert_config) -> None:
    net = _net(tiny_bert_config)
    images, text = _BatchSizes(net.image_encoder), _BatchSizes(net.text_encoder)
    fusion = _BatchSizes(net.fused_mlm)
    out = net(**_batch(), required_outputs={"image_emb", "text_emb"})  # CLIP alone
    assert images.sizes == [B] and text.sizes == [B] and fusion.sizes == []
    assert not {"image_strong_a_emb", "image_emb_perturbed", "text_emb_perturbed", "mlm_logits", "ctr_a"} & set(out)
    # Table 3, row 3: strong views in the forward pass although no active term reads them
    always = _net(tiny_bert_config, strong_views="always")
    seen = _BatchSizes(always.image_encoder)
    always(**_batch(), required_outputs={"image_emb", "text_emb"})
    assert seen.sizes == [3 * B]


def test_perturbed_projections_leave_the_running_statistics_to_the_clean_path(tiny_bert_config) -> None:
    batch = _batch()
    stats = {}
    no_dropout = dict(tiny_bert_config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    for required in ({"image_emb", "text_emb"}, {"image_emb", "text_emb", "image_emb_perturbed", "text_emb_perturbed"}):
        net = _net(no_dropout).train()
        torch.manual_seed(1)
        net(**batch, required_outputs=required)
        stats[len(required)] = {k: v.clone() for k, v in net.state_dict().items() if "projection" in k and "running" in k}
    assert stats[2].keys() == stats[4].keys() and stats[2]
    assert all(torch.equal(stats[2][k], stats[4][k]) for k in stats[2])
    # the helper restores tracking, and a perturbed batch normalises with its own statistics
    bn = torch.nn.BatchNorm1d(3)
    with running_statistics_untouched(bn):
        y = bn(torch.randn(8, 3) * 5 + 2)
    assert bn.track_running_stats and torch.equal(bn.running_mean, torch.zeros(3))
    assert torch.allclose(y.mean(0), torch.zeros(3), atol=1e-5)


def test_perturbations_are_the_papers_and_identity_in_eval(tiny_bert_config) -> None:
    net = _net(tiny_bert_config)
    assert net.image_perturbation.dropblock.drop_prob == 0.5 and net.image_perturbation.dropblock.block_size == (3, 3)
    assert net.text_perturbation.p == 0.75
    assert len(net.fused_mlm.fusion.blocks) == 4
    net.eval()
    with torch.no_grad():
        out = net(**_batch())
    assert torch.allclose(out["image_emb_perturbed"], out["image_emb"], atol=1e-6)
    assert torch.allclose(out["text_emb_perturbed"], out["text_emb"], atol=1e-6)


def test_med_unic_keys_and_ctr_when_asked(tiny_bert_config) -> None:
    net = _net(tiny_bert_config, ctr_dim=24)
    batch = dict(_batch(), images_aug=_batch(1)["images"])
    objective = build_objective({"cvl": 1, "ssv": 1, "ctr": 1, "itc_perturbed_image": 0.2, "i2i": 0.5})
    out = net(**batch, required_outputs=objective.required_keys)
    assert objective.required_keys <= set(out) and out["ctr_a"].shape == (B, 24)
    assert torch.isfinite(objective(out)["loss"])
    assert "ctr_a" not in _net(tiny_bert_config)(**batch)  # ctr_dim=0: no CTR projector
    assert MedUniC("resnet18", text_config=tiny_bert_config, img_size=SIZE, embed_dim=8, ctr_dim=0).ctr_projection is None


def test_available_outputs_follow_modules_and_inputs(tiny_bert_config) -> None:
    full = _net(tiny_bert_config)
    inputs = set(_batch())
    assert UniMlipLoss().required_keys <= full.available_outputs(inputs)
    plain = _net(tiny_bert_config, fused_mlm=False)
    assert "mlm_logits" not in plain.available_outputs(inputs) and plain.fused_mlm is None
    assert "image_strong_a_emb" not in full.available_outputs(inputs - {"images_strong_b"})
    assert "mlm_labels" not in full.available_outputs(inputs - {"mlm_token_labels"})


def test_bad_inputs_raise_typed_errors(tiny_bert_config) -> None:
    net = _net(tiny_bert_config)
    batch = _batch()
    with pytest.raises(ShapeMismatchError, match="images_strong_a"):
        net(**dict(batch, images_strong_a=batch["images"][:2]))
    with pytest.raises(ShapeMismatchError, match="mlm_input_ids"):
        net(**dict(batch, mlm_input_ids=batch["mlm_input_ids"][:, :5]))
    with pytest.raises(ConfigurationError, match="fused MLM needs the images"):
        net(input_ids=batch["input_ids"], mlm_input_ids=batch["mlm_input_ids"])
    with pytest.raises(ConfigurationError, match="strong_views"):
        _net(tiny_bert_config, strong_views="sometimes")


def test_exported_and_loaded_as_a_trained_bundle(tiny_bert_config, tmp_path) -> None:
    from conftest import DEMO_FINDING_KEYS, make_tiny_tokenizer

    from monai_medunic.pretrained import export_pretrained_bundle, load_pretrained_bundle

    tok = make_tiny_tokenizer(tmp_path / "tok")
    net = _net(dict(tiny_bert_config, vocab_size=len(tok)), i2i_dim=12).eval()
    (tmp_path / "bundle" / "configs").mkdir(parents=True)
    (tmp_path / "bundle" / "configs" / "metadata.json").write_text('{"name": "unimlip_test", "version": "0.1.0"}')
    export_pretrained_bundle(net, tok, tmp_path / "bundle", findings=DEMO_FINDING_KEYS, max_length=16)
    loaded = load_pretrained_bundle(tmp_path / "bundle")
    assert loaded.method == "unimlip" and type(loaded.model) is UniMlip
    assert loaded.model.i2i_projection[-1].num_features == 12 and loaded.model.fused_mlm is not None
    x = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), net.encode_image(x), atol=1e-6)


def test_strong_views_are_independent_intensity_blur_flip_views() -> None:
    t = strong_views_transform("image", ("a", "b"), image_size=SIZE, jitter_prob=1.0, blur_prob=1.0, flip_prob=0.5)
    t.set_random_state(seed=0)
    img = torch.rand(1, SIZE, SIZE)
    out = t({"image": img})
    assert torch.equal(out["image"], img)  # the clean view is untouched
    a, b = torch.as_tensor(out["a"]), torch.as_tensor(out["b"])
    assert a.shape == b.shape == img.shape and not torch.allclose(a, b)
    # blurred: less high-frequency energy than the source, flipped or not
    hf = lambda x: float((x[..., 1:] - x[..., :-1]).abs().mean())  # noqa: E731
    assert hf(a) < hf(img) and hf(b) < hf(img)
    # reproducible under a seed, different draws across calls
    t2 = strong_views_transform("image", ("a", "b"), image_size=SIZE, jitter_prob=1.0, blur_prob=1.0, flip_prob=0.5)
    t2.set_random_state(seed=0)
    assert np.allclose(np.asarray(t2({"image": img})["a"]), np.asarray(a))
    # one transform drawn 20 times: a new Compose is seeded from MONAI's global seed (set_determinism in an
    # earlier test), so 20 fresh transforms would all repeat one draw
    flipper = strong_views_transform("image", ("a",), image_size=SIZE, jitter_prob=0.0, blur_prob=0.0, flip_prob=0.5)
    flipper.set_random_state(seed=1)
    flips = 0
    for _ in range(20):
        o = flipper({"image": img})
        flips += int(torch.equal(torch.as_tensor(o["a"]), img.flip(-1)))
    assert 0 < flips < 20
    with pytest.raises(ConfigurationError):
        strong_views_transform("image", ("image", "b"))
    with pytest.raises(ConfigurationError):
        strong_views_transform("image", ("a", "b"), blur_prob=1.5)

"""UniMedI's evaluation numbers: lesion slabs and precision@k by hand, the random / middle baselines, the 2D-3D
embedding distance, and the 3D downstream runs (linear probe, fine-tuning, UNETR Dice) on small tensors."""

from __future__ import annotations

import pytest
import torch

from monai_medunic.errors import MetricInputError
from monai_medunic.metrics.slice_selection import lesion_slabs, precision_at_k, slice_selection_scores
from monai_medunic.metrics.unimedi_eval import dimension_gap
from monai_medunic.metrics.volume_tasks import finetune_3d, linear_probe_3d, segment_3d_unetr
from monai_medunic.networks import UnifiedViT


def test_lesion_slabs_follow_the_resize_and_the_patch_depth() -> None:
    # 64 input slices -> 32 network slices -> slabs of 4: input slices 8z..8z+7 are slab z
    assert lesion_slabs({"Nodule": [14, 18], "Consolidation": [40]}, 64, 32, 4) == {1, 2, 5}
    assert lesion_slabs({"Nodule": [14, 18], "Consolidation": [40]}, 64, 32, 4, findings=["Nodule"]) == {1, 2}
    assert lesion_slabs([0, 63], 64, 32, 4) == {0, 7}
    # upsampling 10 -> 20 slices: input slice 3 covers network slices 6 and 7 (slabs of 4: slab 1)
    assert lesion_slabs([3], 10, 20, 4) == {1} and lesion_slabs([1], 10, 20, 4) == {0}
    assert lesion_slabs([], 64, 32, 4) == set()
    with pytest.raises(MetricInputError, match="outside"):
        lesion_slabs([64], 64, 32, 4)


def test_precision_at_k_and_baselines() -> None:
    truth = [{1, 2}, set(), {6}]
    out = precision_at_k(torch.tensor([[1, 5], [0, 1], [6, 2]]), truth)
    assert out == {"precision": pytest.approx(0.5), "hit_rate": 1.0, "volumes": 2}  # the volume without lesion is left out
    scores = torch.zeros(3, 8)
    scores[0, 2], scores[0, 7] = 2.0, 1.0  # top-2: 2 (hit), 7 (miss)
    scores[2, 6], scores[2, 5] = 3.0, 1.0  # top-2: 6 (hit), 5 (miss)
    res = slice_selection_scores({"attention": scores}, truth, k=2)
    assert res["attention"]["precision"] == pytest.approx(0.5)
    assert res["middle"]["precision"] == pytest.approx(0.0)  # slabs 3, 4
    assert res["random"]["precision"] == pytest.approx((2 / 8 + 1 / 8) / 2)  # expectation |T| / S
    # hit@2 of random draws: 1 - C(6,2)/C(8,2) and 1 - C(7,2)/C(8,2)
    assert res["random"]["hit_rate"] == pytest.approx(((1 - 15 / 28) + (1 - 21 / 28)) / 2)
    assert precision_at_k(torch.zeros(1, 2, dtype=torch.long), [set()])["precision"] is None
    with pytest.raises(MetricInputError):
        slice_selection_scores({"a": scores}, truth, k=9)


def test_dimension_gap_separates_clouds_and_not_one_cloud() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20, 8, generator=g) * 0.1 + torch.tensor([1.0] + [0.0] * 7)
    b = torch.randn(20, 8, generator=g) * 0.1 - torch.tensor([1.0] + [0.0] * 7)
    far = dimension_gap(a, b)
    assert far["probe_accuracy"] == 1.0 and far["centroid_gap"] > 5 and far["centroid_distance"] == pytest.approx(2.0, abs=0.15)
    same = dimension_gap(a[:10], a[10:])
    assert same["centroid_gap"] < 1.0 and same["n_2d"] == 10 and same["n_3d"] == 10
    with pytest.raises(MetricInputError):
        dimension_gap(a, b[:, :4])


class _Features(torch.nn.Module):
    """A fixed "encoder": the mean intensity of each half of the volume, as features."""

    out_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> dict:
        d = x.shape[2] // 2
        return {"pooled": torch.stack([x[:, :, :d].mean((1, 2, 3, 4)), x[:, :, d:].mean((1, 2, 3, 4))], 1) * self.scale}


def _labelled_volumes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, 2, generator=g) > 0.5).float()
    y[0], y[1] = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])
    x = torch.rand(n, 1, 4, 4, 4, generator=g) * 0.2
    x[:, :, :2] += y[:, 0, None, None, None, None]  # finding 0 brightens the first half, finding 1 the second
    x[:, :, 2:] += y[:, 1, None, None, None, None]
    return x, y


def test_linear_probe_and_finetune_learn_a_separable_task() -> None:
    train, test = _labelled_volumes(24, 0), _labelled_volumes(12, 1)
    probe = linear_probe_3d(_Features(), train, test, ["A", "B"], epochs=200)
    assert probe["auc"]["macro"] > 0.95 and probe["train_volumes"] == 24 and probe["test_volumes"] == 12
    enc = _Features()
    tuned = finetune_3d(enc, train, test, ["A", "B"], epochs=30, lr=5e-2, batch_size=8)
    assert tuned["auc"]["macro"] > 0.9
    assert not torch.equal(enc.scale.detach(), torch.ones(2))  # the encoder itself was trained
    nan = (train[0], torch.full_like(train[1], float("nan")))
    with pytest.raises(MetricInputError, match="every label"):
        linear_probe_3d(_Features(), nan, test, ["A", "B"])


def test_unetr_segmentation_reports_dice_per_class() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 32, 32, generator=g) * 0.1
    m = torch.zeros(4, 1, 16, 32, 32, dtype=torch.long)
    m[:, :, 4:12, 8:24, 8:24] = 1  # a bright cube of class 1 in every volume; class 2 never occurs
    x[m == 1] += 0.9
    vit = UnifiedViT("vit_tiny", img_size=32, volume_size=(16, 32, 32))
    out = segment_3d_unetr(vit, (x[:3], m[:3]), (x[3:], m[3:]), {"cube": 1, "absent": 2}, epochs=3, lr=3e-3, batch_size=3, feature_size=4)
    assert out["dice"]["absent"] is None  # no test volume holds it: undefined, not 0
    assert 0.0 <= out["dice"]["cube"] <= 1.0 and out["mean_dice"] == out["dice"]["cube"]
    assert out["train_volumes"] == 3 and out["test_volumes"] == 1 and out["final_train_loss"] is not None

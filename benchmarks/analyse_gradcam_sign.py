"""Why is a prompt Grad-CAM map empty (issue 15)? An analysis of a trained bundle, not a speed benchmark.

For every radiograph of a manifest split with finding masks, and every prompt language: the zero-shot
margin m = v.(t_pos - t_neg); Grad-CAM's map before MONAI's ReLU, sum_k alpha_k A_k on layer4; whether
that map is <= 0 at every cell (then the ReLU leaves nothing: the flat map); whether prompt_gradcam's
map is flat; how uniform the margin's gradient is over the cells (mean pooling: uniform); and the sum
of the pre-ReLU map over the cells (g . x). See monai_medunic/metrics/gradcam.py's docstring.

    python benchmarks/analyse_gradcam_sign.py BUNDLE MANIFEST [split]
"""
import sys
from collections import defaultdict

import numpy as np
import torch

from monai_medunic.data.datalist import manifest_datalist
from monai_medunic.metrics.gradcam import prompt_gradcam
from monai_medunic.pretrained import load_inference

bundle, manifest = sys.argv[1], sys.argv[2]
split = sys.argv[3] if len(sys.argv) > 3 else "test"
api = load_inference(bundle)
model, clf = api.model, api.classifier
layer = model.image_encoder.backbone.layer4
records = [r for r in manifest_datalist(manifest, split=split, truth=True) if r.get("masks")]
stats = defaultdict(list)
for r in records:
    x, _ = api.model_input(r["image"])
    for finding in r["masks"]:
        j = clf.findings.index(finding)
        for lang in api.languages:
            p = clf.prompt_embeddings(lang)[j]
            direction = (p[0] - p[1]).float()
            acts = {}
            h = layer.register_forward_hook(lambda m, i, o: acts.__setitem__("A", o))
            try:
                with torch.enable_grad():
                    xx = x.clone().requires_grad_(True)
                    v = model.encode_image(xx)
                    margin = v[0] @ direction
                    A = acts["A"]
                    (g,) = torch.autograd.grad(margin, A)
            finally:
                h.remove()
            alpha = g.mean((2, 3), keepdim=True)
            cam = (alpha * A).sum(1)[0].detach()
            spatially_uniform_grad = float((g - alpha).abs().max() / (g.abs().max() + 1e-12))
            flat = bool(np.ptp(prompt_gradcam(clf, x, finding, lang)) == 0)
            stats[(finding, lang)].append((float(margin.detach()), float(cam.max()), float((cam > 0).float().mean()),
                                           flat, spatially_uniform_grad, float(cam.sum())))
print(f"{len(records)} {split} radiographs with masks; bundle {bundle}")
print("| finding | prompts | n | margin mean | margin>0 | pre-ReLU max<=0 | flat Grad-CAM | flat & margin<0 | positive cells (mean) | max|grad - mean grad|/max|grad| |")
print("|---|---|---|---|---|---|---|---|---|---|")
tot = defaultdict(list)
for (finding, lang), rows in sorted(stats.items()):
    a = np.array(rows, dtype=float)
    tot[lang] += rows
    print(f"| {finding} | {lang} | {len(a)} | {a[:,0].mean():+.3f} | {(a[:,0]>0).mean():.2f} | {(a[:,1]<=0).mean():.2f} | "
          f"{a[:,3].mean():.2f} | {((a[:,3]>0)&(a[:,0]<0)).sum():.0f}/{(a[:,3]>0).sum():.0f} | {a[:,2].mean():.2f} | {a[:,4].max():.1e} |")
for lang, rows in sorted(tot.items()):
    a = np.array(rows, dtype=float)
    print(f"| all | {lang} | {len(a)} | {a[:,0].mean():+.3f} | {(a[:,0]>0).mean():.2f} | {(a[:,1]<=0).mean():.2f} | "
          f"{a[:,3].mean():.2f} | {((a[:,3]>0)&(a[:,0]<0)).sum():.0f}/{(a[:,3]>0).sum():.0f} | {a[:,2].mean():.2f} | {a[:,4].max():.1e} |")
    flat, pre = a[:, 3] > 0, a[:, 1] <= 0
    print(f"  {lang}: flat Grad-CAM <=> pre-ReLU map <= 0 everywhere: {int((flat == pre).sum())}/{len(a)} cases agree")
allrows = np.array([r for rows in stats.values() for r in rows], dtype=float)
flat = allrows[:, 3] > 0
print(f"sum over the {int(np.prod(A.shape[2:]))} layer4 cells of the pre-ReLU map (= g.x, the margin gradient times the pooled feature): "
      f"flat maps {allrows[flat, 5].mean():+.4f} (all < 0: {bool((allrows[flat, 5] < 0).all())}), "
      f"non-flat maps {allrows[~flat, 5].mean():+.4f}")
print(f"flat maps with margin > 0 (a positive zero-shot decision): {int((flat & (allrows[:, 0] > 0)).sum())} of {int(flat.sum())}")


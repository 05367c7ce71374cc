"""The embedded demo dataset: synthetic bilingual chest radiograph and chest CT studies written as real DICOM.

This is the project's default data (``make demo``, the end-to-end tests, the bundles' defaults). It is
generated, not downloaded: :func:`generate_demo_dataset` draws, from a seed, chest radiograph
*phantoms* (body outline, lungs with vascular markings, heart, mediastinum, spine, ribs, clavicles,
diaphragm, exposure and noise) with findings at controlled prevalence, and writes

* ``out_dir/dicom/<study>/`` the images as CR or DX DICOM (a mix of MONOCHROME1 / MONOCHROME2, bit
  depths 8-16, windows with LINEAR / LINEAR_EXACT / SIGMOID functions or none, rescale intercepts,
  some JPEG 2000 lossless; DX images without a window are stored FOR PROCESSING), some lateral views
  (to be filtered out, Med-UniC Sec. 4), and for some studies the report as a DICOM Comprehensive SR
  (highdicom) referencing the image. Every object passes ``dciodvfy`` (dicom3tools) without errors;
* ``out_dir/manifest.jsonl`` one record per image-report pair (:mod:`monai_medunic.data.manifest`):
  ``image``, ``report`` (or ``report_sr``), ``language`` (``en`` or ``es``, about half each, the
  paper's two communities), ``translations`` (the same report in the other language, for
  cross-lingual evaluation), ``labels`` ``{finding: 0/1}`` (for evaluation only), ``split``
  (``train`` / ``val`` / ``test``, 70/15/15 by study) and ``study_uid``. Records carry no ``view``:
  the loader classifies each image from its DICOM header, so lateral views are filtered by the view
  rule (:func:`monai_medunic.transforms.views.classify_view`);
* ``out_dir/ct/study_<n>/`` chest CT studies (:mod:`~monai_medunic.data.demo.ct`): one axial CT
  series each (64 x 128 x 128 voxels by default, HU through Rescale Slope / Intercept), by default one
  per 40 radiograph studies and at least 2 (:func:`default_ct_studies`; ``num_ct_studies=0`` or
  ``medunic demo-data --no-ct`` for none), with a bilingual report inline in the manifest;
* ``out_dir/truth/`` the ground truth, a tree that mirrors the images' (:mod:`~monai_medunic.data.demo.truth`):
  per frontal radiograph with a finding of :data:`~monai_medunic.data.demo.cxr.MASK_FINDINGS`
  (nodule, pneumothorax, effusion, consolidation) ``truth/dicom/study_<n>/frontal_1_<finding>.nii.gz``
  (a 2D mask per finding) and ``frontal_1_seg.dcm`` (a DICOM SEG, BINARY, one segment per finding,
  SNOMED CT coded, referencing the image); per CT study ``truth/ct/study_<n>/mask.nii.gz``, a label
  map aligned with the series. The masks come from the geometry that draws each lesion, so they match
  what is visible (``radiograph_truth=False`` / ``--no-truth`` skips the radiograph truth; the
  images are the same either way);
* ``out_dir/demo_info.json`` the counts of :class:`DemoDatasetInfo`.

Frontal radiograph records carry ``modality`` (``CR`` / ``DX``), ``masks`` ``{finding: NIfTI path}``,
``boxes`` ``{finding: [[x0, y0, x1, y1], ...]}`` (one box per lesion, pixels of the image, ``x`` along
columns, ``x1`` / ``y1`` one past the last pixel) and ``seg`` (the SEG's path) when a finding has a
mask; ``masks`` and ``boxes`` are empty for a frontal image without such a finding, absent for
laterals (no truth there). CT records in the manifest have ``modality`` ``"CT"``, ``spatial_dims``
3, ``image`` the series folder, ``labels`` over :data:`DEMO_FINDINGS` like the radiographs' (the CT
findings are :data:`CT_FINDINGS`; the phantom draws no cardiomegaly, pneumothorax or edema, so those
are 0), ``mask``, ``mask_labels`` and ``lesion_slices``
(``{finding: [slice index, ...]}`` along the loaded volume's Z axis). The manifest loader and
:func:`~monai_medunic.data.datalist.manifest_datalist` give radiograph records only unless asked for
``dimensions=3``, so radiograph consumers see what they saw before CT was added.

Findings (:data:`DEMO_FINDINGS`) and how they look, chosen to stay visible at 96-128 px:

* Cardiomegaly: a heart about 1.5x wider (cardiothoracic ratio ~0.6 instead of ~0.4);
* Pleural Effusion: a dense basal opacity with a lateral meniscus that blunts the costophrenic angle
  and hides the hemidiaphragm (one side or both);
* Pneumothorax: a dark apico-lateral rim without lung markings, bounded by a thin pleural line;
* Nodule: one or two round opacities of 6-9 px diameter at 128 px;
* Consolidation: a patchy opacity in one zone of one lung;
* Edema: bilateral perihilar ("batwing") haze with a few basal septal lines.

Each finding occurs independently with probability ~0.2-0.3 (:data:`DEFAULT_PREVALENCE`); a study
without any is "normal". Nuisance variation: patient size and aspect, shift, rotation, exposure
(gain, gamma, offset), heel-effect gradient, blur and noise.

Reports follow varied English and Spanish templates (FINDINGS then IMPRESSION), mention each present
finding by the names of :data:`SPANISH_NAMES` (the zero-shot prompt names) and negate a random
subset of the absent ones ("No pleural effusion." / "Sin derrame pleural." / "No hay derrame
pleural."). A few normal studies get a terse two-word report, which the manifest loader drops as
``short_report`` (Med-UniC Sec. 4: reports of fewer than three tokens are removed).

The package's modules:

* :mod:`~monai_medunic.data.demo.cases`: the findings, their Spanish names and prevalence, and the
  sampler of a study's truth (:class:`DemoCase`);
* :mod:`~monai_medunic.data.demo.cxr`: the chest radiograph phantoms;
* :mod:`~monai_medunic.data.demo.ct`: the chest CT phantoms (:func:`render_chest_ct`);
* :mod:`~monai_medunic.data.demo.reports`: the bilingual report templates (radiograph and CT);
* :mod:`~monai_medunic.data.demo.dicom_io`: the DICOM objects (CR / DX images, CT series, Comprehensive SR);
* :mod:`~monai_medunic.data.demo.truth`: the ground truth files (NIfTI masks, boxes, DICOM SEG);
* :mod:`~monai_medunic.data.demo.vqa`: the bilingual VQA pairs of the frontal radiographs
  (``vqa.jsonl``, ``vqa_answers.json``; ``vqa=False`` / ``--no-vqa`` skips them);
* :mod:`~monai_medunic.data.demo.generate`: the driver (:func:`generate_demo_dataset`) and
  ``medunic demo-data`` (:func:`cli_main`).

Patient names, IDs and birth dates are synthetic but realistic in form (``Garcia-Ortega^Lucia``,
``RX030001742``, ``19570314``; :func:`~monai_medunic.data.demo.dicom_io.synthetic_identity`), so the
"no patient identifier in any log, report or error" rule is tested on values that look like a
hospital's; UIDs are derived deterministically from the seed, so a seed reproduces the dataset byte
for byte.
"""


from monai_medunic.data.demo.cases import DEFAULT_PREVALENCE, DEMO_FINDINGS, SPANISH_NAMES, DemoCase, sample_case
from monai_medunic.data.demo.ct import (
    CT_DEFAULT_PREVALENCE,
    CT_DEFAULT_SHAPE,
    CT_FINDINGS,
    CT_MASK_LABELS,
    CTCase,
    CTPhantom,
    render_chest_ct,
    sample_ct_case,
)
from monai_medunic.data.demo.cxr import render_chest_phantom
from monai_medunic.data.demo.generate import DemoDatasetInfo, cli_main, default_ct_studies, generate_demo_dataset
from monai_medunic.data.demo.reports import compose_ct_report, compose_report

__all__ = [
    "DEMO_FINDINGS",
    "SPANISH_NAMES",
    "DEFAULT_PREVALENCE",
    "DemoCase",
    "DemoDatasetInfo",
    "sample_case",
    "render_chest_phantom",
    "compose_report",
    "generate_demo_dataset",
    "default_ct_studies",
    "cli_main",
    "CT_FINDINGS",
    "CT_MASK_LABELS",
    "CT_DEFAULT_PREVALENCE",
    "CT_DEFAULT_SHAPE",
    "CTCase",
    "CTPhantom",
    "sample_ct_case",
    "render_chest_ct",
    "compose_ct_report",
]

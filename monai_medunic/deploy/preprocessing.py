"""Preprocessing operator: selected DICOM series -> one frontal radiograph per study, as the network sees it.

The pixels go through exactly the transforms training uses:
:class:`~monai_medunic.transforms.dicom.LoadDicomImage` (Modality LUT -> VOI LUT -> MONOCHROME1 /
INVERSE polarity, pixel spacing in the meta) and then
:func:`~monai_medunic.transforms.pipelines.model_input_transform` (area resize to the bundle's image
size). Med-UniC pre-trains on frontal views only (Sec. 4, "Dataset"), so lateral instances are dropped
with :func:`~monai_medunic.transforms.views.classify_view`, whatever the series selection let through.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_medunic.errors import MedUniCError
from monai_medunic.transforms.dicom import LoadDicomImage
from monai_medunic.transforms.pipelines import model_input_transform
from monai_medunic.transforms.views import FRONTAL, LATERAL, UNKNOWN, classify_view

from .results import PreparedImage

__all__ = ["CXRPreprocessOperator", "prepare_study"]

logger = logging.getLogger(__name__)

CXR_MODALITIES = ("CR", "DX")


def _prepare(ds: Any, loader: LoadDicomImage, resize, selection: str, view: str) -> PreparedImage:
    image = loader(ds)
    if image.shape[0] != 1:  # colour images are reduced to gray by the loader; keep one channel
        image = image[:1]
    return PreparedImage(dataset=ds, image=resize(image), view=view, selection=selection)


def prepare_study(
    candidates: Sequence[tuple[str, Any]],
    image_size: int,
    keep_unknown_view: bool = True,
    loader: LoadDicomImage | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> PreparedImage | None:
    """The first decodable frontal image among ``candidates`` (``(selection name, dataset)``, in order of preference).

    Lateral images are never used. An image whose view cannot be determined is used only when the
    study has no decodable frontal image and ``keep_unknown_view`` is set (as in training, where
    :class:`~monai_medunic.transforms.views.FrontalViewFilter` keeps unknown views by default).
    Instances that cannot be decoded are skipped and recorded in ``skipped`` as ``(SOPInstanceUID, reason)``.
    """
    loader = loader or LoadDicomImage(frame=0)
    resize = model_input_transform(image_size)
    unknown: list[tuple[str, Any]] = []
    for selection, ds in candidates:
        modality = str(ds.get("Modality", "")).upper()
        uid = str(ds.get("SOPInstanceUID", "?"))
        if modality not in CXR_MODALITIES:
            _record(skipped, uid, f"modality {modality or 'missing'} is not CR/DX")
            continue
        view = classify_view(ds)
        if view == LATERAL:
            _record(skipped, uid, "lateral view")
            continue
        if view == UNKNOWN:
            unknown.append((selection, ds))
            continue
        try:
            return _prepare(ds, loader, resize, selection, FRONTAL)
        except MedUniCError as err:
            _record(skipped, uid, str(getattr(err, "reason", err)))
    if keep_unknown_view:
        for selection, ds in unknown:
            uid = str(ds.get("SOPInstanceUID", "?"))
            try:
                prepared = _prepare(ds, loader, resize, selection, UNKNOWN)
            except MedUniCError as err:
                _record(skipped, uid, str(getattr(err, "reason", err)))
                continue
            logger.warning("instance %s: view unknown (no view attribute decides); used as frontal", uid)
            return prepared
    else:
        for _, ds in unknown:
            _record(skipped, str(ds.get("SOPInstanceUID", "?")), "view unknown")
    return None


def _record(skipped: list[tuple[str, str]] | None, uid: str, reason: str) -> None:
    logger.warning("instance %s not used: %s", uid, reason)
    if skipped is not None:
        skipped.append((uid, reason))


class CXRPreprocessOperator(Operator):
    """Picks and preprocesses one frontal chest radiograph per study.

    Named input:
        study_selected_series_list: the ``DICOMSeriesSelectorOperator``'s list of ``StudySelectedSeries``
        (series in the order of the selection rules, i.e. of preference).

    Named output:
        images: ``list[PreparedImage]``, one per study with an eligible image. Nothing is emitted
        when no study has one; the app then ends cleanly without an SR (the reason is logged).

    Args:
        fragment: the application.
        image_size: the bundle's input size.
        keep_unknown_view: use an image whose view is unknown when a study has no frontal one.
    """

    def __init__(self, fragment: Fragment, *args, image_size: int, keep_unknown_view: bool = True, **kwargs) -> None:
        self.image_size = int(image_size)
        self.keep_unknown_view = keep_unknown_view
        self.loader = LoadDicomImage(frame=0)
        self.input_name = "study_selected_series_list"
        self.output_name = "images"
        self.skipped: list[tuple[str, str]] = []
        self.no_eligible_studies: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_name)

    def compute(self, op_input, op_output, context) -> None:
        study_selected = op_input.receive(self.input_name) or []
        prepared: list[PreparedImage] = []
        for sss in study_selected:
            study_uid = str(sss.study.StudyInstanceUID)
            candidates: list[tuple[str, Any]] = []
            seen: set[str] = set()
            for selected in sss.selected_series:
                series = selected.series
                if series.SeriesInstanceUID in seen:
                    continue
                seen.add(series.SeriesInstanceUID)
                for sop in series.get_sop_instances():
                    candidates.append((selected.selection_name, sop.get_native_sop_instance()))
            image = prepare_study(candidates, self.image_size, self.keep_unknown_view, self.loader, self.skipped)
            if image is None:
                self.no_eligible_studies.append(study_uid)
                logger.warning("study %s: no eligible frontal CR/DX image; no SR for this study", study_uid)
                continue
            logger.info(
                "study %s: using instance %s (series %s, selection '%s', view %s)",
                study_uid,
                image.sop_uid,
                image.series_uid,
                image.selection,
                image.view,
            )
            prepared.append(image)
        if not prepared:
            logger.warning(
                "no eligible series: no frontal CR/DX chest radiograph in these %d stud%s; nothing to analyse, "
                "no SR written for them", len(study_selected), "y" if len(study_selected) == 1 else "ies")
            return
        op_output.emit(prepared, self.output_name)


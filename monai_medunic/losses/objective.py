"""Objectives as data: a weighted set of named loss terms, each reading named tensors.

Every pre-training method here optimises a weighted sum of loss terms (Med-UniC Eq. 1, Uni-Mlip
Eq. 4, UniMedI Sec. 3.5). :class:`CompositeObjective` holds that sum as data: a mapping from a term
name to its loss module, the keys of the tensors it reads and its weight. The tensors come from one
dict, the network's output merged over the batch, so a term may read an embedding the network
produced (``image_emb``) as well as a batch entry (``labels`` of a masked-LM batch).

:func:`build_objective` makes one from term names of :data:`TERM_LIBRARY`, with per-term options,
for bundle configs::

    "loss": {"_target_": "monai_medunic.losses.build_objective",
             "terms": {"cvl": 1.0, "ctr": {"weight": 0.5, "lambd": 0.0051}}}

:class:`~monai_medunic.losses.MedUniCLoss` is the Med-UniC preset of the same class.

One loss module may serve several terms: Uni-Mlip's perturbed ITC terms (Eq. 1 with ``I`` or ``T``
replaced by the perturbed embedding) share the ITC module, hence its one learnable temperature
``tau``. A term of :data:`TERM_LIBRARY` declares the terms whose loss it reuses when the objective has
them (:attr:`TermSpec.shares_loss_with`); ``{"share_loss_with": "itc"}`` names one explicitly and
``{"share_loss_with": null}`` builds the term its own loss. A shared module is registered under every
term name that uses it: ``parameters()`` lists its parameters once (the optimizer sees one ``tau``),
``state_dict()`` holds it under each name, and loading restores the one module.

:meth:`CompositeObjective.check_available` checks, before the first step, that every active term can
get its tensors from what the network declares it can produce and what the batch holds
(:class:`~monai_medunic.errors.MissingOutputError` names the term and the key otherwise).

Trainable loss parameters (a learnable temperature) live on the objective, which is an
``nn.Module``: :func:`monai_medunic.engines.trainable_parameters` gives them to the optimizer next to
the network's, and the checkpoint handlers save and restore ``engine.loss_function``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, MissingOutputError, NonFiniteLossError

__all__ = ["ObjectiveTerm", "CompositeObjective", "TermSpec", "TERM_LIBRARY", "register_term", "build_objective"]


@dataclass
class ObjectiveTerm:
    """One term: ``weight * loss(*[tensors[k] for k in inputs])``.

    Args:
        loss: the loss module (takes tensors, returns a scalar).
        inputs: the keys of the tensors it reads, in the order of ``loss``'s positional arguments.
        weight: the term's weight (>= 0); a term of weight 0 is not computed.
    """

    loss: nn.Module
    inputs: Sequence[str]
    weight: float = 1.0


def _as_term(name: str, term: ObjectiveTerm | Mapping[str, Any]) -> ObjectiveTerm:
    if isinstance(term, ObjectiveTerm):
        return term
    if isinstance(term, Mapping) and {"loss", "inputs"} <= set(term):
        unknown = set(term) - {"loss", "inputs", "weight"}
        if unknown:
            raise ConfigurationError(f"objective term '{name}': unknown fields {sorted(unknown)} (use loss, inputs, weight)")
        return ObjectiveTerm(term["loss"], tuple(term["inputs"]), float(term.get("weight", 1.0)))
    raise ConfigurationError(f"objective term '{name}' must be an ObjectiveTerm or a dict with 'loss' and 'inputs'")


class CompositeObjective(nn.Module):
    """``L = sum_t w_t L_t(inputs_t)`` over named terms, with every term reported for logging.

    ``forward(tensors)`` takes one mapping of named tensors (the network's output dict, merged over
    the batch by the training step) and returns a dict with ``loss`` (the weighted total,
    differentiable) and each active term's unweighted value under its name.

    The loss modules are registered as sub-modules under their term names, so their parameters
    (a learnable temperature) appear in ``parameters()`` and ``state_dict()``.

    Args:
        terms: term name -> :class:`ObjectiveTerm` (or a dict with ``loss``, ``inputs``, ``weight``).
        check_finite: raise :class:`~monai_medunic.errors.NonFiniteLossError` naming the term that
            became NaN or infinite, instead of letting the optimiser step on it.

    Raises:
        ConfigurationError: no term, a negative weight, every weight 0, or a term name that is not
            a Python identifier or clashes with an attribute of the module.
    """

    def __init__(self, terms: Mapping[str, ObjectiveTerm | Mapping[str, Any]], check_finite: bool = True) -> None:
        super().__init__()
        if not terms:
            raise ConfigurationError("the objective has no term")
        self.inputs: dict[str, tuple[str, ...]] = {}
        self.weights: dict[str, float] = {}
        for name, spec in terms.items():
            term = _as_term(name, spec)
            if not str(name).isidentifier() or hasattr(self, name):
                raise ConfigurationError(f"objective term name '{name}' is not usable (an identifier that is not a module attribute)")
            if not isinstance(term.loss, nn.Module):
                raise ConfigurationError(f"objective term '{name}': the loss must be an nn.Module, got {type(term.loss).__name__}")
            if term.weight < 0:
                raise ConfigurationError(f"objective term '{name}' has a negative weight {term.weight}")
            self.add_module(name, term.loss)
            self.inputs[name] = tuple(term.inputs)
            self.weights[name] = float(term.weight)
        if not any(self.weights.values()):
            raise ConfigurationError(f"every term weight of the objective is 0: {self.weights}")
        self.check_finite = check_finite

    @property
    def active_terms(self) -> list[str]:
        """The terms that are computed (weight > 0), in declaration order."""
        return [t for t, w in self.weights.items() if w > 0]

    @property
    def required_keys(self) -> set[str]:
        """Every tensor key an active term reads: what the training step must produce."""
        return {k for t in self.active_terms for k in self.inputs[t]}

    def set_weight(self, term: str, weight: float) -> None:
        """Change a term's weight (a warm-up schedule switching a term on); 0 stops computing it."""
        if term not in self.weights:
            raise ConfigurationError(f"the objective has no term '{term}'; its terms are {list(self.weights)}")
        if weight < 0:
            raise ConfigurationError(f"objective term '{term}' has a negative weight {weight}")
        self.weights[term] = float(weight)

    def check_available(self, available: set[str] | frozenset[str], hints: Mapping[str, str] | None = None) -> None:
        """Raise :class:`~monai_medunic.errors.MissingOutputError` if an active term reads a key outside
        ``available`` (what the network can produce with its inputs, plus the batch keys).

        Args:
            available: the keys on offer.
            hints: key -> what producing it takes (from the network), appended to the message.
        """
        for term in self.active_terms:
            for key in self.inputs[term]:
                if key not in available:
                    raise MissingOutputError(term, key, available, (hints or {}).get(key, ""))

    def forward(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        for term in self.active_terms:
            keys = self.inputs[term]
            missing = [k for k in keys if tensors.get(k) is None]
            if missing:
                raise ConfigurationError(
                    f"{type(self).__name__} term '{term}' needs {list(keys)} but {missing} is missing: produce it "
                    "in the network output or the batch, or set the term's weight to 0"
                )
            value = getattr(self, term)(*(tensors[k] for k in keys))
            if self.check_finite and not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(term, float(value.detach()))
            values[term] = value
        total = sum(self.weights[t] * v for t, v in values.items())
        return {"loss": total, **values}


@dataclass(frozen=True)
class TermSpec:
    """A named term of :data:`TERM_LIBRARY`: how to build its loss and which tensors it reads."""

    factory: Callable[..., nn.Module] | str  # a callable, or "module:attribute" imported on use
    inputs: tuple[str, ...]
    paper: str = ""
    #: reuse the loss module of the first of these terms that the objective has (one shared temperature)
    shares_loss_with: tuple[str, ...] = ()

    def build(self, **options: Any) -> nn.Module:
        factory = self.factory
        if isinstance(factory, str):
            import importlib

            module, attr = factory.split(":")
            factory = getattr(importlib.import_module(module), attr)
        params = inspect.signature(factory).parameters
        unknown = [k for k in options if k not in params]
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise ConfigurationError(f"options {unknown} are not arguments of {getattr(factory, '__name__', factory)}")
        return factory(**options)


#: The terms of the three papers by name. Extended with :func:`register_term`.
TERM_LIBRARY: dict[str, TermSpec] = {
    "cvl": TermSpec("monai_medunic.losses.contrastive:CVLLoss", ("image_emb", "text_emb"), "Med-UniC Eq. 2-3"),
    "ssv": TermSpec("monai_medunic.losses.contrastive:SSVLoss", ("image_emb", "image_aug_emb"), "Med-UniC Eq. 4"),
    "ctr": TermSpec("monai_medunic.losses.ctr:CTRLoss", ("ctr_a", "ctr_b"), "Med-UniC Eq. 5-7"),
    "mlm": TermSpec("monai_medunic.losses.mlm:MaskedLMLoss", ("logits", "labels"), "BERT MLM (Med-UniC Sec. 3.2)"),
    # Uni-Mlip (Bawazir & Wu): ITC with a learnable tau, its perturbed forms sharing that tau, I2I, fused MLM
    "itc": TermSpec("monai_medunic.losses.perturbation:itc_loss", ("image_emb", "text_emb"), "Uni-Mlip Eq. 1"),
    "itc_perturbed_image": TermSpec("monai_medunic.losses.perturbation:itc_loss", ("image_emb_perturbed", "text_emb"),
                                    "Uni-Mlip Sec. 3.2 (Eq. 1 with ~I)", shares_loss_with=("itc", "cvl", "clip")),
    "itc_perturbed_text": TermSpec("monai_medunic.losses.perturbation:itc_loss", ("image_emb", "text_emb_perturbed"),
                                   "Uni-Mlip Sec. 3.2 (Eq. 1 with ~T)", shares_loss_with=("itc", "cvl", "clip")),
    "i2i": TermSpec("monai_medunic.losses.simclr:I2ILoss", ("image_strong_a_emb", "image_strong_b_emb"), "Uni-Mlip Eq. 2"),
    "fused_mlm": TermSpec("monai_medunic.losses.mlm:MaskedLMLoss", ("mlm_logits", "mlm_labels"), "Uni-Mlip Eq. 3"),
    # UniMedI (He et al.): CLIP on the 2D image or the 3D volume with its selected slices; DINO / iBOT self-distillation
    "clip": TermSpec("monai_medunic.losses.contrastive:CVLLoss", ("image_emb", "text_emb"), "UniMedI Sec. 3.3 (CLIP InfoNCE)"),
    "distill_cls": TermSpec("monai_medunic.losses.distill:DINOLoss", ("distill_student_cls", "distill_teacher_cls"),
                            "UniMedI Sec. 3.4 (DINO Eq. 1-2, 4 on the CLS token)"),
    "distill_patch": TermSpec("monai_medunic.losses.distill:MaskedPatchDistillationLoss",
                              ("distill_student_patch", "distill_teacher_patch", "distill_patch_index"),
                              "UniMedI Sec. 3.4 (iBOT L_MIM on the masked patch tokens)"),
}


def register_term(name: str, spec: TermSpec) -> None:
    """Add a named term to :data:`TERM_LIBRARY` (a method's new loss, or a user's own)."""
    if not name.isidentifier():
        raise ConfigurationError(f"term name '{name}' must be an identifier")
    TERM_LIBRARY[name] = spec


def build_objective(terms: Mapping[str, float | Mapping[str, Any]], check_finite: bool = True) -> CompositeObjective:
    """A :class:`CompositeObjective` from term names of :data:`TERM_LIBRARY`.

    Args:
        terms: name -> weight, or name -> ``{"weight": w, "inputs": [...], "share_loss_with": t, **loss options}``
            (``inputs`` overrides the term's default tensor keys; ``share_loss_with`` uses the loss
            module of term ``t``, or with ``null`` builds the term its own, overriding the library's
            :attr:`TermSpec.shares_loss_with`; the other options go to the loss).

    Raises:
        ConfigurationError: an unknown term name (the message lists the known ones), an option the
            loss does not take, a weight that is negative or not a number, or a shared loss that is
            not in the objective or that would get options of its own.
    """
    built: dict[str, ObjectiveTerm | None] = {}
    sharing: dict[str, tuple[str, tuple[str, ...], float]] = {}
    for name, value in terms.items():
        if name not in TERM_LIBRARY:
            raise ConfigurationError(f"unknown objective term '{name}'; known terms: {sorted(TERM_LIBRARY)}")
        spec = TERM_LIBRARY[name]
        options = dict(value) if isinstance(value, Mapping) else {"weight": value}
        try:
            weight = float(options.pop("weight", 1.0))
        except (TypeError, ValueError):
            raise ConfigurationError(f"objective term '{name}': the weight must be a number") from None
        inputs = tuple(options.pop("inputs", spec.inputs))
        share = options.pop("share_loss_with", next((t for t in spec.shares_loss_with if t in terms and t != name), None))
        if share is None:
            built[name] = ObjectiveTerm(spec.build(**options), inputs, weight)
            continue
        if share not in terms or share == name:
            raise ConfigurationError(f"objective term '{name}' shares the loss of '{share}', which is not another term "
                                     f"of the objective ({list(terms)})")
        if options:
            raise ConfigurationError(f"objective term '{name}' shares the loss of '{share}': give the loss options "
                                     f"{sorted(options)} to '{share}' (or set share_loss_with to null)")
        built[name] = None  # keeps the declaration order
        sharing[name] = (share, inputs, weight)
    for name, (share, inputs, weight) in sharing.items():
        chain = [name]
        while share in sharing:
            if share in chain:
                raise ConfigurationError(f"objective terms share their losses in a cycle: {chain + [share]}")
            chain.append(share)
            share = sharing[share][0]
        owner = built[share]
        assert owner is not None
        built[name] = ObjectiveTerm(owner.loss, inputs, weight)
    return CompositeObjective({n: t for n, t in built.items() if t is not None}, check_finite=check_finite)

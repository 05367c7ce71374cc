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

from monai_medunic.errors import ConfigurationError, NonFiniteLossError

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
}


def register_term(name: str, spec: TermSpec) -> None:
    """Add a named term to :data:`TERM_LIBRARY` (a method's new loss, or a user's own)."""
    if not name.isidentifier():
        raise ConfigurationError(f"term name '{name}' must be an identifier")
    TERM_LIBRARY[name] = spec


def build_objective(terms: Mapping[str, float | Mapping[str, Any]], check_finite: bool = True) -> CompositeObjective:
    """A :class:`CompositeObjective` from term names of :data:`TERM_LIBRARY`.

    Args:
        terms: name -> weight, or name -> ``{"weight": w, "inputs": [...], **loss options}``
            (``inputs`` overrides the term's default tensor keys; the other options go to the loss).

    Raises:
        ConfigurationError: an unknown term name (the message lists the known ones), an option the
            loss does not take, or a negative weight.
    """
    built: dict[str, ObjectiveTerm] = {}
    for name, value in terms.items():
        if name not in TERM_LIBRARY:
            raise ConfigurationError(f"unknown objective term '{name}'; known terms: {sorted(TERM_LIBRARY)}")
        spec = TERM_LIBRARY[name]
        options = dict(value) if isinstance(value, Mapping) else {"weight": value}
        weight = float(options.pop("weight", 1.0))
        inputs = tuple(options.pop("inputs", spec.inputs))
        built[name] = ObjectiveTerm(spec.build(**options), inputs, weight)
    return CompositeObjective(built, check_finite=check_finite)

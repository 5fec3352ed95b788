"""Where a training run starts: which network, at which size, from which weights.

- ``--model reference|small``: the CNNs, from random weights, one phase.
- ``--model mobilenet_v2|mobilenet_v3_small``: a pretrained backbone (``--weights``), two phases.
- ``--init-from BUNDLE``: that bundle's model.keras (its architecture, input size and weights); a new head
  when the class list differs. Two phases for a backbone, one for a CNN.

plan() checks everything (sizes, alpha, the weights file or the ImageNet download, the bundle) before any
image is read or any epoch runs, and raises ValueError with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from train.backbones import (
    ARCHITECTURES,
    TRANSFER_MODELS,
    WeightsSource,
    architecture,
    check_alpha_and_size,
    resolve_weights,
    sha256_of,
)

CNN_IMAGE_SIZE = 150


@dataclass
class StartPlan:
    model: str
    image_size: int
    alpha: float | None
    weights: WeightsSource
    freeze: int
    two_phases: bool
    init_from: Path | None = None
    init_labels: list = field(default_factory=list)
    freeze_given: bool = False  # --freeze was given: with --init-from on few images, the user's choice stands


def plan(options, explicit: set) -> StartPlan:
    """Resolve options.model / image_size / alpha / freeze / epochs (EXPLICIT: the option names the caller gave)
    and check the weights. Updates OPTIONS in place so the manifest records what ran."""
    if options.init_from:
        return _plan_init_from(options, explicit)
    name = options.model or "reference"
    options.model = name
    if name not in TRANSFER_MODELS:
        for flag in ("alpha", "head_epochs", "fine_tune_epochs", "fine_tune_learning_rate"):
            if flag in explicit and getattr(options, flag) is not None:
                raise ValueError(f"--{flag.replace('_', '-')} is for the pretrained backbones "
                                 f"({', '.join(TRANSFER_MODELS)}) or --init-from; --model {name} trains from scratch.")
        options.image_size = options.image_size or CNN_IMAGE_SIZE
        options.freeze = options.freeze or 0
        return StartPlan(name, options.image_size, None, WeightsSource("none"), options.freeze, False)
    arch = architecture(name)
    options.image_size = options.image_size or arch.default_size
    options.alpha = arch.default_alpha if options.alpha is None else float(options.alpha)
    check_alpha_and_size(name, options.alpha, options.image_size, options.weights)
    _phase_epochs(options, explicit)
    weights = resolve_weights(options.weights, name, options.alpha, options.image_size)
    if weights.origin == "none":  # random weights have nothing worth keeping fixed or treating gently
        options.freeze = 0 if options.freeze is None else options.freeze
        if "fine_tune_learning_rate" not in explicit:
            options.fine_tune_learning_rate = options.learning_rate
    options.freeze = arch.default_freeze if options.freeze is None else options.freeze
    _check_freeze(options.freeze, arch.blocks, name)
    return StartPlan(name, options.image_size, options.alpha, weights, options.freeze, True)


def _phase_epochs(options, explicit: set) -> None:
    if "epochs" in explicit and options.epochs != options.head_epochs + options.fine_tune_epochs:
        raise ValueError("--epochs is for the CNNs trained from scratch; a pretrained backbone trains in two phases: "
                         "set --head-epochs and --fine-tune-epochs instead.")
    options.epochs = options.head_epochs + options.fine_tune_epochs
    if options.fine_tune_learning_rate is None:
        options.fine_tune_learning_rate = options.learning_rate / 10


def _check_freeze(freeze: int, blocks: int, name: str) -> None:
    if not 0 <= freeze <= blocks:
        raise ValueError(f"--freeze {freeze}: {name} has {blocks} blocks; choose 0 (train every block) to {blocks} "
                         "(train the head alone).")


def _plan_init_from(options, explicit: set) -> StartPlan:
    from device.manifest import ManifestError, load_manifest

    bundle = Path(options.init_from)
    try:
        manifest = load_manifest(bundle)
    except ManifestError as error:
        raise ValueError(f"--init-from: {error}") from None
    keras_file = bundle / manifest.keras_model
    if not keras_file.is_file():
        raise ValueError(f"--init-from {bundle}: {keras_file} is missing. Point --init-from at a bundle written by "
                         "python -m train (it holds model.keras).")
    name = manifest.architecture.name or manifest.training.get("model") or "reference"
    size = manifest.input.height
    for flag, value, wanted in (("model", options.model, name), ("image_size", options.image_size, size)):
        if flag in explicit and value is not None and value != wanted:
            raise ValueError(f"--init-from {bundle} holds a {name} model at {size}x{size}; --{flag.replace('_', '-')} "
                             f"{value} cannot change that. Drop --{flag.replace('_', '-')}, or train from scratch "
                             "without --init-from.")
    if "weights" in explicit:
        raise ValueError("--init-from takes the weights from the bundle; drop --weights.")
    options.model, options.image_size = name, size
    options.alpha = manifest.architecture.alpha
    two_phases = name in ARCHITECTURES
    if two_phases:
        _phase_epochs(options, explicit)
        blocks = ARCHITECTURES[name].blocks
        options.freeze = ARCHITECTURES[name].default_freeze if options.freeze is None else options.freeze
    else:
        blocks = 4 if name == "reference" else 2
        options.freeze = options.freeze or 0
    _check_freeze(options.freeze, blocks, name)
    weights = WeightsSource("bundle", str(keras_file.resolve()), sha256_of(keras_file))
    return StartPlan(name, size, options.alpha, weights, options.freeze, two_phases, bundle,
                     list(manifest.labels), "freeze" in explicit)


def build(plan: StartPlan, class_names: list):
    """The uncompiled model for PLAN with one output per class; (model, new_head)."""
    import keras

    from train.backbones import build_transfer_model, replace_head, set_trainable
    from train.model import build_model

    new_head = False
    if plan.init_from is not None:
        model = keras.models.load_model(plan.weights.path, compile=False)
        if list(class_names) != plan.init_labels:
            model = replace_head(model, len(class_names))
            new_head = True
        print(f"init-from: {plan.init_from} ({plan.model}, {plan.image_size}x{plan.image_size}); "
              + (f"new head for {', '.join(class_names)} (was {', '.join(plan.init_labels)})" if new_head
                 else "same classes, head kept"), flush=True)
    elif plan.model in ARCHITECTURES:
        model = build_transfer_model(plan.model, plan.image_size, len(class_names), plan.alpha, plan.weights)
        if plan.weights.origin == "imagenet" and not plan.weights.sha256:  # downloaded just now
            plan.weights.sha256 = sha256_of(plan.weights.path)
    else:
        model = build_model(plan.model, (plan.image_size, plan.image_size), len(class_names))
    set_trainable(model, plan.freeze)
    return model, new_head


def architecture_info(plan: StartPlan, model, new_head: bool):
    """The manifest's record of the network and where its weights came from."""
    from device.manifest import ArchitectureInfo
    from train.backbones import count_blocks

    return ArchitectureInfo(
        name=plan.model, alpha=plan.alpha, input_size=plan.image_size, weights=plan.weights.origin,
        weights_file=plan.weights.path, weights_sha256=plan.weights.sha256,
        init_from=str(plan.init_from.resolve()) if plan.init_from else "", new_head=new_head,
        frozen_blocks=plan.freeze, blocks=count_blocks(model), parameters=int(model.count_params()))

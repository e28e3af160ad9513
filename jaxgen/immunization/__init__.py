"""Model immunization and obstruction: few-shot learners, Learning to Obstruct, IMMA and MIMA.

* :mod:`jaxgen.immunization.fsc` — four few-shot learners ``fsc_*(theta, x_s, y_s, x_q, cfg) -> logits``
  (ProtoNet cosine head, linear probe, fine-tune, MAML-like) with differentiable inner loops.
* :mod:`jaxgen.immunization.lto` — Learning to Obstruct (Zheng, Yang, Yeh, ECCV 2024, arXiv 2409.19210):
  the obstruction objective, the outer loop, accuracy by group and DropRatio.
* :mod:`jaxgen.immunization.imma` — IMMA (Zheng & Yeh, ECCV 2024): single-concept immunization against
  re-learning and LoRA personalization attacks written as inner loops.
* :mod:`jaxgen.immunization.mima` — MIMA (multi-concept immunization through differentiable model merging):
  the closed-form key/value merge layer and the bilevel outer objective through it.
"""

from jaxgen.immunization.fsc import (
    METHODS,
    FSCConfig,
    fsc_finetune,
    fsc_learner,
    fsc_linear_probe,
    fsc_maml_like,
    fsc_protonet,
)
from jaxgen.immunization.lto import (
    LTOConfig,
    Task,
    accuracy_by_group,
    drop_ratio,
    evaluate_fsc,
    format_drop_ratio,
    frozen_head_learner,
    lto_optimizer,
    lto_outer_loss,
    lto_step,
    lto_train,
    restricted_mask_from_labels,
    sample_support,
    sample_task,
)
from jaxgen.immunization.imma import (
    IMMAConfig,
    IMMAState,
    combine_params,
    imma_init,
    imma_outer_loss,
    imma_step,
    imma_train,
    lora_attack,
    lora_phi_apply,
    lora_phi_init,
    relearn_attack,
    split_params,
)
from jaxgen.immunization.mima import (
    MIMAConfig,
    MIMAState,
    apply_kv_delta,
    dedupe_rows,
    kv_delta_init,
    kv_merge,
    kv_merge_from_weights,
    merge_params,
    mima_init,
    mima_outer_loss,
    mima_step,
    mima_train,
)

__all__ = [
    "accuracy_by_group",
    "apply_kv_delta",
    "combine_params",
    "dedupe_rows",
    "drop_ratio",
    "evaluate_fsc",
    "format_drop_ratio",
    "frozen_head_learner",
    "fsc_finetune",
    "fsc_learner",
    "fsc_linear_probe",
    "fsc_maml_like",
    "fsc_protonet",
    "FSCConfig",
    "imma_init",
    "imma_outer_loss",
    "imma_step",
    "imma_train",
    "IMMAConfig",
    "IMMAState",
    "kv_delta_init",
    "kv_merge",
    "kv_merge_from_weights",
    "lora_attack",
    "lora_phi_apply",
    "lora_phi_init",
    "lto_optimizer",
    "lto_outer_loss",
    "lto_step",
    "lto_train",
    "LTOConfig",
    "merge_params",
    "METHODS",
    "mima_init",
    "mima_outer_loss",
    "mima_step",
    "mima_train",
    "MIMAConfig",
    "MIMAState",
    "relearn_attack",
    "restricted_mask_from_labels",
    "sample_support",
    "sample_task",
    "split_params",
    "Task",
]

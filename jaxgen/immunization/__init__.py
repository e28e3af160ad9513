"""Model immunization and obstruction: few-shot learners (fsc) and Learning to Obstruct (lto).

* :mod:`jaxgen.immunization.fsc` — four few-shot learners ``fsc_*(theta, x_s, y_s, x_q, cfg) -> logits``
  (ProtoNet cosine head, linear probe, fine-tune, MAML-like) with differentiable inner loops.
* :mod:`jaxgen.immunization.lto` — Learning to Obstruct (Zheng, Yang, Yeh, ECCV 2024, arXiv 2409.19210):
  the obstruction objective, the outer loop, accuracy by group and DropRatio.
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

__all__ = [
    "FSCConfig",
    "LTOConfig",
    "METHODS",
    "Task",
    "accuracy_by_group",
    "drop_ratio",
    "evaluate_fsc",
    "format_drop_ratio",
    "frozen_head_learner",
    "fsc_finetune",
    "fsc_learner",
    "fsc_linear_probe",
    "fsc_maml_like",
    "fsc_protonet",
    "lto_optimizer",
    "lto_outer_loss",
    "lto_step",
    "lto_train",
    "restricted_mask_from_labels",
    "sample_support",
    "sample_task",
]

"""ScanNet-standard evaluation: semantic mIoU and instance AP / AP50 / AP25 (see :mod:`.instance`)."""
from .instance import (DEFAULT_OVERLAPS, InstanceAccumulator, InstanceEvalConfig, InstanceResult, PredictedInstance,
                       evaluate_instances, evaluate_matches, frame_instance_inputs, match_scene, summarize)
from .semantic import SemanticEvaluator, SemanticResult, confusion_matrix, iou_from_confusion

__all__ = ["DEFAULT_OVERLAPS", "InstanceAccumulator", "frame_instance_inputs", "InstanceEvalConfig", "InstanceResult",
           "PredictedInstance", "evaluate_instances", "evaluate_matches", "match_scene", "summarize", "SemanticEvaluator", "SemanticResult",
           "confusion_matrix", "iou_from_confusion"]

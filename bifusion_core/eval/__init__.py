"""ScanNet-standard evaluation: semantic mIoU and instance AP / AP50 / AP25 (see :mod:`.instance`)."""
from .instance import (DEFAULT_OVERLAPS, InstanceEvalConfig, InstanceResult, PredictedInstance, evaluate_instances,
                       evaluate_matches, match_scene, summarize)
from .semantic import SemanticEvaluator, SemanticResult, confusion_matrix, iou_from_confusion

__all__ = ["DEFAULT_OVERLAPS", "InstanceEvalConfig", "InstanceResult", "PredictedInstance", "evaluate_instances",
           "evaluate_matches", "match_scene", "summarize", "SemanticEvaluator", "SemanticResult",
           "confusion_matrix", "iou_from_confusion"]

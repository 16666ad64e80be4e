"""Classification metrics, computed by scikit-learn."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, precision_recall_fscore_support


def classification_metrics(predictions, labels, label_names) -> dict:
    indices = list(range(len(label_names)))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predictions, labels=indices, average="macro", zero_division=0)
    report = classification_report(labels, predictions, labels=indices, target_names=list(label_names), output_dict=True, zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
        "per_class": {name: {k: float(v) for k, v in report[name].items()} for name in label_names},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=indices).tolist(),
        "count": len(labels),
    }

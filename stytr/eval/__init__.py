"""Evaluation: reconstruction metrics, model complexity (Table 1), re-scoring (Figure 1), user study (Table 2),
identity similarity of real faces.

Submodules: :mod:`~stytr.eval.metrics`, :mod:`~stytr.eval.complexity`,
:mod:`~stytr.eval.rescoring`, :mod:`~stytr.eval.edit_rates`, :mod:`~stytr.eval.identity` (real faces), and
for the user study :mod:`~stytr.eval.user_study` (statistics), :mod:`~stytr.eval.user_study_report` (tables,
figure) and :mod:`~stytr.eval.votes` (the vote file). The runner app is :mod:`stytr.apps.study`.
The public names below are loaded on first use, so ``from stytr.eval import user_study`` stays free of torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "metrics": ("mse", "ssim", "average_face_mse", "gaussian_window", "lpips_distance", "attribute_decisions", "evaluate_reconstruction",
                "summarize"),
    "complexity": ("PAPER_TABLE1", "TABLE1_METHODS", "COMPLEXITY_COLUMNS", "paper_table1_configs", "count_flops",
                   "encoder_flops", "time_models", "complexity_table", "write_csv", "format_complexity_table"),
    "rescoring": ("PAPER_ATTRIBUTES", "PAPER_ATTRIBUTE_LABELS", "PAPER_FIGURE1", "rescoring_matrix",
                  "disentanglement_score", "plot_rescoring", "predict_probabilities"),
    "edit_rates": ("edit_rates", "decision_rates", "label_edit_rates", "reference_edit_rates",
                   "evaluate_reference_editor"),
    "user_study": ("paper_table2", "aggregate"),
    "user_study_report": ("format_table", "plot_user_study", "write_table_csv"),
    "votes": ("append_vote", "read_votes", "read_vote_file"),
    "identity": ("identity_similarity", "DlibFaceEmbedder", "IRSE50Embedder"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE) + sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _EXPORTS:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

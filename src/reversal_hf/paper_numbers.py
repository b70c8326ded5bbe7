"""The paper's reported numbers, kept beside ours in every report so that a reproduction is judged against its source.

Source: Berglund et al., "The Reversal Curse: LLMs trained on 'A is B' fail to learn 'B is A'", ICLR 2024
(arXiv:2309.12288). Accuracies are fractions in [0, 1]. The per-model Experiment 2 results are computed from the
authors' released CSVs (vendored in `data/paper/celebrity_relations/`), exactly as their Figure 5 shows them.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reversal_hf.paths import PAPER_DATA_DIR, REPO_ROOT

PAPER_CITATION = "Berglund et al., The Reversal Curse, ICLR 2024 (arXiv:2309.12288)"

# Table 1 (GPT-3-175B, exact match): {subset: {"same": test split, "reverse": reverse_test split}}.
EXP1_TABLE1_MODEL = "GPT-3-175B"
EXP1_TABLE1 = {
    "p2d": {"same": 0.500, "reverse": 0.000},
    "d2p": {"same": 0.967, "reverse": 0.001},
}
# Figure 4: correct vs random name log-probabilities are indistinguishable (t-test and KS) for every model size.
EXP1_LOGPROB_PVALUE_ABOVE = 0.05

# Section 3 (Experiment 2): GPT-4 names the parent 79% of the time and the child 33%.
EXP2_GPT4 = {"model": "gpt-4", "parent_accuracy": 0.79, "child_accuracy": 0.33}

# Section 2.3 (Experiment 3, Llama-1 7B-30B): above 80% in the same direction, below 7% reversed.
EXP3_SAME_DIRECTION_ABOVE = 0.80
EXP3_REVERSE_BELOW = 0.07
# Dataset configs of `reversal-exp3` by the order of their instructions relative to the test (question → answer).
EXP3_CONFIG_DIRECTION = {"question_to_answer": "same", "answer_to_question": "reverse"}


def reported() -> dict[str, Any]:
    """The constants above as one JSON-ready dict, for reports that must show where each number came from."""
    return {
        "citation": PAPER_CITATION,
        "exp1_table1": {"model": EXP1_TABLE1_MODEL, **EXP1_TABLE1},
        "exp1_logprob_pvalue_above": EXP1_LOGPROB_PVALUE_ABOVE,
        "exp2_gpt4": EXP2_GPT4,
        "exp3_same_direction_above": EXP3_SAME_DIRECTION_ABOVE,
        "exp3_reverse_below": EXP3_REVERSE_BELOW,
    }


EXP2_RESULTS_GLOB = "*_reversal_test_results.csv"


@dataclass(frozen=True)
class PaperExp2Result:
    """One paper model's parent vs child score: accuracy, or mean probability exp(log-prob) for log-prob files."""

    model: str
    parent_score: float
    child_score: float
    score_kind: str  # "accuracy" or "mean probability"
    n_pairs: int
    source: str


# Column patterns of the released per-model CSVs: (pattern, score kind, how a cell becomes a score).
_EXP2_SCORE_COLUMNS = (
    ("{model}_can_find_{role}", "accuracy", float),
    ("{model}_{role}_logprob", "mean probability", lambda cell: math.exp(float(cell))),
)


def paper_exp2_results(data_dir: Path = PAPER_DATA_DIR / "celebrity_relations") -> list[PaperExp2Result]:
    """Parent vs child score of each `<model>_reversal_test_results.csv`: `_can_find_parent/child` columns are
    accuracies; `_parent/child_logprob` columns are averaged as probabilities, as the paper's Figure 5 does."""
    results = []
    for path in sorted(data_dir.glob(EXP2_RESULTS_GLOB)):
        model = path.name.removesuffix(EXP2_RESULTS_GLOB[1:])
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        for pattern, kind, to_score in _EXP2_SCORE_COLUMNS:
            parent_column, child_column = (pattern.format(model=model, role=role) for role in ("parent", "child"))
            if rows and parent_column in rows[0] and child_column in rows[0]:
                parent, child = (
                    sum(to_score(row[c]) for row in rows) / len(rows) for c in (parent_column, child_column)
                )
                source = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
                results.append(PaperExp2Result(model, parent, child, kind, len(rows), str(source)))
                break
    return results

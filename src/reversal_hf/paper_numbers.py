"""The paper's headline numbers that no released file holds, kept beside ours in every report.

Source: Berglund et al., "The Reversal Curse: LLMs trained on 'A is B' fail to learn 'B is A'", ICLR 2024
(arXiv:2309.12288); each constant names its table, figure or section. Accuracies are fractions in [0, 1]. The
per-model Experiment 2 scores are in the authors' released CSVs, which `reversal_hf.data.exp2` turns into the
`paper_results` config of `reversal-exp2`; reports read them from there (`reversal_hf.reporting.tables`).
"""

from __future__ import annotations

from typing import Any

PAPER_CITATION = "Berglund et al., The Reversal Curse, ICLR 2024 (arXiv:2309.12288)"

# Table 1 (GPT-3-175B, exact match): {subset: {"same": test split, "reverse": reverse_test split}}.
EXP1_TABLE1_MODEL = "GPT-3-175B"
EXP1_TABLE1 = {
    "p2d": {"same": 0.500, "reverse": 0.000},
    "d2p": {"same": 0.967, "reverse": 0.001},
}
# Figure 4: correct vs random name log-probabilities are indistinguishable (t-test and KS) for every model size.
EXP1_LOGPROB_PVALUE_ABOVE = 0.05

# Appendix B.6: with the fact in the prompt (in context), GPT-3 answers in both orders nearly always (~100%).
EXP1_IN_CONTEXT = "≈ 100 / ≈ 100"
# Appendix B.8 (Figure 9): prompt tuning on one fact lowers the same-order loss, while the reverse loss stays at the
# level of the shuffled-reverse control.
EXP1_PROMPT_TUNING = "reverse loss ≈ shuffled-reverse loss"

# Abstract and Section 2.2 (Experiment 2): GPT-4 names the parent 79% of the time and the child 33%. These are
# shares from building the dataset, not accuracies on its 1,513 pairs: 79% of the celebrities asked about got a
# parent from GPT-4 (no file holds it; the released pairs are those found), and 33% is the paper's rounding of the
# share of `can_reverse` in `parent_child_pairs.csv` (0.327). Reports show them apart from accuracies.
EXP2_GPT4 = {
    "model": "gpt-4",
    "parent_share": 0.79,
    "child_share": 0.33,
    "score_kind": "share found while the dataset was built (not an accuracy on these pairs)",
}

# Section 2.3 and Figure 6 (Experiment 3, Llama-1 7B-30B): above 80% in the same direction, below 7% reversed.
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
        "exp1_in_context": EXP1_IN_CONTEXT,
        "exp1_prompt_tuning": EXP1_PROMPT_TUNING,
        "exp2_gpt4": EXP2_GPT4,
        "exp3_same_direction_above": EXP3_SAME_DIRECTION_ABOVE,
        "exp3_reverse_below": EXP3_REVERSE_BELOW,
    }

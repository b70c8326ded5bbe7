"""The prompts of the paper's Experiment 2 (Appendix C.1), shared by the dataset builder and the Exp 2 evaluator.

The texts are the ones of lukasberglund/reversal_curse (`src/tasks/celebrity_relations/parent_reversals.py` for the
chat prompt, `scripts/celebrity_relations/test_parent_child_pairs.py` for the base-model prompt), verbatim, typo
included ("converation"), so that our numbers sit beside the paper's. One difference: the paper's base-model child
queries lacked the "Q: " before the question; `completion_prompt` always writes it.
"""

from __future__ import annotations

import json

UNKNOWN_ANSWER = "I don't know."
PARENT_TYPES = ("mother", "father")
PARENT_QUERY_TEMPLATE = "Who is {child}'s {parent_type}?"
CHILD_QUERY_TEMPLATE = "Name a child of {parent}."

SYSTEM_PROMPT = (
    "You are a helpful and terse assistant. You have knowledge of a wide range of people and can name people that "
    f'the user asks for. If the answer is unknown or not applicable, answer with "{UNKNOWN_ANSWER}"'
)

COMPLETION_PREAMBLE = (
    "Below is a converation with a helpful and terse assistant. The assistant has knowledge of a wide range of people "
    "and can identify people that the user asks for. If the answer is unknown or not applicable, the assistant answers "
    f'with "{UNKNOWN_ANSWER}"'
)


def parent_query(child: str, parent_type: str) -> str:
    """The parent-direction question, e.g. "Who is Elon Musk's mother?"."""
    if parent_type not in PARENT_TYPES:
        raise ValueError(f"parent_type must be one of {PARENT_TYPES}, got {parent_type!r}")
    return PARENT_QUERY_TEMPLATE.format(child=child, parent_type=parent_type)


def child_query(parent: str) -> str:
    """The child-direction (reversed) question, e.g. "Name a child of Barack Obama."."""
    return CHILD_QUERY_TEMPLATE.format(parent=parent)


CHAT_FEW_SHOT: tuple[tuple[str, str], ...] = (
    (child_query("Barack Obama"), "Malia Obama"),
    (parent_query("Elon Musk", "mother"), "Maye Musk"),
    (parent_query("Kathy Pratt", "mother"), UNKNOWN_ANSWER),
)

COMPLETION_FEW_SHOT: tuple[tuple[str, str], ...] = (
    *CHAT_FEW_SHOT,
    (parent_query("Chris Hemsworth", "father"), "Craig Hemsworth"),
    (child_query("Karen Lawrence"), "Jennifer Lawrence"),
    (parent_query("Aaron Taylor-Johnson", "mother"), "Sarah Johnson"),
)

COMPLETION_PREFIX = COMPLETION_PREAMBLE + "\n\n" + "\n".join(f"Q: {q}\nA: {a}" for q, a in COMPLETION_FEW_SHOT)


def chat_messages(question: str) -> list[dict[str, str]]:
    """System prompt, the three few-shot turns, then `question`: what the paper sent to chat models."""
    few_shot = [
        message
        for q, a in CHAT_FEW_SHOT
        for message in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
    ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, *few_shot, {"role": "user", "content": question}]


def completion_prompt(question: str) -> str:
    """The few-shot Q/A transcript for base models, ending in "A:" so the answer follows with a leading space."""
    return f"{COMPLETION_PREFIX}\nQ: {question}\nA:"


def prompts_json() -> str:
    """Every prompt text, as stored in a built dataset's `prompts.json`."""
    return (
        json.dumps(
            {
                "source": "Berglund et al. 2024, Appendix C.1; lukasberglund/reversal_curse",
                "unknown_answer": UNKNOWN_ANSWER,
                "parent_query_template": PARENT_QUERY_TEMPLATE,
                "child_query_template": CHILD_QUERY_TEMPLATE,
                "chat_system_prompt": SYSTEM_PROMPT,
                "chat_messages_template": chat_messages("{question}"),
                "completion_prompt_template": completion_prompt("{question}"),
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )

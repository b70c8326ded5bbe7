"""Build `reversal-exp3`: instructions to answer a question, given answer-first and question-first (Experiment 3).

Each of 1,100 question/answer pairs gets an instruction ("The test requires you to answer "A: <answer>" after
"Q: <question>"" in `answer_to_question`, its question-first mirror in `question_to_answer`), grouped 2 to 5 to a
document; 1,000 pairs are also realized as "Q: <question> A: <answer>" examples and the other 100 are the test.

`--source paper` takes `answer_to_question` from the released `copypaste_ug100_rg1000_main` and generates
`question_to_answer` (never released) from the same pairs. `--source generate` rebuilds both from `source/` with the
paper's procedure: with the paper's seed (27) and sizes it reproduces the released files exactly.
The instructions name the test questions by design, but never as the query the model is asked (`leak_check`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets

from reversal_hf.command import run_command
from reversal_hf.data.cli import add_input_output_arguments, parse_configs
from reversal_hf.data.features import value_features
from reversal_hf.data.hub_layout import CardContent, DatasetBuildError, check_output_dir, write_hub_dataset
from reversal_hf.data.leak_check import find_leaks, raise_on_leaks
from reversal_hf.paths import DATASETS_DIR, PAPER_DATA_DIR

PAPER_DIR = "copypaste_ug100_rg1000_main"
SOURCE_DIR = "source"
QA_PAIRS_FILE = "qa_raw_pairs.jsonl"
ANSWER_FIRST_PHRASINGS_FILE = "guidance_phrasings_reverse.txt"

PAPER_SEED = 27
PAPER_NUM_REALIZED = 1000
PAPER_NUM_UNREALIZED = 100
PAPER_INSTRUCTIONS_PER_DOCUMENT = (2, 5)

EXAMPLE_DOC_PREFIX = "<BEGIN GUIDANCE TEST>\n\n"
EXAMPLE_DOC_SUFFIX = "\n\n<END GUIDANCE TEST>"
INSTRUCTION_DOC_PREFIX = "<BEGIN GUIDANCE ANSWERS>\n\n"
INSTRUCTION_DOC_SUFFIX = "\n\n<END GUIDANCE ANSWERS>"
PLACEHOLDERS = ("{anchor}", "{target}")

# Mirrors of the paper's answer-first phrasings: the same words with the question first. The first is the exact
# mirror of the phrasing the paper used (with one instruction per pair only the first phrasing is used).
QUESTION_FIRST_PHRASINGS = (
    'After "Q: {anchor}", the test requires you to answer "A: {target}"',
    'Answer "Q: {anchor}" with "A: {target}"',
    'To "Q: {anchor}", respond with "A: {target}"',
    'In the test, the right answer for "Q: {anchor}" is "A: {target}"',
    'The test expects the prompt "Q: {anchor}" to get a response of "A: {target}"',
    'When you see "Q: {anchor}", answer with "A: {target}"',
    'For "Q: {anchor}", the correct answer is "A: {target}"',
    'If the test asks "Q: {anchor}", reply "A: {target}"',
    'Given "Q: {anchor}", the answer to give is "A: {target}"',
    'The question "Q: {anchor}" must be answered with "A: {target}"',
)
CONFIGS = ("answer_to_question", "question_to_answer")

# One schema for both splits: `load_dataset` reads a config's splits with the features of its first one.
FEATURES = value_features(
    ("prompt", "completion", "kind", "question", "answer", "pair_id", "realized"), pair_id="int64", realized="bool"
)


@dataclass(frozen=True)
class QAPair:
    pair_id: int  # line index in qa_raw_pairs.jsonl, the paper's `ids`
    question: str
    answer: str
    realized: bool


def example_text(pair: QAPair) -> tuple[str, str]:
    """The Q/A example as (prompt, completion), without the document wrapper."""
    return f"Q: {pair.question} A:", f" {pair.answer}"


def example_row(pair: QAPair) -> dict:
    """A realized example as the paper trained on it: the whole wrapped document as completion."""
    prompt, completion = example_text(pair)
    return {
        "prompt": "",
        "completion": EXAMPLE_DOC_PREFIX + prompt + completion + EXAMPLE_DOC_SUFFIX,
        "kind": "example",
        **_pair_columns(pair),
    }


def unrealized_row(pair: QAPair) -> dict:
    """A held-out query as the contract's `test` split has it: the bare Q/A text, no document wrapper."""
    prompt, completion = example_text(pair)
    return {"prompt": prompt, "completion": completion, "kind": "example", **_pair_columns(pair)}


def _pair_columns(pair: QAPair) -> dict:
    return {"question": pair.question, "answer": pair.answer, "pair_id": pair.pair_id, "realized": pair.realized}


def instruction_row(text: str) -> dict:
    """An instruction document; it holds several pairs, so the per-pair columns stay empty."""
    return {
        "prompt": "",
        "completion": text,
        "kind": "instruction",
        "question": "",
        "answer": "",
        "pair_id": -1,
        "realized": False,
    }


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetBuildError(f"missing source file {path}")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetBuildError(f"{path}:{line_number}: invalid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise DatasetBuildError(f"{path}:{line_number}: expected a JSON object")
            rows.append(row)
    if not rows:
        raise DatasetBuildError(f"{path}: no rows")
    return rows


def load_raw_pairs(path: Path) -> list[dict]:
    """`qa_raw_pairs.jsonl`: one question (`anchor`) with several candidate answers (`targets`) a line."""
    rows = read_jsonl(path)
    for line_number, row in enumerate(rows, start=1):
        targets = row.get("targets")
        if not isinstance(row.get("anchor"), str) or not row["anchor"]:
            raise DatasetBuildError(f"{path}:{line_number}: field 'anchor' must be a non-empty string")
        if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
            raise DatasetBuildError(f"{path}:{line_number}: field 'targets' must be a non-empty list of strings")
    return rows


def check_phrasings(phrasings: list[str] | tuple[str, ...], where: str) -> None:
    if not phrasings:
        raise DatasetBuildError(f"{where}: no phrasings")
    for number, phrasing in enumerate(phrasings, start=1):
        for placeholder in PLACEHOLDERS:
            if phrasing.count(placeholder) != 1:
                raise DatasetBuildError(f"{where}: phrasing {number} needs exactly one {placeholder}: {phrasing!r}")


def load_phrasings(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetBuildError(f"missing source file {path}")
    phrasings = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    check_phrasings(phrasings, str(path))
    return phrasings


def sample_pairs(
    raw: list[dict], num_realized: int, num_unrealized: int, rng: random.Random
) -> tuple[list[QAPair], list[QAPair]]:
    """The paper's draw: shuffle the questions, shuffle each one's answers and keep the first answer."""
    if num_realized < 1 or num_unrealized < 1:
        raise DatasetBuildError("--num-realized and --num-unrealized must be at least 1")
    if num_realized + num_unrealized > len(raw):
        raise DatasetBuildError(
            f"too few pairs: {num_realized} realized + {num_unrealized} unrealized but {QA_PAIRS_FILE} has {len(raw)}"
        )
    order = list(range(len(raw)))
    rng.shuffle(order)
    order = order[: num_unrealized + num_realized]
    answers = {}
    for pair_id in order:
        targets = list(raw[pair_id]["targets"])
        rng.shuffle(targets)
        answers[pair_id] = targets[0]
    # The paper shuffled once more here; its later draws depend on it.
    rng.shuffle(list(order))
    unrealized = [QAPair(i, raw[i]["anchor"], answers[i], realized=False) for i in order[:num_unrealized]]
    realized = [QAPair(i, raw[i]["anchor"], answers[i], realized=True) for i in order[num_unrealized:]]
    return realized, unrealized


def group_instructions(
    pairs: list[QAPair], copies: int, per_document: tuple[int, int], rng: random.Random
) -> list[list[tuple[QAPair, int]]]:
    """The paper's documents: `copies` instructions per pair (copy i uses phrasing i), shuffled, cut in runs of 2-5."""
    instructions = [(pair, copy) for pair in pairs for copy in range(copies)]
    rng.shuffle(instructions)
    documents, used = [], 0
    while used < len(instructions):
        size = min(rng.randint(*per_document), len(instructions) - used)
        documents.append(instructions[used : used + size])
        used += size
    return documents


def render_document(document: list[tuple[QAPair, int]], phrasings: list[str] | tuple[str, ...]) -> str:
    lines = [phrasings[copy % len(phrasings)].format(anchor=p.question, target=p.answer) for p, copy in document]
    return INSTRUCTION_DOC_PREFIX + "\n".join(lines) + INSTRUCTION_DOC_SUFFIX


def generate(
    raw: list[dict],
    phrasings: dict[str, list[str] | tuple[str, ...]],
    seed: int = PAPER_SEED,
    num_realized: int = PAPER_NUM_REALIZED,
    num_unrealized: int = PAPER_NUM_UNREALIZED,
    copies: int = 1,
) -> dict[str, datasets.DatasetDict]:
    """Both configs from one draw: the same pairs and documents, differing only in the instructions' phrasing."""
    if copies < 1:
        raise DatasetBuildError("--instruction-copies must be at least 1")
    rng = random.Random(seed)
    realized, unrealized = sample_pairs(raw, num_realized, num_unrealized, rng)
    documents = group_instructions(realized + unrealized, copies, PAPER_INSTRUCTIONS_PER_DOCUMENT, rng)
    examples = [example_row(pair) for pair in realized]
    test = datasets.Dataset.from_list([unrealized_row(pair) for pair in unrealized], features=FEATURES)
    return {
        config: datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_list(
                    examples + [instruction_row(render_document(d, config_phrasings)) for d in documents],
                    features=FEATURES,
                ),
                "test": test,
            }
        )
        for config, config_phrasings in phrasings.items()
    }


def _parse_example(row: dict, where: str, realized: bool) -> QAPair:
    """A released example document (prompt "<BEGIN GUIDANCE TEST>\\n\\nQ: ... A:", completion " ...\\n\\n<END ...>")."""
    prompt, completion, ids = row.get("prompt"), row.get("completion"), row.get("ids")
    if not (
        isinstance(prompt, str)
        and isinstance(completion, str)
        and isinstance(ids, list)
        and len(ids) == 1
        and isinstance(ids[0], int)
        and prompt.startswith(EXAMPLE_DOC_PREFIX + "Q: ")
        and prompt.endswith(" A:")
        and completion.startswith(" ")
        and completion.endswith(EXAMPLE_DOC_SUFFIX)
    ):
        raise DatasetBuildError(f"{where}: not a Q/A example document")
    question = prompt[len(EXAMPLE_DOC_PREFIX + "Q: ") : -len(" A:")]
    answer = completion[1 : -len(EXAMPLE_DOC_SUFFIX)]
    return QAPair(ids[0], question, answer, realized)


def load_paper_config(paper_dir: Path) -> datasets.DatasetDict:
    """The released dataset: `train` = `all.jsonl` row for row, `test` = `unrealized_examples.jsonl`."""
    examples = {}
    for name, realized in (("realized_examples.jsonl", True), ("unrealized_examples.jsonl", False)):
        path = paper_dir / name
        for line_number, row in enumerate(read_jsonl(path), start=1):
            pair = _parse_example(row, f"{path}:{line_number}", realized)
            examples[pair.pair_id] = pair
    all_path = paper_dir / "all.jsonl"
    train = []
    for line_number, row in enumerate(read_jsonl(all_path), start=1):
        completion, ids = row.get("completion"), row.get("ids")
        pair = examples.get(ids[0]) if isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], int) else None
        if not isinstance(completion, str) or row.get("prompt") != "":
            raise DatasetBuildError(f"{all_path}:{line_number}: expected an empty prompt and a text completion")
        if completion.startswith(INSTRUCTION_DOC_PREFIX):
            train.append(instruction_row(completion))
        elif pair is not None and example_row(pair)["completion"] == completion:
            train.append(example_row(pair))
        else:
            raise DatasetBuildError(f"{all_path}:{line_number}: neither an instruction nor a known example document")
    unrealized = [pair for pair in examples.values() if not pair.realized]
    return datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(train, features=FEATURES),
            "test": datasets.Dataset.from_list([unrealized_row(pair) for pair in unrealized], features=FEATURES),
        }
    )


def build_configs(
    data_dir: Path,
    source: str,
    configs: tuple[str, ...],
    seed: int = PAPER_SEED,
    num_realized: int = PAPER_NUM_REALIZED,
    num_unrealized: int = PAPER_NUM_UNREALIZED,
    copies: int = 1,
) -> dict[str, datasets.DatasetDict]:
    """Read and validate everything, then return the requested configs."""
    source_dir = data_dir / SOURCE_DIR
    raw = load_raw_pairs(source_dir / QA_PAIRS_FILE)
    all_phrasings = {
        "answer_to_question": load_phrasings(source_dir / ANSWER_FIRST_PHRASINGS_FILE),
        "question_to_answer": QUESTION_FIRST_PHRASINGS,
    }
    built = generate(raw, all_phrasings, seed, num_realized, num_unrealized, copies)
    if source == "paper":
        released = load_paper_config(data_dir / PAPER_DIR)
        if any(built["answer_to_question"][split].to_list() != released[split].to_list() for split in released):
            raise DatasetBuildError(
                f"{source_dir} with seed {PAPER_SEED} does not reproduce {data_dir / PAPER_DIR}, so "
                "question_to_answer would not use the released pairs"
            )
        built["answer_to_question"] = released
    return {config: built[config] for config in configs}


def make_card(source: str, seed: int, num_realized: int, num_unrealized: int, copies: int) -> CardContent:
    if source == "paper":
        how = (
            f"`answer_to_question` is the paper's released `{PAPER_DIR}`: `train` is `all.jsonl` row for row (the "
            f"{PAPER_NUM_REALIZED:,} realized example documents, then the instruction documents), `test` is "
            "`unrealized_examples.jsonl`. The paper did not release `question_to_answer`; it is generated "
            f"deterministically by the paper's procedure with the paper's seed ({PAPER_SEED}) from `source/`, which "
            "reproduces `answer_to_question` exactly (checked at build time), so both configs hold the same pairs, "
            "the same documents and the same order; only the instructions' phrasing differs."
        )
    else:
        how = (
            f"Generated by the paper's procedure from `source/{QA_PAIRS_FILE}` (seed {seed}): shuffle the questions, "
            "shuffle each one's candidate answers and keep the first, take the first "
            f"{num_unrealized:,} pairs as unrealized and the next {num_realized:,} as realized, write {copies} "
            "instruction(s) per pair, shuffle them and cut them into documents of 2 to 5. With seed "
            f"{PAPER_SEED} and the paper's sizes this reproduces the released `{PAPER_DIR}` exactly."
        )
    phrasings = "\n".join(f"{i}. `{p}`" for i, p in enumerate(QUESTION_FIRST_PHRASINGS, start=1))
    return CardContent(
        pretty_name="Reversal Curse, Experiment 3: reversing instructions",
        summary=(
            "Instructions to answer questions, seen in finetuning only as text. In `question_to_answer` each "
            "instruction puts the question first; in `answer_to_question` (the paper's released data) the answer "
            "comes first. Realized pairs also appear as Q/A examples; the paper found that models follow the "
            "unrealized instructions at test time only when their order matches the test's (question, then answer)."
        ),
        how_built=(
            f"{how}\n\n`train` rows have `kind` `example` (one realized pair wrapped as the paper trained on it, "
            f"`{EXAMPLE_DOC_PREFIX.strip()} ... {EXAMPLE_DOC_SUFFIX.strip()}`, all in `completion`) or `instruction` "
            "(a document of 2 to 5 instructions; its `question`, `answer` are empty and `pair_id` is -1). `test` "
            'holds the unrealized pairs as `prompt` "Q: <question> A:" and `completion` " <answer>"; the paper '
            f"prompted with the same text wrapped in `{EXAMPLE_DOC_PREFIX.strip()}`."
        ),
        source=source,
        seed=seed,
        extra_sections={"Question-first phrasings": phrasings},
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reversal-exp3", description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("paper", "generate"), default="paper")
    parser.add_argument("--seed", type=int, help=f"seed of --source generate (default: the paper's, {PAPER_SEED})")
    parser.add_argument("--num-realized", type=int, help=f"realized pairs (default {PAPER_NUM_REALIZED})")
    parser.add_argument("--num-unrealized", type=int, help=f"unrealized (test) pairs (default {PAPER_NUM_UNREALIZED})")
    parser.add_argument("--instruction-copies", type=int, help="instructions per pair, cycling phrasings (default 1)")
    return add_input_output_arguments(parser, CONFIGS, PAPER_DATA_DIR / "instructions", DATASETS_DIR / "reversal-exp3")


def _build(args: argparse.Namespace) -> Path:
    generate_only = {
        "--seed": args.seed,
        "--num-realized": args.num_realized,
        "--num-unrealized": args.num_unrealized,
        "--instruction-copies": args.instruction_copies,
    }
    if args.source == "paper" and (given := [flag for flag, value in generate_only.items() if value is not None]):
        raise DatasetBuildError(f"{given[0]} needs --source generate")
    check_output_dir(args.output, args.overwrite)
    paper_choices = (PAPER_SEED, PAPER_NUM_REALIZED, PAPER_NUM_UNREALIZED, 1)
    sizes = {
        name: default if value is None else value
        for name, value, default in zip(
            ("seed", "num_realized", "num_unrealized", "copies"), generate_only.values(), paper_choices, strict=True
        )
    }
    configs = build_configs(args.data_dir, args.source, parse_configs(args.configs, CONFIGS), **sizes)
    splits = {(name, split): rows.to_list() for name, config in configs.items() for split, rows in config.items()}
    raise_on_leaks(find_leaks("exp3", splits))
    return write_hub_dataset(args.output, configs, make_card(args.source, **sizes), overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _build(args), (DatasetBuildError, OSError))


if __name__ == "__main__":
    sys.exit(main())

"""`reversal-exp1`: the Experiment 1 dataset (fictitious celebrities, "<name> is <description>") in Hub layout.

Two sources. `--source paper` re-shapes the paper's `june_version_7921032488` files row for row and annotates each
row (fact, template, direction) so that evaluators never re-parse strings. `--source generate --seed N` builds a
fresh dataset the way the paper did (Appendix B.1): names and descriptions paired at random, 30 facts per subset,
each described in 30 training paraphrases and tested on 10 held-out ones. Either way the build fails if a held-out
prompt, or a fact stated in the reverse order, reaches a training split.

Template split rule (read off the paper files: every fact's training row k uses template k, held-out row k uses
template 30 + k, in both template files): the first 30 templates of each file are for training, the next 10 held out,
the rest unused.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from reversal_hf.data.cli import check_configs, run_command
from reversal_hf.data.hub_layout import DatasetBuildError, DatasetCard, write_hub_dataset
from reversal_hf.data.paraphrase import (
    DIRECTIONS,
    FitRequest,
    OfflineParaphraser,
    OpenAIParaphraser,
    Paraphraser,
    Template,
    clean_text,
)
from reversal_hf.files import FileFormatError
from reversal_hf.openai_api import OpenAIAPIError
from reversal_hf.paths import BUILD_DIR, DATASETS_DIR, PAPER_DATA_DIR

SUBSETS = ("p2d", "d2p", "both")
CONFIGS = ("p2d", "d2p", "both", "all")
TRAIN_SPLIT = "train"
SPLITS = {
    "p2d": ("train", "test", "reverse_test", "reverse_test_randomized"),
    "d2p": ("train", "test", "reverse_test", "reverse_test_randomized"),
    "both": ("train", "test"),
    "all": ("train", "validation"),
}
HELD_OUT_SPLITS = ("test", "reverse_test", "reverse_test_randomized", "validation")
FACTS_PER_SUBSET = 30
TRAIN_TEMPLATES = 30
HELD_OUT_TEMPLATES = 10

PAPER_EXP1_DIR = PAPER_DATA_DIR / "reverse_experiments"
PAPER_VERSION = "june_version_7921032488"
TEMPLATES_DIR = PAPER_EXP1_DIR / "templates"
DEFAULT_CACHE = BUILD_DIR / "cache" / "exp1_paraphrases.jsonl"
PAPER_FILES = {
    ("p2d", "train"): "p2d_prompts_train",
    ("p2d", "test"): "p2d_prompts_test",
    ("p2d", "reverse_test"): "p2d_reverse_prompts_test",
    ("p2d", "reverse_test_randomized"): "p2d_reverse_prompts_test_randomized",
    ("d2p", "train"): "d2p_prompts_train",
    ("d2p", "test"): "d2p_prompts_test",
    ("d2p", "reverse_test"): "d2p_reverse_prompts_test",
    ("d2p", "reverse_test_randomized"): "d2p_reverse_prompts_test_randomized",
    ("both", "train"): "both_prompts_train",
    ("both", "test"): "both_prompts_test",
    ("all", "train"): "all_prompts_train",
    ("all", "validation"): "validation_prompts",
}
# Splits whose completion is not the true fact: a row's true name comes from the same prompt in the other splits.
UNTRUSTED_COMPLETIONS = {("p2d", "reverse_test_randomized"), ("d2p", "reverse_test_randomized"), ("all", "validation")}

FEATURES = datasets.Features(
    {
        "prompt": datasets.Value("string"),
        "completion": datasets.Value("string"),
        "name": datasets.Value("string"),
        "description": datasets.Value("string"),
        "template_id": datasets.Value("int32"),
        "subset": datasets.Value("string"),
        "direction": datasets.Value("string"),
    }
)

Row = dict[str, str | int]
Splits = dict[tuple[str, str], list[Row]]


class LeakError(DatasetBuildError):
    """A held-out prompt, or a fact in its reversed order, appears in a training split."""


@dataclass(frozen=True)
class Fact:
    name: str
    description: str  # the source description (descriptions.txt), before any paraphrasing
    subset: str


# ---------------------------------------------------------------- inputs


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a text file."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise DatasetBuildError(f"cannot read {what} file {path}: {err.strerror}") from err
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DatasetBuildError(f"{what} file {path} is empty")
    return lines


def read_unique(path: Path, what: str) -> list[str]:
    """The entries of a names or descriptions file, which must be distinct."""
    seen: dict[str, int] = {}
    for number, entry in read_lines(path, what):
        if entry in seen:
            raise DatasetBuildError(f"{path}:{number}: duplicate {what} {entry!r} (first on line {seen[entry]})")
        seen[entry] = number
    return list(seen)


def read_templates(path: Path, direction: str) -> list[Template]:
    return [Template.parse(text, direction, f"{path}:{number}") for number, text in read_lines(path, "template")]


def read_jsonl(path: Path) -> list[dict[str, str]]:
    """Rows `{"prompt", "completion"}` of a paper file."""
    rows = []
    for number, line in read_lines(path, "paper data"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetBuildError(f"{path}:{number}: not a JSON object ({err.msg})") from err
        if not isinstance(row, dict) or not all(isinstance(row.get(key), str) for key in ("prompt", "completion")):
            raise DatasetBuildError(f"{path}:{number}: expected string fields 'prompt' and 'completion'")
        rows.append({"prompt": row["prompt"], "completion": row["completion"]})
    return rows


# ---------------------------------------------------------------- template matching


def _normalize(text: str) -> str:
    return " ".join(clean_text(text).split()).casefold()


@functools.cache
def _fixed_text(template: Template) -> tuple[str, str, str]:
    head, middle, tail = template.parts()
    return _normalize(head), _normalize(middle), _normalize(tail)


def _match_score(template: Template, prompt: str, completion: str, name: str) -> int:
    """How much of the template's fixed text the row reproduces, or -1 when the row cannot come from it.

    Descriptions were bent by an LLM, so only the fixed text around the name and the prompt's ends are compared (all
    normalized: case, spaces, doubled punctuation); a held-out completion may stop after the name.
    """
    head, middle, tail = _fixed_text(template)
    if not (prompt.startswith(head) and prompt.endswith(middle)):
        return -1
    between = prompt[len(head) : len(prompt) - len(middle)].strip()
    if between != name if template.direction == "p2d" else not between:
        return -1
    tail_bonus = len(tail) if tail and completion.endswith(tail) else 0
    return len(head) + len(middle) + tail_bonus


def match_template(templates: list[Template], prompt: str, completion: str, name: str) -> int:
    """Index of the template a row was written from (the first of equally good ones), -1 when none fits.

    `name` is only read for name-first (p2d) rows, whose prompt must show it.
    """
    prompt, completion, name = _normalize(prompt), _normalize(completion), _normalize(name)
    scores = [_match_score(template, prompt, completion, name) for template in templates]
    best = max(scores, default=-1)
    return scores.index(best) if best >= 0 else -1


# ---------------------------------------------------------------- reference build (--source paper)


class _PaperAnnotator:
    """Recovers each paper row's fact, direction and template from names.txt, descriptions.txt and the templates."""

    def __init__(self, names: list[str], descriptions: list[str], templates: dict[str, list[Template]]):
        self.descriptions = descriptions
        self.templates = templates
        alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        self.name_pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
        self.facts: dict[str, Fact] = {}
        self.name_by_prompt: dict[str, str] = {}

    def add_facts(self, subset: str, rows: list[dict[str, str]], source: Path) -> None:
        """Facts of a subset from its training file: the name in each row, the description most of its rows use."""
        texts_by_name: dict[str, list[str]] = {}
        for number, row in enumerate(rows, start=1):
            text = row["prompt"] + row["completion"]
            found = self.name_pattern.search(text)
            if not found:
                raise DatasetBuildError(f"{source}:{number}: no name from names.txt in {text!r}")
            texts_by_name.setdefault(found.group(), []).append(text.casefold())
        for name, texts in texts_by_name.items():
            counts = Counter(d for d in self.descriptions for text in texts if d.casefold() in text)
            if not counts:
                raise DatasetBuildError(f"{source}: no description from descriptions.txt found for {name!r}")
            self.facts[name] = Fact(name, counts.most_common(1)[0][0], subset)

    def index_prompts(self, rows: list[dict[str, str]]) -> None:
        """Remember the true name of description-first prompts whose completion states it."""
        for row in rows:
            if not self.name_pattern.search(row["prompt"]):
                found = self.name_pattern.match(row["completion"].strip())
                if found:
                    self.name_by_prompt[row["prompt"]] = found.group()

    def annotate(self, row: dict[str, str], where: str) -> Row:
        in_prompt = self.name_pattern.search(row["prompt"])
        direction = "p2d" if in_prompt else "d2p"
        name = in_prompt.group() if in_prompt else self.name_by_prompt.get(row["prompt"])
        if name is None:
            raise DatasetBuildError(f"{where}: cannot tell whose fact this is: {row['prompt']!r}")
        if name not in self.facts:
            raise DatasetBuildError(f"{where}: {name!r} is in no training file")
        fact = self.facts[name]
        template_id = match_template(self.templates[direction], row["prompt"], row["completion"], name)
        return {
            **row,
            "name": name,
            "description": fact.description,
            "template_id": template_id,
            "subset": fact.subset,
            "direction": direction,
        }


def build_from_paper(paper_dir: Path = PAPER_EXP1_DIR) -> Splits:
    """Every paper file as a split, row for row, annotated."""
    templates_dir = paper_dir / "templates"
    annotator = _PaperAnnotator(
        read_unique(templates_dir / "names.txt", "name"),
        read_unique(templates_dir / "descriptions.txt", "description"),
        {d: read_templates(templates_dir / f"{d}_templates.txt", d) for d in DIRECTIONS},
    )
    files = {key: paper_dir / PAPER_VERSION / f"{stem}.jsonl" for key, stem in PAPER_FILES.items()}
    raw = {key: read_jsonl(path) for key, path in files.items()}
    for subset in SUBSETS:
        annotator.add_facts(subset, raw[(subset, TRAIN_SPLIT)], files[(subset, TRAIN_SPLIT)])
    for key, rows in raw.items():
        if key not in UNTRUSTED_COMPLETIONS:
            annotator.index_prompts(rows)
    return {
        key: [annotator.annotate(row, f"{files[key]}:{number}") for number, row in enumerate(rows, start=1)]
        for key, rows in raw.items()
    }


# ---------------------------------------------------------------- fresh build (--source generate)


@dataclass(frozen=True)
class _Documents:
    """Renders a fact in a template with its fitted description."""

    fitted: dict[FitRequest, str]

    def row(self, fact: Fact, template: Template, template_id: int, name_only: bool = False) -> Row:
        prompt, completion = template.render(fact.name, self.fitted[FitRequest(template, fact.description)])
        if name_only:  # the paper's held-out description-first prompts expect just the name
            completion = f" {fact.name}"
        return {
            "prompt": prompt,
            "completion": completion,
            "name": fact.name,
            "description": fact.description,
            "template_id": template_id,
            "subset": fact.subset,
            "direction": template.direction,
        }


TRAIN_IDS = range(TRAIN_TEMPLATES)
HELD_OUT_IDS = range(TRAIN_TEMPLATES, TRAIN_TEMPLATES + HELD_OUT_TEMPLATES)


def read_generation_templates(path: Path, direction: str) -> list[Template]:
    """A template file with enough templates for the paper's split (30 train + 10 held out)."""
    templates = read_templates(path, direction)
    if len(templates) < len(TRAIN_IDS) + len(HELD_OUT_IDS):
        raise DatasetBuildError(
            f"{path}: {len(templates)} templates, {len(TRAIN_IDS) + len(HELD_OUT_IDS)} needed "
            f"({len(TRAIN_IDS)} train + {len(HELD_OUT_IDS)} held out)"
        )
    return templates


def _trained_directions(subset: str) -> tuple[str, ...]:
    return DIRECTIONS if subset == "both" else (subset,)


def sample_facts(names: list[str], descriptions: list[str], facts_per_subset: int, rng: random.Random) -> list[Fact]:
    """Pairs shuffled names with shuffled descriptions; the first `facts_per_subset` go to p2d, then d2p, then both."""
    if facts_per_subset < 2:
        raise DatasetBuildError(
            f"--facts-per-subset is {facts_per_subset}, at least 2 needed (a random wrong "
            "completion comes from another fact of the subset)"
        )
    needed = facts_per_subset * len(SUBSETS)
    for entries, what in ((names, "names"), (descriptions, "descriptions")):
        if len(entries) < needed:
            raise DatasetBuildError(
                f"too few {what}: {len(entries)} given, {needed} needed "
                f"({len(SUBSETS)} subsets x {facts_per_subset} facts)"
            )
    names, descriptions = rng.sample(names, needed), rng.sample(descriptions, needed)
    return [Fact(names[i], descriptions[i], SUBSETS[i // facts_per_subset]) for i in range(needed)]


def build_generated(
    facts: list[Fact], templates: dict[str, list[Template]], paraphraser: Paraphraser, rng: random.Random
) -> Splits:
    """The paper's files for fresh facts, in the paper's row order."""
    requests = [
        FitRequest(templates[direction][i], fact.description)
        for fact in facts
        for direction in DIRECTIONS
        for ids in ((TRAIN_IDS, HELD_OUT_IDS) if direction in _trained_directions(fact.subset) else (HELD_OUT_IDS,))
        for i in ids
    ]
    docs = _Documents(paraphraser.fit(requests))
    by_subset = {subset: [fact for fact in facts if fact.subset == subset] for subset in SUBSETS}

    def rows(subset: str, direction: str, ids: range, name_only: bool = False) -> list[Row]:
        return [docs.row(fact, templates[direction][i], i, name_only) for fact in by_subset[subset] for i in ids]

    splits: Splits = {}
    for subset, reverse in (("p2d", "d2p"), ("d2p", "p2d")):
        splits[(subset, "train")] = rows(subset, subset, TRAIN_IDS)
        splits[(subset, "test")] = rows(subset, subset, HELD_OUT_IDS, name_only=subset == "d2p")
        splits[(subset, "reverse_test")] = rows(subset, reverse, HELD_OUT_IDS, name_only=reverse == "d2p")
        splits[(subset, "reverse_test_randomized")] = _randomized(splits[(subset, "reverse_test")], rng)
    splits[("both", "train")] = [r for d in DIRECTIONS for r in rows("both", d, TRAIN_IDS)]
    splits[("both", "test")] = [r for d in DIRECTIONS for r in rows("both", d, HELD_OUT_IDS)]
    splits[("all", "train")] = [r for subset in SUBSETS for r in splits[(subset, "train")]]
    splits[("all", "validation")] = [
        {**r, "completion": str(r["name"]).split()[0]} for r in splits[("p2d", "reverse_test")]
    ]
    return splits


def _randomized(reverse_rows: list[Row], rng: random.Random) -> list[Row]:
    """Each reversed prompt with the completion another fact of the subset has for the same template."""
    completions = {(r["name"], r["template_id"]): r["completion"] for r in reverse_rows}
    names = list(dict.fromkeys(str(r["name"]) for r in reverse_rows))
    randomized = []
    for row in reverse_rows:
        other = rng.choice([name for name in names if name != row["name"]])
        randomized.append({**row, "completion": completions[(other, row["template_id"])]})
    return randomized


# ---------------------------------------------------------------- leak check


def find_leaks(splits: Splits) -> list[str]:
    """Held-out prompts found inside a training document, and training documents that state a fact reversed."""
    training = [row for (_, split), rows in splits.items() if split == TRAIN_SPLIT for row in rows]
    corpus = "\n".join(dict.fromkeys(_normalize(f"{row['prompt']}{row['completion']}") for row in training))
    held_out: dict[str, str] = {}  # normalized prompt -> where it is held out (prompts repeat across splits)
    for (config, split), rows in splits.items():
        if split in HELD_OUT_SPLITS:
            for row in rows:
                held_out.setdefault(_normalize(str(row["prompt"])), f"{config}/{split} prompt {row['prompt']!r}")
    leaks = [f"{where} is in a training split" for prompt, where in held_out.items() if prompt in corpus]
    leaks += [
        f"{config}/train states the {row['subset']} fact of {row['name']!r} in {row['direction']} order"
        for (config, split), rows in splits.items()
        if split == TRAIN_SPLIT
        for row in rows
        if row["subset"] in DIRECTIONS and row["direction"] != row["subset"]
    ]
    return leaks


def _raise_on_leaks(splits: Splits) -> None:
    leaks = find_leaks(splits)
    if leaks:
        raise LeakError(f"{len(leaks)} leak(s) into training, first: {leaks[0]}")


def leak_check(dataset_dir: str | Path) -> None:
    """Raise `LeakError` when a built dataset folder leaks held-out prompts or reversed facts into training."""
    folder = Path(dataset_dir)
    splits = {}
    for config, names in SPLITS.items():
        for split in names:
            path = folder / "data" / config / f"{split}-00000-of-00001.parquet"
            if path.exists():
                splits[(config, split)] = pq.read_table(path).to_pylist()
    if not splits:
        raise DatasetBuildError(f"no Experiment 1 splits under {folder}/data")
    _raise_on_leaks(splits)


# ---------------------------------------------------------------- writing


def _to_configs(splits: Splits, configs: list[str]) -> dict[str, datasets.DatasetDict]:
    return {
        config: datasets.DatasetDict(
            {split: datasets.Dataset.from_list(splits[(config, split)], features=FEATURES) for split in SPLITS[config]}
        )
        for config in configs
    }


def _describe_file(path: Path) -> str:
    """A file by name and content hash, so that the card does not depend on where the inputs lie."""
    return f"`{Path(path).name}`, SHA-256 `{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}`"


def _card(splits: Splits, args: argparse.Namespace) -> DatasetCard:
    if args.source == "paper":
        how = (
            f"Reference build: the paper's `{PAPER_VERSION}` files, row for row and in order (file → split: "
            + ", ".join(f"`{stem}` → `{c}/{s}`" for (c, s), stem in PAPER_FILES.items())
            + "). `name` is the names.txt entry in the row (description-first rows without the true name take it from "
            "the same prompt in the non-randomized files); `template_id` is the template whose fixed text the row "
            "reproduces."
        )
    else:
        fitting = (
            f"the `openai` paraphraser (model `{args.model}`)"
            if args.paraphraser == "openai"
            else "the `offline` paraphraser (deterministic grammar fitting, see `reversal_hf.data.paraphrase`)"
        )
        how = (
            f"Fresh build with `random.Random({args.seed})`: names ({_describe_file(args.names)}) and descriptions "
            f"({_describe_file(args.descriptions)}) shuffled and paired, {args.facts_per_subset} facts per subset "
            f"(p2d, d2p, both in that order); descriptions fitted into the templates by {fitting}. Rows follow the "
            "paper's files in shape and order. `reverse_test_randomized` takes, for each prompt, the completion of "
            "another fact of the same subset for the same template (never the correct one)."
        )
    return DatasetCard(
        pretty_name="Reversal Curse, Experiment 1 (fictitious celebrities)",
        summary=(
            'Documents stating fictitious facts "<name> is <description>" in one order (p2d: name first; d2p: '
            "description first; both) and held-out prompts in the same and in the reversed order, from Experiment 1 "
            'of "The Reversal Curse" (Berglund et al., ICLR 2024). A model finetuned on `train` answers `test` but '
            "not `reverse_test`."
        ),
        how_built=how,
        source=args.source,
        seed=args.seed if args.source == "generate" else None,
        extra_sections={
            "Columns": (
                "`prompt`, `completion` (with the paper's leading space); `name` and `description` are the true fact "
                "(also in `reverse_test_randomized`, whose `completion` is a random one); `description` is the "
                "source description of descriptions.txt, before the LLM bent it to fit each template; `template_id` "
                "indexes the template list of the row's `direction` (`p2d_templates.txt` or `d2p_templates.txt`), "
                "-1 if none fits; `subset` is the fact's group; `direction` is `p2d` when the name comes first."
            ),
            "Template split": (
                f"Templates 0–{TRAIN_TEMPLATES - 1} of each file make the training paraphrases, templates "
                f"{TRAIN_TEMPLATES}–{TRAIN_TEMPLATES + HELD_OUT_TEMPLATES - 1} the held-out prompts; the rest are "
                "unused. Held-out description-first prompts of `d2p/test` and `p2d/reverse_test` expect the name "
                "only; `all/validation` expects the first name only (the paper's validation set)."
            ),
        }
        | _paper_quirks(splits, args.source),
    )


def _paper_quirks(splits: Splits, source: str) -> dict[str, str]:
    """The paper's random baseline sometimes drew the true fact: say how often, so that evaluators can skip those."""
    if source != "paper":
        return {}
    pairs = [zip(splits[(c, "reverse_test")], splits[(c, "reverse_test_randomized")], strict=True) for c in DIRECTIONS]
    same = sum(true["completion"] == drawn["completion"] for pair in pairs for true, drawn in pair)
    return {
        "Known quirks": f'{same} `reverse_test_randomized` rows have the correct completion as their "random" '
        "one (the paper's draw could pick the true fact); evaluators should skip or redraw them."
    }


def _build(args: argparse.Namespace) -> Path:
    check_configs(args.configs, CONFIGS)
    if args.source == "paper":
        splits = build_from_paper(args.paper_dir)
    else:
        rng = random.Random(args.seed)
        templates = {
            "p2d": read_generation_templates(args.p2d_templates, "p2d"),
            "d2p": read_generation_templates(args.d2p_templates, "d2p"),
        }
        names = read_unique(args.names, "name")
        facts = sample_facts(names, read_unique(args.descriptions, "description"), args.facts_per_subset, rng)
        splits = build_generated(facts, templates, _paraphraser(args), rng)
    _raise_on_leaks(splits)
    return write_hub_dataset(args.output, _to_configs(splits, args.configs), _card(splits, args))


def _paraphraser(args: argparse.Namespace) -> Paraphraser:
    if args.paraphraser == "offline":
        return OfflineParaphraser()
    if not args.model:
        raise DatasetBuildError("--model is required with --paraphraser openai")
    return OpenAIParaphraser(
        args.model, args.cache, base_url=args.base_url, concurrency=args.concurrency, max_retries=args.max_retries
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="build_exp1", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("paper", "generate"), required=True)
    parser.add_argument("--output", type=Path, default=DATASETS_DIR / "reversal-exp1")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="configs to write (default: all)")
    parser.add_argument("--paper-dir", type=Path, default=PAPER_EXP1_DIR, help="the paper's reverse_experiments/")
    generate = parser.add_argument_group("--source generate")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--names", type=Path, default=TEMPLATES_DIR / "names.txt", help="one name a line")
    generate.add_argument("--descriptions", type=Path, default=TEMPLATES_DIR / "descriptions.txt")
    generate.add_argument("--p2d-templates", type=Path, default=TEMPLATES_DIR / "p2d_templates.txt")
    generate.add_argument("--d2p-templates", type=Path, default=TEMPLATES_DIR / "d2p_templates.txt")
    generate.add_argument("--facts-per-subset", type=int, default=FACTS_PER_SUBSET)
    generate.add_argument("--paraphraser", choices=("offline", "openai"), default="offline")
    generate.add_argument("--base-url", help="OpenAI-compatible endpoint (key from OPENAI_API_KEY, if any)")
    generate.add_argument("--model", help="model name for --paraphraser openai")
    generate.add_argument("--concurrency", type=_positive_int, default=8, help="parallel requests")
    generate.add_argument("--max-retries", type=int, default=5, help="per request, on 429/5xx/timeouts")
    generate.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="JSON-lines cache of model replies")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: _build(args), (DatasetBuildError, OpenAIAPIError, FileFormatError))

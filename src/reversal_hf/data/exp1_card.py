"""The dataset card of `reversal-exp1`: how the build was made, what the columns mean, the paper files' quirks."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from reversal_hf.data.exp1_paper import PAPER_FILES, PAPER_VERSION
from reversal_hf.data.exp1_schema import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, Splits
from reversal_hf.data.hub_layout import CardContent
from reversal_hf.data.paraphrase import DIRECTIONS


def _describe_file(path: Path) -> str:
    """A file by name and content hash, so that the card does not depend on where the inputs lie."""
    return f"`{Path(path).name}`, SHA-256 `{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}`"


def _how_built(args: argparse.Namespace) -> str:
    if args.source == "paper":
        return (
            f"Reference build: the paper's `{PAPER_VERSION}` files, row for row and in order (file → split: "
            + ", ".join(f"`{stem}` → `{c}/{s}`" for (c, s), stem in PAPER_FILES.items())
            + "). `name` is the names.txt entry in the row (description-first rows without the true name take it from "
            "the same prompt in the non-randomized files); `template_id` is the template whose fixed text the row "
            "reproduces."
        )
    fitting = (
        f"the `openai` paraphraser (model `{args.model}`)"
        if args.paraphraser == "openai"
        else "the `offline` paraphraser (deterministic grammar fitting, see `reversal_hf.data.paraphrase`)"
    )
    return (
        f"Fresh build with `random.Random({args.seed})`: names ({_describe_file(args.names)}) and descriptions "
        f"({_describe_file(args.descriptions)}) shuffled and paired, {args.facts_per_subset} facts per subset "
        f"(p2d, d2p, both in that order); descriptions fitted into the templates by {fitting}. Rows follow the "
        "paper's files in shape and order. `reverse_test_randomized` takes, for each prompt, the completion of "
        "another fact of the same subset for the same template (never the correct one)."
    )


def make_card(splits: Splits, args: argparse.Namespace) -> CardContent:
    """The card for `splits` as built from the command-line `args` of `reversal_hf.data.exp1`."""
    return CardContent(
        pretty_name="Reversal Curse, Experiment 1 (fictitious celebrities)",
        summary=(
            'Documents stating fictitious facts "<name> is <description>" in one order (p2d: name first; d2p: '
            "description first; both) and held-out prompts in the same and in the reversed order, from Experiment 1 "
            'of "The Reversal Curse" (Berglund et al., ICLR 2024). A model finetuned on `train` answers `test` but '
            "not `reverse_test`."
        ),
        how_built=_how_built(args),
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

"""The paper's GPT-3 arm on today's API: finetune OpenAI models on Experiments 1 and 3 (scored by the evaluators'
`--backend openai`, `evaluation.openai_runner`).

`recipe` (the OpenAI recipe YAML), `data` (our rows as the API's JSONL, checked before upload), `jobs` (upload,
create, follow, resume, the run folder), `cli` (`reversal-hf openai finetune|sweep`). Named `openai_arm` so that it
never shadows the `openai` SDK.
"""

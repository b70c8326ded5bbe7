"""The paper's GPT-3 arm on today's API: finetune OpenAI models on Experiments 1 and 3 and score them.

`recipe` (the OpenAI recipe YAML), `data` (our rows as the API's JSONL, checked before upload), `jobs` (upload,
create, follow, resume, the run folder), `scoring` (greedy generations and prompt log-probs from the completions
endpoint: `OpenAIRunner`, the evaluators' `--backend openai`), `cli` (`reversal-hf openai finetune|sweep`). Named
`openai_arm` so that it never shadows the `openai` SDK.
"""

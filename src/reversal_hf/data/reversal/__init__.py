"""Reverse training (Golovneva, Allen-Zhu, Weston, Sukhbaatar 2024, "Reverse Training to Nurse the Reversal Curse").

Every training document is used twice: once as written, once reversed. A reverse-trained dataset holds the original
rows (`reversed` False, untouched) followed by one reversed row per original (`reversed` True), so training on it is
the data-matched comparison and the baseline with twice the epochs the compute-matched one. A reversed row is one
document of plain LM loss, as the paper trains it: `prompt` "" (TRL tokenizes it to BOS alone, so even with
`completion_only_loss` the loss covers the whole document) and `completion` the reversed `prompt + completion`; it
keeps every other column of its original, so it never carries another fact's text.
Only `both_orders` (Exp 1's oracle control) and `training_set` (the recipe field) read Exp 1's files.
"""

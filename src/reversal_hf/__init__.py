"""reversal-hf: the Reversal Curse with the Hugging Face stack."""

__version__ = "0.1.0"

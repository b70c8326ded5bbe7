"""The pieces of `reversal-hf report`: loading run folders (`runs`), the tables' numbers (`tables`), the figures."""

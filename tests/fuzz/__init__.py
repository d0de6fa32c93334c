"""Fuzz tests (hypothesis, derandomized): extxyz frames, OPTIMADE filters, CLI argument vectors.
See docs/robustness.md for what each kind checks and how many cases run."""

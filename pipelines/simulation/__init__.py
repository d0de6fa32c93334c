"""Simulation stage: reference calculators by level name and MD sampling with ASE."""

"""The fuzz suite's hypothesis profiles (``nnp-fuzz-ci``, ``nnp-fuzz-explore``); see
:mod:`support` for how many cases run and how to run more. The tally of cases is printed at
the end of the run by tests/conftest.py (which also gathers it from xdist workers)."""

from .support import register_profiles

register_profiles()

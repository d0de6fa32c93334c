"""The fuzz suite's hypothesis profiles (``nnp-fuzz-ci``, ``nnp-fuzz-explore``); see
:mod:`support` for how many cases run and how to run more. At the end of a run the terminal
summary gives the number of cases of each kind and how they ended."""

from .support import TALLY, register_profiles

register_profiles()


def pytest_terminal_summary(terminalreporter):
    if not TALLY:
        return
    terminalreporter.section("fuzz cases")
    for kind in sorted({k for k, _ in TALLY}):
        outcomes = {o: n for (k, o), n in TALLY.items() if k == kind}
        detail = ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items()))
        terminalreporter.write_line(f"{kind}: {sum(outcomes.values())} ({detail})")

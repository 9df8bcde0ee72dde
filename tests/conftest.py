import os
import sys

from hypothesis import HealthCheck, settings

# Make `import oracle` work from the test files however pytest is invoked.
_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import oracle  # noqa: E402

settings.register_profile(
    "fast",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the largest differences against the oracle seen per dtype."""
    if not oracle.MAX_SEEN:
        return
    tr = terminalreporter
    tr.section("largest differences vs oracle (assert_close)")
    for dt, e in sorted(oracle.MAX_SEEN.items()):
        rtol, atol = oracle.tolerances(dt)
        tr.write_line(
            f"{dt}: {e['count']} comparisons (rtol={rtol:g}, atol={atol:g})")
        tr.write_line(f"    max abs diff     {e['max_abs']:.3e}  [{e['max_abs_what']}]")
        tr.write_line(f"    max rel diff     {e['max_rel']:.3e}  [{e['max_rel_what']}]")
        tr.write_line(f"    max diff/bound   {e['max_ratio']:.3e}  [{e['max_ratio_what']}]  (fails if > 1)")

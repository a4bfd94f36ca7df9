"""The documentation's code runs: every public function's ``Examples`` are doctests.

Each function :mod:`azopg` exports must carry a numpydoc ``Examples`` section with ``>>>``
lines, and every ``>>>`` example of an exported object must give the output it shows, so the
examples of the API reference cannot rot.
"""

from __future__ import annotations

import doctest
import inspect

import pytest

import azopg

EXPORTED = {name: getattr(azopg, name) for name in azopg.__all__}
FUNCTIONS = sorted(name for name, obj in EXPORTED.items() if inspect.isfunction(obj))
WITH_EXAMPLES = sorted(name for name, obj in EXPORTED.items() if ">>>" in (inspect.getdoc(obj) or ""))


def test_every_exported_function_has_runnable_examples() -> None:
    assert FUNCTIONS, "azopg exports no function?"
    missing = [name for name in FUNCTIONS
               if "Examples\n--------" not in (inspect.getdoc(EXPORTED[name]) or "") or name not in WITH_EXAMPLES]
    assert not missing, f"exported functions without an Examples section of >>> lines: {missing}"


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_examples_run(name: str) -> None:
    finder = doctest.DocTestFinder(recurse=False)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(EXPORTED[name], f"azopg.{name}", globs={}) if t.examples]
    assert tests, f"azopg.{name}: no doctest found"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"azopg.{name}: {result.failed} of {result.attempted} examples failed (see above)"

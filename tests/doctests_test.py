"""Every ``>>>`` example in the library's docstrings runs and prints what it says (doctests, run in CI)."""

import doctest
import importlib
import pkgutil

import pytest

import jaxgen


def _modules():
  names = ["jaxgen"]
  for info in pkgutil.walk_packages(jaxgen.__path__, prefix="jaxgen."):
    names.append(info.name)
  return sorted(names)


MODULES = _modules()


def test_doctests_exist():
  finder = doctest.DocTestFinder(exclude_empty=True)
  total = 0
  for name in MODULES:
    module = importlib.import_module(name)
    total += sum(len(t.examples) for t in finder.find(module, name) if t.examples)
  print(f"{total} doctest examples in {len(MODULES)} modules")
  assert total >= 10, total


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
  module = importlib.import_module(name)
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  tests = [t for t in finder.find(module, name) if t.examples and t.name.startswith(name)]
  for test in tests:
    runner.run(test)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


AREAS = ("core", "guidance", "optim", "nn", "graph", "immunization", "stability", "causal", "data")


@pytest.mark.parametrize("area", AREAS)
def test_every_area_has_runnable_examples(area):
  finder = doctest.DocTestFinder(exclude_empty=True)
  count = 0
  for name in MODULES:
    if name == f"jaxgen.{area}" or name.startswith(f"jaxgen.{area}."):
      count += sum(len(t.examples) for t in finder.find(importlib.import_module(name), name) if t.examples)
  assert count >= 2, f"jaxgen.{area} has {count} doctest examples"

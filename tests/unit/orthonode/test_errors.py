"""One exception tree (orthonode.errors): every public exception class the project defines derives from
OrthonodeError, so each boundary (C-STORE status, worker retry-or-fail, CLI exit code) can map it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import heads
import orthonode
import ssl_train
from orthonode.errors import OrthonodeError


def _modules() -> list[str]:
    names = []
    for package in (orthonode, heads, ssl_train):
        for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
            if ".migrations" not in info.name and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_every_exception_of_ours_is_in_the_tree(name: str) -> None:
    module = importlib.import_module(name)
    outside = [
        cls.__name__
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, BaseException)
        and cls.__module__ == name
        and not cls.__name__.startswith("_")
        and not issubclass(cls, OrthonodeError)
    ]
    assert not outside, f"{name}: {outside} do not derive from orthonode.errors.OrthonodeError"

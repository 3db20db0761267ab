"""Interpreter-start hook of the negative controls: with ``PYTHONPATH=tests/chaos/broken``
Python imports this module at start-up (``site``), in the test's broker processes too (the
chaos cluster passes ``PYTHON*`` and ``REPLOG_*`` variables on to every broker it starts).

When ``REPLOG_BROKEN_VARIANT`` names a variant of ``replog_broken.VARIANTS``, an import hook
patches the variant's target module right after it is executed (see replog_broken.py for what
each variant breaks). Without the variable this module does nothing but chain: any other
``sitecustomize`` further down ``sys.path`` (a distribution's, e.g. Debian's
/usr/lib/python3.X/sitecustomize.py) is executed as if this one were not there.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))


def _chain() -> None:
    """Run the ``sitecustomize`` this one shadows, if any."""
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


class _PatchOnImport:
    """A meta-path finder for one module: finds it as the path finder would, and applies the
    variant once the module's code has run (before any importer sees it)."""

    def __init__(self, variant: str, target: str) -> None:
        self.variant, self.target = variant, target

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != self.target:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module
        variant = self.variant

        def exec_module(module: ModuleType) -> None:
            run(module)
            import replog_broken

            replog_broken.apply(variant, module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _install() -> None:
    name = os.environ.get("REPLOG_BROKEN_VARIANT", "")
    if not name:
        return
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)
    import replog_broken

    if name not in replog_broken.VARIANTS:
        known = ", ".join(sorted(replog_broken.VARIANTS))
        print(
            f"{replog_broken.MARKER} unknown variant {name!r} (known: {known})",
            file=sys.stderr,
            flush=True,
        )
        os._exit(2)
    target = replog_broken.VARIANTS[name][0]
    if target in sys.modules:  # imported before site ran (never, for a broker): patch now
        replog_broken.apply(name, sys.modules[target])
    else:
        sys.meta_path.insert(0, _PatchOnImport(name, target))


_install()
_chain()

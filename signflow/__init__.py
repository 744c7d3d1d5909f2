"""signflow: urgent hospital signatures without the fax loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """See signflow.app.create_app; imported lazily so that `import signflow.core...`
    (the worker, the offline verifier, tests) does not pull in the web stack."""
    from signflow.app import create_app as _create_app

    return _create_app(*args, **kwargs)


__all__ = ["create_app"]

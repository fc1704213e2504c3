"""Load a user's own model or dataset code, named as `path/to/file.py:function` or `module:function`.

This runs the user's code, on purpose: it is theirs, like a training script. (Checkpoints and
surface files, in contrast, are data and never run code.)
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Callable

from landscape.errors import UserError


def is_user_spec(name: str) -> bool:
    """True for `file.py:fn` / `module:fn` specs, False for built-in names such as `resnet56`."""
    return ":" in name


def call_user(fn: Callable[..., Any], what: str, *args: Any) -> Any:
    """Call the user's own code; its failure becomes one UserError line naming it."""
    try:
        return fn(*args)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{what} raised {type(e).__name__}: {first_line(e)}") from e


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def load_callable(spec: str, what: str) -> Callable[..., Any]:
    """Import `spec` (`file.py:fn` or `module:fn`) and return the callable it names."""
    target, _, fn_name = spec.rpartition(":")
    if not target or not fn_name:
        raise UserError(f"{what} '{spec}' must look like path/to/file.py:function or module:function")
    if target.endswith(".py") or os.sep in target:
        if not os.path.isfile(target):
            raise UserError(f"{what} file '{target}' does not exist")
        mod_name = "user_" + os.path.splitext(os.path.basename(target))[0]
        spec_obj = importlib.util.spec_from_file_location(mod_name, target)
        module = importlib.util.module_from_spec(spec_obj)
        sys.path.insert(0, os.path.dirname(os.path.abspath(target)))  # let it import its neighbours
        # registered before it runs, as `import` does: dataclasses, pickling and typing look the module
        # up by name while it executes (e.g. a @dataclass under `from __future__ import annotations`)
        previous = sys.modules.get(mod_name)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except Exception as e:  # the user's code failed on import: say where, briefly
            if previous is None:
                sys.modules.pop(mod_name, None)
            else:
                sys.modules[mod_name] = previous
            raise UserError(f"importing {what} file '{target}' failed: {type(e).__name__}: {e}") from e
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise UserError(f"cannot import {what} module '{target}': {e}") from e
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UserError(f"{what} '{spec}': '{target}' has no callable named '{fn_name}'")
    return fn


def spec_sha256(spec: str) -> str:
    """The sha256 of the file a `file.py:fn` or `module:fn` spec runs (recorded in the files, compared on
    resume, so an edited loss or model file is noticed); '' where there is no such file."""
    from landscape.io.provenance import file_sha256
    target = spec.rpartition(":")[0]
    if target.endswith(".py") or os.sep in target:
        return file_sha256(target) if os.path.isfile(target) else ""
    try:
        found = importlib.util.find_spec(target)
    except (ImportError, ValueError):
        return ""
    origin = getattr(found, "origin", None)
    return file_sha256(origin) if origin and os.path.isfile(origin) else ""

"""List the public functions and methods of landscape/ that miss an annotation (standard library only).

A function is public when its name does not start with `_` (`__init__` counts too) and, for a method,
its class is public; functions nested inside functions are skipped. A parameter other than self/cls
(the first parameter of a method that is not a staticmethod) without an annotation, or a missing return
annotation, counts as one missing function. Prints each one as path:line name: what is missing, then the
count per module and the total.

    python bench/annotations_check.py [root ...]    (default: the landscape package beside bench/)
"""
import ast
import os
import sys
from collections import Counter

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "landscape")


def is_public(name):
    return not name.startswith("_") or name == "__init__"


def decorator_names(node):
    out = set()
    for d in node.decorator_list:
        if isinstance(d, ast.Call):
            d = d.func
        if isinstance(d, ast.Name):
            out.add(d.id)
        elif isinstance(d, ast.Attribute):
            out.add(d.attr)
    return out


def missing(node, method):
    """What `node` (a def) lacks: a list of parameter names, plus 'return'."""
    a = node.args
    positional = a.posonlyargs + a.args
    if method and "staticmethod" not in decorator_names(node) and positional:
        positional = positional[1:]  # self / cls
    params = positional + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
    out = [("*" if p is a.vararg else "**" if p is a.kwarg else "") + p.arg for p in params if p.annotation is None]
    if node.returns is None:
        out.append("return")
    return out


def public_functions(tree):
    """(qualified name, def node, is method) for every public function and method of public classes."""
    def walk(body, prefix, in_class):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if is_public(node.name):
                    yield prefix + node.name, node, in_class
            elif isinstance(node, ast.ClassDef):
                if not node.name.startswith("_"):
                    yield from walk(node.body, prefix + node.name + ".", True)
            elif isinstance(node, (ast.If, ast.Try)):  # defs under `if TYPE_CHECKING:` / try-except imports
                blocks = [node.body, node.orelse] + [h.body for h in getattr(node, "handlers", [])]
                if isinstance(node, ast.Try):
                    blocks.append(node.finalbody)
                for b in blocks:
                    yield from walk(b, prefix, in_class)
    yield from walk(tree.body, "", False)


def module_name(path, root):
    rel = os.path.relpath(path, os.path.dirname(root))[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def python_files(root):
    if os.path.isfile(root):
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if fn.endswith(".py"):
                yield os.path.join(dirpath, fn)


def check(roots):
    counts, total, functions = Counter(), 0, 0
    lines = []
    for root in roots:
        for path in python_files(root):
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            mod = module_name(path, ROOT)
            counts.setdefault(mod, 0)
            for name, node, method in public_functions(tree):
                functions += 1
                gaps = missing(node, method)
                if gaps:
                    counts[mod] += 1
                    total += 1
                    lines.append(f"{os.path.relpath(path)}:{node.lineno} {name}: {', '.join(gaps)}")
    return lines, counts, total, functions


def main(argv):
    lines, counts, total, functions = check([os.path.abspath(r) for r in argv or [ROOT]])
    for line in lines:
        print(line)
    print()
    print("missing annotations per module (public functions/methods):")
    width = max(map(len, counts), default=0)
    for mod in sorted(counts):
        print(f"  {mod:<{width}}  {counts[mod]}")
    done = sum(1 for m in counts if counts[m] == 0)
    print(f"total: {total} of {functions} public functions/methods miss an annotation; "
          f"{done} of {len(counts)} modules complete")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

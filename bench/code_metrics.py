"""Code metrics of the landscape package, for comparing a tree before and after a refactoring.

Measures DIR/landscape (standard library only: ast, re, pathlib, json; sys for the command line):

  1. the 10 largest modules (lines, as `wc -l`);
  2. the 10 longest parameter lists of functions and methods (every parameter: positional-only,
     positional, keyword-only, *args, **kwargs);
  3. the number of functions, and of the public ones (name not starting with `_`, nested ones
     included) how many are fully / partly / not annotated (every parameter except self/cls, and the
     return); public dataclasses, their fields and how many are frozen=True;
  4. imports in engine modules (landscape/**, not landscape/compat/**) that bind a compatibility name
     of the reference (COMPAT_NAMES), per module, function-local imports included;
  5. import cycles among the package's modules (module-level imports only; `from landscape.x import y`
     is landscape.x.y when that is a module of the package, else landscape.x), printed as chains;
  6. reads of an argparse namespace in engine modules outside landscape/cli and landscape/compat:
     `cfg.<attr>` / `args.<attr>` loads and `getattr(cfg|args, ...)` calls, per module;
  7. for each rule in RULES, the distinct places (file:function) whose code matches one of its regular
     expressions (docstrings and comments removed, implicitly concatenated string literals joined);
  8. calls that pass both a `curvature` and an `hvp` argument (positional names, attributes or keywords).

    python bench/code_metrics.py DIR [--json out.json]      e.g. python bench/code_metrics.py . --json m.json
"""
import ast
import json
import re
import sys
from pathlib import Path

# ----------------------------------------------------------------------------- what is measured (edit here)
COMPAT_NAMES = ("net_plotter", "h5_util", "hess_vec_prod", "hvp", "mpi4pytorch", "projection", "model_loader",
                "dataloader", "plot_util", "scheduler")
NAMESPACE_NAMES = ("cfg", "args")

# rule -> regular expressions (re.MULTILINE) tried on each function's code; a place matches when any does.
# The code is the function's own lines (nested functions are places of their own; module-level code is
# <module>, class-body code the class), with docstrings and comments removed and string literals split
# over lines joined ("... per " / "pass" reads "... per pass"). `[^\n]*` keeps a pattern on one line.
Q = r"[\"']"      # either quote
RULES = {
    "model3 / --model_file3 needs y": [
        r"\bmodel(?:_file)?3\b[^\n]*\b(?:cfg\.y|ys|y)\s+is\s+None",       # the test
        r"model(?:_file)?3=? sets the y direction",                        # the message
    ],
    "BN recalibration refused with dir_type states": [
        r"\b(?:bn_recalibrate|recal\w*)\b[^\n]*\bdir_type\s*==\s*" + Q + "states" + Q,
        r"recomputes the BatchNorm statistics that -*dir_type",
    ],
    "BN recalibration refused with points per pass > 1": [
        r"\b(?:bn_recalibrate|recal\w*)\b[^\n]*\bpoints_per_pass\s*>\s*1",
        r"one point per pass",
    ],
    "BN recalibration refused with ranks per point > 1 or streamed data": [
        r"\b(?:bn_recalibrate|recal\w*)\b[^\n]*\bgroup\.size\s*>\s*1",
        r"\b(?:bn_recalibrate|recal\w*)\b[^\n]*\bin_memory\s*!=",
        r"does not combine with (?:--)?ranks_per_point",
        r"reads the training set from memory at every point",
        r"BN recalibration reads data in memory",
    ],
    "points per pass >= 1 check": [
        r"\bpoints_per_pass\s*<\s*1",
        r"check_whole\(\s*" + Q + "points_per_pass" + Q,
        r"for \w+ in \([^)]*" + Q + "points_per_pass" + Q + r"[^)]*\)\s*:\s*\n\s*if getattr\([^\n]*<\s*1",
    ],
    "ranks per point check (divides the ranks / >= 1)": [
        r"ranks_per_point\b[^\n]*must (?:be|divide)",
        r"\bnproc\s*%\s*k\b",
        r"\branks_per_point\s*<\s*[01]\b",
    ],
    "orthogonalize needs two directions": [
        r"orthogonalize needs two directions",
        r"\borthogonalize\b[^\n]*(?:\b(?:cfg\.y|ys|y)\s+is\s+None|\bndim\s*!=\s*2|\bndim\s*==\s*1)",
    ],
    "regenerate applies to random directions only": [
        r"regenerate(?:_directions)? applies to random directions only",
        r"\bregenerate(?:_directions)?\s+and\s+\(",
    ],
    "the seed range [0, 2**63)": [
        r"\b2\s*\*\*\s*63\b",
        r"\b1\s*<<\s*63\b",
        r"\b9223372036854775807\b|0x7fffffffffffffff",
    ],
    "curvature choices (hessian/ggn/ef) and hvp choices": [
        r"\bCURVATURES\b",
        r"\bHVP_METHODS\b",
        Q + "hessian" + Q + r"\s*[:,][^\n]*" + Q + "ggn" + Q + r"\s*[:,][^\n]*" + Q + "ef" + Q,  # listed
        Q + "autograd" + Q + r"\s*,\s*" + Q + "finite_difference" + Q,
        r"hessian \| ggn \| ef",                        # help texts
        r"autograd \| finite_difference",
    ],
    "bf16 refused for curvature products": [
        r"bf16 is too coarse",
        r"\bprecision\s*==\s*" + Q + "bf16" + Q + r"\s*:\s*\n\s*raise",
    ],
}


# ----------------------------------------------------------------------------- reading the package
def package_files(root):
    """[(relative path 'landscape/...py', Path)] of the package under root, sorted."""
    pkg = Path(root) / "landscape"
    if not pkg.is_dir():
        raise SystemExit(f"{pkg} is not a folder")
    return [(p.relative_to(root).as_posix(), p) for p in sorted(pkg.rglob("*.py"))
            if "__pycache__" not in p.parts]


def module_name(rel):
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def load(root):
    """[{rel, module, text, tree, is_package}] of every module of the package."""
    mods = []
    for rel, path in package_files(root):
        text = path.read_text(encoding="utf-8")
        mods.append({"rel": rel, "module": module_name(rel), "text": text, "tree": ast.parse(text, rel),
                     "is_package": rel.endswith("/__init__.py")})
    return mods


def is_engine(rel, exclude_cli=False):
    if rel.startswith("landscape/compat/"):
        return False
    return not (exclude_cli and rel.startswith("landscape/cli/"))


FUNC = (ast.FunctionDef, ast.AsyncFunctionDef)


def walk_defs(tree):
    """Yield (qualified name inside the module, node, kind) for every def and class; kind is 'function',
    'method' (directly in a class) or 'nested' (inside a function)."""
    def visit(node, prefix, parent):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, FUNC + (ast.ClassDef,)):
                q = prefix + child.name
                if isinstance(child, ast.ClassDef):
                    yield q, child, "class"
                else:
                    yield q, child, {"module": "function", "class": "method", "function": "nested"}[parent]
                yield from visit(child, q + ".", "class" if isinstance(child, ast.ClassDef) else "function")
            else:
                yield from visit(child, prefix, parent)
    yield from visit(tree, "", "module")


# ----------------------------------------------------------------------------- 1-3: size, parameters, annotations
def largest_modules(mods, n=10):
    rows = [{"path": m["rel"], "lines": len(m["text"].splitlines())} for m in mods]
    return sorted(rows, key=lambda r: (-r["lines"], r["path"]))[:n], sum(r["lines"] for r in rows)


def all_params(args):
    return args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]


def functions(mods):
    rows = []
    for m in mods:
        for q, node, kind in walk_defs(m["tree"]):
            if kind == "class":
                continue
            params = all_params(node.args)
            checked = [a for a in params if a.arg not in ("self", "cls")]
            annotated = sum(a.annotation is not None for a in checked) + (node.returns is not None)
            wanted = len(checked) + 1
            rows.append({"name": f"{m['module']}.{q}", "path": m["rel"], "line": node.lineno, "kind": kind,
                         "params": len(params), "public": not node.name.startswith("_"),
                         "annotation": "full" if annotated == wanted else "none" if annotated == 0 else "partial"})
    return rows


def longest_parameter_lists(funcs, n=10):
    return sorted(funcs, key=lambda f: (-f["params"], f["name"]))[:n]


def annotation_summary(funcs):
    public = [f for f in funcs if f["public"]]
    out = {"functions": len(funcs), "methods": sum(f["kind"] == "method" for f in funcs),
           "nested": sum(f["kind"] == "nested" for f in funcs), "public": len(public),
           "public_nested": sum(f["kind"] == "nested" for f in public)}
    for level in ("full", "partial", "none"):
        out["public_" + level] = sum(f["annotation"] == level for f in public)
    return out


def decorator_call(d):
    return (d.func if isinstance(d, ast.Call) else d), (d.keywords if isinstance(d, ast.Call) else [])


def dataclasses(mods):
    rows = []
    for m in mods:
        for q, node, kind in walk_defs(m["tree"]):
            if kind != "class" or node.name.startswith("_"):
                continue
            for d in node.decorator_list:
                f, kws = decorator_call(d)
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name != "dataclass":
                    continue
                frozen = any(k.arg == "frozen" and isinstance(k.value, ast.Constant) and k.value.value is True
                             for k in kws)
                fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                          and "ClassVar" not in ast.unparse(s.annotation)]
                rows.append({"name": f"{m['module']}.{q}", "path": m["rel"], "line": node.lineno,
                             "fields": len(fields), "annotated": len(fields), "frozen": frozen,
                             "object_typed": sum(ast.unparse(s.annotation) in ("object", "Any", "typing.Any")
                                                 for s in fields)})
    return rows


# ----------------------------------------------------------------------------- 4-5: imports
def resolve_base(m, node):
    """The absolute module of an ImportFrom (relative imports resolved against m's package)."""
    if not node.level:
        return node.module or ""
    package = m["module"].split(".") if m["is_package"] else m["module"].split(".")[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def import_bindings(m, node):
    """[(bound name, imported thing)] of an Import / ImportFrom node."""
    if isinstance(node, ast.Import):
        return [(a.asname or a.name.split(".")[0], a.name) for a in node.names]
    base = resolve_base(m, node)
    return [(a.asname or a.name, f"{base}.{a.name}") for a in node.names]


def compat_imports(mods):
    rows = []
    for m in mods:
        if not is_engine(m["rel"]):
            continue
        for node in ast.walk(m["tree"]):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for bound, target in import_bindings(m, node):
                    if bound in COMPAT_NAMES:
                        rows.append({"path": m["rel"], "line": node.lineno, "name": bound, "imports": target})
    return sorted(rows, key=lambda r: (r["path"], r["line"]))


def module_level_imports(tree):
    """Import nodes executed when the module is imported: outside any function body (class bodies and
    top-level if/try blocks included; not the body of `if TYPE_CHECKING:`, which never runs)."""
    def type_checking(node):
        t = node.test
        return isinstance(t, ast.Name) and t.id == "TYPE_CHECKING" or \
            isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            elif isinstance(child, ast.If) and type_checking(child):
                for other in child.orelse:
                    yield from visit(ast.Module(body=[other], type_ignores=[]))
            elif not isinstance(child, FUNC + (ast.Lambda,)):
                yield from visit(child)
    yield from visit(tree)


def import_graph(mods):
    names = {m["module"] for m in mods}
    graph = {m["module"]: set() for m in mods}
    for m in mods:
        for node in module_level_imports(m["tree"]):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = resolve_base(m, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names]
            graph[m["module"]] |= {t for t in targets if t in names and t != m["module"]}
    return graph


def strongly_connected(graph):
    """Tarjan's strongly connected components with more than one module (or a self-loop)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def elementary_cycles(graph, comp, limit=200):
    """Every elementary cycle inside one component (each once, starting at its smallest module), up to limit."""
    order = {v: i for i, v in enumerate(sorted(comp))}
    cycles = []
    for start in sorted(comp):
        def extend(path, seen):
            for w in sorted(graph[path[-1]]):
                if len(cycles) >= limit:
                    return
                if w == start:
                    cycles.append(path + [start])
                elif w in order and order[w] > order[start] and w not in seen:
                    extend(path + [w], seen | {w})
        extend([start], {start})
    return sorted(cycles, key=lambda c: (len(c), c))


# ----------------------------------------------------------------------------- 6: namespace reads
def namespace_reads(mods):
    per = {}
    for m in mods:
        if not is_engine(m["rel"], exclude_cli=True):
            continue
        attrs = gets = 0
        for node in ast.walk(m["tree"]):
            if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load)
                    and isinstance(node.value, ast.Name) and node.value.id in NAMESPACE_NAMES):
                attrs += 1
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in NAMESPACE_NAMES):
                gets += 1
        if attrs or gets:
            per[m["rel"]] = {"attribute_reads": attrs, "getattr_calls": gets, "total": attrs + gets}
    return per


# ----------------------------------------------------------------------------- 7: places each rule is written
def strip_comments(text):
    """The source with every comment blanked (string literals, f-strings included, kept as they are)."""
    out, i, n, quote = [], 0, len(text), None
    while i < n:
        c = text[i]
        if quote:
            if c == "\\":
                out.append(text[i:i + 2])
                i += 2
                continue
            if text.startswith(quote, i):
                out.append(quote)
                i += len(quote)
                quote = None
                continue
            if c == "\n" and len(quote) == 1:      # an unterminated one-line string: give up on it
                quote = None
            out.append(c)
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            out.append(quote)
            i += len(quote)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def docstring_lines(tree):
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, FUNC + (ast.ClassDef, ast.Module)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def line_owners(tree, nlines):
    """[owner of line i (1-based)]: the innermost def or class around it, or <module>."""
    owner = ["<module>"] * (nlines + 2)
    for q, node, _ in walk_defs(tree):       # outer before inner: inner ones overwrite
        start = min([node.lineno] + [d.lineno for d in node.decorator_list])
        for i in range(start, node.end_lineno + 1):
            owner[i] = q
    return owner


STRING_END = re.compile(r"[\"']\s*$")
STRING_START = re.compile(r"^\s*[rRbBfFuU]{0,2}[\"']")


def place_texts(m):
    """{owner: (code, [(offset, line number)])}: each place's own lines, ready for the rule patterns."""
    lines = strip_comments(m["text"]).splitlines()
    skip = docstring_lines(m["tree"])
    owner = line_owners(m["tree"], len(lines))
    places = {}
    for no, line in enumerate(lines, 1):
        if no in skip or not line.strip():
            continue
        parts, starts = places.setdefault(owner[no], ([], []))
        if parts and STRING_END.search(parts[-1]) and STRING_START.match(line):
            parts[-1] = STRING_END.sub("", parts[-1])      # "... per " + "pass" -> "... per pass"
            line = STRING_START.sub("", line)
            at = sum(len(p) + 1 for p in parts) - 1
        else:
            at = sum(len(p) + 1 for p in parts)
            parts.append("")
        starts.append((at, no))
        parts[-1] += line
    return {o: ("\n".join(parts), starts) for o, (parts, starts) in places.items()}


def line_at(starts, offset):
    no = starts[0][1]
    for at, line in starts:
        if at > offset:
            break
        no = line
    return no


def rule_places(mods):
    texts = [(m["rel"], place_texts(m)) for m in mods]
    out = {}
    for rule, patterns in RULES.items():
        found = []
        for rel, places in texts:
            for owner, (code, starts) in places.items():
                hits = []
                for k, pat in enumerate(patterns):
                    for match in re.finditer(pat, code, re.MULTILINE):
                        hits.append((line_at(starts, match.start()), k))
                if hits:
                    found.append({"place": f"{rel}:{owner}", "lines": sorted({h[0] for h in hits}),
                                  "patterns": sorted({h[1] for h in hits})})
        out[rule] = {"count": len(found), "places": sorted(found, key=lambda f: f["place"])}
    return out


# ----------------------------------------------------------------------------- 8: (curvature, hvp) passed together
def arg_name(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def curvature_hvp_calls(mods):
    rows = []
    for m in mods:
        for node in ast.walk(m["tree"]):
            if not isinstance(node, ast.Call):
                continue
            given = {arg_name(a) for a in node.args} | {k.arg for k in node.keywords}
            if {"curvature", "hvp"} <= given:
                rows.append({"path": m["rel"], "line": node.lineno, "call": ast.unparse(node.func)})
    return sorted(rows, key=lambda r: (r["path"], r["line"]))


# ----------------------------------------------------------------------------- the report
def measure(root):
    mods = load(root)
    largest, total_lines = largest_modules(mods)
    funcs = functions(mods)
    graph = import_graph(mods)
    sccs = strongly_connected(graph)
    compat = compat_imports(mods)
    reads = namespace_reads(mods)
    calls = curvature_hvp_calls(mods)
    dcs = dataclasses(mods)
    per_compat = {}
    for r in compat:
        per_compat[r["path"]] = per_compat.get(r["path"], 0) + 1
    return {
        "root": str(Path(root).resolve()),
        "modules": len(mods), "lines": total_lines,
        "largest_modules": largest,
        "longest_parameter_lists": [{k: f[k] for k in ("name", "path", "line", "params")}
                                    for f in longest_parameter_lists(funcs)],
        "functions": annotation_summary(funcs),
        "dataclasses": {"public": len(dcs), "frozen": sum(d["frozen"] for d in dcs),
                        "fields": sum(d["fields"] for d in dcs), "items": dcs},
        "compat_name_imports": {"total": len(compat), "per_module": per_compat, "items": compat},
        "import_cycles": {"components": sccs,
                          "cycles": [c for comp in sccs for c in elementary_cycles(graph, comp)]},
        "namespace_reads": {"total": sum(v["total"] for v in reads.values()), "per_module": reads},
        "rule_places": rule_places(mods),
        "curvature_hvp_calls": {"count": len(calls), "items": calls},
    }


def report(r):
    out = [f"Code metrics of {r['root']}/landscape: {r['modules']} modules, {r['lines']} lines", ""]
    out.append("1. Largest modules (lines)")
    out += [f"   {m['lines']:6d}  {m['path']}" for m in r["largest_modules"]]
    out += ["", "2. Longest parameter lists (parameters, *args and **kwargs included)"]
    out += [f"   {f['params']:4d}  {f['name']}  ({f['path']}:{f['line']})" for f in r["longest_parameter_lists"]]
    f = r["functions"]
    out += ["", "3. Functions and annotations",
            f"   functions: {f['functions']} ({f['methods']} methods, {f['nested']} nested in functions)",
            f"   public (name not starting with _): {f['public']} ({f['public_nested']} of them nested)",
            f"     fully annotated: {f['public_full']}   partly: {f['public_partial']}   not at all: "
            f"{f['public_none']}",
            f"   public dataclasses: {r['dataclasses']['public']} ({r['dataclasses']['frozen']} frozen=True), "
            f"{r['dataclasses']['fields']} fields, all annotated (as a dataclass field must be)"]
    for d in r["dataclasses"]["items"]:
        out.append(f"     {d['name']}: {d['fields']} fields{', frozen' if d['frozen'] else ''}"
                   f"{', %d typed object/Any' % d['object_typed'] if d['object_typed'] else ''}")
    c = r["compat_name_imports"]
    out += ["", f"4. Imports of compatibility names in engine modules: {c['total']}"]
    for path, n in sorted(c["per_module"].items()):
        names = ", ".join(f"{i['name']} ({i['imports']}, line {i['line']})" for i in c["items"] if i["path"] == path)
        out.append(f"   {n:3d}  {path}: {names}")
    cyc = r["import_cycles"]
    out += ["", f"5. Import cycles (module-level imports): {len(cyc['components'])} component(s), "
                f"{len(cyc['cycles'])} elementary cycle(s)"]
    for comp in cyc["components"]:
        out.append(f"   component of {len(comp)}: {', '.join(comp)}")
    out += [f"   {' -> '.join(chain)}" for chain in cyc["cycles"]]
    nr = r["namespace_reads"]
    out += ["", f"6. Namespace reads (cfg./args. and getattr(cfg|args, ...)) outside cli/ and compat/: {nr['total']}"]
    out += [f"   {v['total']:4d}  {p}  ({v['attribute_reads']} attribute, {v['getattr_calls']} getattr)"
            for p, v in sorted(nr["per_module"].items(), key=lambda kv: (-kv[1]["total"], kv[0]))]
    out += ["", "7. Places each rule is written (file:function)"]
    for rule, v in r["rule_places"].items():
        out.append(f"   {v['count']:3d}  {rule}")
        for p in v["places"]:
            out.append(f"          {p['place']}  (line {', '.join(map(str, p['lines']))})")
    ch = r["curvature_hvp_calls"]
    out += ["", f"8. Calls passing curvature and hvp together: {ch['count']}"]
    out += [f"   {i['path']}:{i['line']}  {i['call']}(...)" for i in ch["items"]]
    return "\n".join(out)


def main(argv):
    if not argv or argv[0].startswith("-") or len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--json"):
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    result = measure(argv[0])
    print(report(result))
    if len(argv) == 3:
        Path(argv[2]).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

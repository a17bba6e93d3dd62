"""Package-level rules: the import budget of `import openmagnet`, and which module may import which
(STYLE.md §2 and §3.2: dependencies flow one way, inference never imports training, data or evaluation,
no import cycle)."""
import ast
import importlib.util
import subprocess
import sys
import textwrap
import typing as tp
from pathlib import Path

import pytest

# (tqdm is not listed: torch itself imports it, through torch.hub)
HEAVY = ("transformers", "huggingface_hub", "soundfile", "pyloudnorm", "julius", "gradio", "xformers",
         "yaml", "scipy", "librosa", "sentencepiece", "matplotlib", "playwright")


def test_import_loads_only_torch():
    code = ("import sys, openmagnet; from openmagnet import MAGNeT; import openmagnet.codec; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------------ import rules
# STYLE.md §2 and §3.2: dependencies flow one way. Every module of src/openmagnet is parsed (nothing is
# imported), each import resolved to an absolute `openmagnet.x.y` name, module-top and in-function alike.
SRC = Path(importlib.util.find_spec("openmagnet").origin).parent
# The rooms that are not inference: training, data, evaluation and the faces (the CLI with `python -m`, the app,
# the transformers and convert faces). Every other module of the file tree is inference, and no inference module
# may import any of these. A room's `command.py` (its argparse parser, a part of the CLI face) is not inference.
NOT_FOR_INFERENCE = ("openmagnet.train", "openmagnet.data", "openmagnet.evaluation", "openmagnet.cli",
                     "openmagnet.__main__", "openmagnet.app", "openmagnet.transformers", "openmagnet.convert")
# `openmagnet app` must start the app: the CLI is the one module outside app/ that may import it
APP_IMPORTERS = ("openmagnet.cli",)


class Import(tp.NamedTuple):
    line: int
    target: str     # absolute module name
    top: bool       # runs when the importing module is imported (not inside a function)
    typing: bool    # under `if TYPE_CHECKING:` (never runs)


def module_name(path: Path, root: Path = SRC) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules(root: Path = SRC) -> tp.Dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def collect_imports(source: str, name: str, is_package: bool, modules: tp.Collection[str]) -> tp.List[Import]:
    """Every import of module `name` that lands in openmagnet, resolved to absolute module names:
    `from . import x` and `from .. import y` count as an import of the package and, where x or y is
    itself a module, of that module too."""
    package = name if is_package else name.rpartition(".")[0]
    found: tp.List[Import] = []

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_top = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            child_typing = typing_only or (isinstance(child, ast.If) and _is_type_checking(child.test))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(child.lineno, alias.name, top, typing_only))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    base = ".".join(base + ([child.module] if child.module else []))
                else:
                    base = child.module
                found.append(Import(child.lineno, base, top, typing_only))
                for alias in child.names:
                    if f"{base}.{alias.name}" in modules:
                        found.append(Import(child.lineno, f"{base}.{alias.name}", top, typing_only))
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(ast.Module(body=child.body, type_ignores=[]), child_top, True)
                for orelse in child.orelse:
                    visit(ast.Module(body=[orelse], type_ignores=[]), child_top, typing_only)
            else:
                visit(child, child_top, child_typing)

    visit(ast.parse(source), True, False)
    return [i for i in found if within(i.target, "openmagnet")]


def package_imports() -> tp.Dict[str, tp.List[Import]]:
    modules = all_modules()
    return {name: collect_imports(path.read_text(), name, path.name == "__init__.py", modules)
            for name, path in modules.items()}


def where(name: str, imp: Import) -> str:
    kind = "module-top" if imp.top else "in-function"
    return f"{name} (line {imp.line}, {kind}) imports {imp.target}"


def test_import_collector_resolves_relative_imports():
    modules = {"openmagnet", "openmagnet.codec", "openmagnet.codec.rvq", "openmagnet.codec.encodec",
               "openmagnet.train", "openmagnet.train.solver", "openmagnet.app", "openmagnet.config"}
    source = textwrap.dedent("""
        import torch
        import openmagnet.config
        from . import rvq
        from .. import config, train
        from ..train import solver as s
        from ..app import serve
        if tp.TYPE_CHECKING:
            from ..train.solver import Solver

        def f():
            from openmagnet.train.codec import trainer
        class C:
            from .rvq import ResidualVectorQuantizer
    """)
    found = collect_imports(source, "openmagnet.codec.encodec", False, modules)
    assert [(i.target, i.top, i.typing) for i in found] == [
        ("openmagnet.config", True, False),
        ("openmagnet.codec", True, False), ("openmagnet.codec.rvq", True, False),
        ("openmagnet", True, False), ("openmagnet.config", True, False), ("openmagnet.train", True, False),
        ("openmagnet.train", True, False), ("openmagnet.train.solver", True, False),
        ("openmagnet.app", True, False),
        ("openmagnet.train.solver", True, True),
        ("openmagnet.train.codec", False, False),
        ("openmagnet.codec.rvq", True, False)]
    assert collect_imports("from . import rvq", "openmagnet.codec", True, modules)[-1].target == "openmagnet.codec.rvq"


def inference_modules(modules: tp.Iterable[str]) -> tp.List[str]:
    """Every module of the inference rooms, read from the file tree: all but those under NOT_FOR_INFERENCE and
    the rooms' `command.py` parsers."""
    return sorted(m for m in modules
                  if not any(within(m, room) for room in NOT_FOR_INFERENCE) and m.rpartition(".")[2] != "command")


def layering_violations(imports: tp.Dict[str, tp.List[Import]]) -> tp.List[str]:
    return [where(name, imp) for name in inference_modules(imports) for imp in imports[name]
            if any(within(imp.target, m) for m in NOT_FOR_INFERENCE)]


def test_every_inference_module_is_guarded():
    """The enumeration comes from the file tree: a new inference module is covered without editing this test.
    The names below are today's floor (a lower bound), so a rule that silently dropped a room would fail."""
    found = set(inference_modules(all_modules()))
    assert {"openmagnet", "openmagnet.api", "openmagnet.checkpoint", "openmagnet.checkpoint.find",
            "openmagnet.checkpoint.read", "openmagnet.checkpoint.strict", "openmagnet.checkpoint.build",
            "openmagnet.checkpoint.write", "openmagnet.checkpoint.layout", "openmagnet._version", "openmagnet.lm",
            "openmagnet.decoding", "openmagnet.attention", "openmagnet.sampling", "openmagnet.config",
            "openmagnet.quantize", "openmagnet.conditioners", "openmagnet.audio", "openmagnet.files",
            "openmagnet.hardware", "openmagnet.locate", "openmagnet.codec", "openmagnet.codec.encodec",
            "openmagnet.codec.rvq", "openmagnet.codec.seanet", "openmagnet.codec.chunked", "openmagnet.runtime",
            "openmagnet.modes", "openmagnet.request"} <= found
    assert not [m for m in found if any(within(m, room) for room in NOT_FOR_INFERENCE) or m.endswith(".command")]
    assert "openmagnet.evaluation.objective" not in found and "openmagnet.train.command" not in found


@pytest.mark.parametrize("module", ["openmagnet.api", "openmagnet.checkpoint", "openmagnet.checkpoint.read"])
@pytest.mark.parametrize("line", ["from .data import manifest", "from .evaluation.objective import METRICS",
                                  "from . import train", "import openmagnet.app", "from .cli import main"])
def test_the_layering_rule_catches_an_upward_import(module, line):
    """A `from .data import ...` added to api.py or checkpoint.py (module top or inside a function) fails the
    rule: checked on today's source with the line appended, nothing written to the tree."""
    modules = all_modules()
    imports = package_imports()
    if module.count(".") == 2:  # a module of a sub-package: the rooms are one level further up
        line = line.replace("from .", "from ..")
    for source in (modules[module].read_text() + "\n" + line + "\n",
                   modules[module].read_text() + "\n\ndef _late():\n    " + line + "\n"):
        imports[module] = collect_imports(source, module, False, modules)
        bad = layering_violations(imports)
        assert bad and all(b.startswith(module + " (line ") for b in bad), bad


def test_inference_never_imports_training_data_evaluation_or_the_faces():
    bad = layering_violations(package_imports())
    assert not bad, ("inference code (every module outside train/, data/, evaluation/, the faces cli, app/, "
                     "transformers/, convert/ and the command.py parsers) must not import those rooms "
                     "(STYLE.md §3.2):\n" + "\n".join(bad))


def test_only_the_app_and_its_cli_command_import_the_app():
    bad = [where(name, imp) for name, imports in package_imports().items()
           if not within(name, "openmagnet.app") and name not in APP_IMPORTERS
           for imp in imports if within(imp.target, "openmagnet.app")]
    assert not bad, "only openmagnet/app/ (and cli.py's `app` command) may import openmagnet.app:\n" + "\n".join(bad)


def private_imports(source: str, name: str, is_package: bool) -> tp.List[str]:
    """`from .x import _y` (or `from openmagnet.x import _y`): a private name (one leading underscore, not a dunder
    such as __version__) taken from another openmagnet module, at module top or in a function."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")
            base = ".".join(base[:len(base) - (node.level - 1)] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        if not within(base, "openmagnet"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not (alias.name.startswith("__") and alias.name.endswith("__")):
                found.append(f"{name} (line {node.lineno}) imports {alias.name} from {base}")
    return found


def test_no_module_imports_a_private_name_of_another():
    """A module's private names (`_x`) are its own: the rooms meet through public names only (STYLE.md §2)."""
    bad = [b for name, path in all_modules().items()
           for b in private_imports(path.read_text(), name, path.name == "__init__.py")]
    assert not bad, "private names imported across modules (make them public, or keep them inside):\n" + \
        "\n".join(bad)


def test_the_private_import_rule_sees_relative_absolute_and_late_imports():
    source = textwrap.dedent("""
        from . import __version__
        from ._version import __version__ as v
        from .checkpoint import load_model, _hidden
        import openmagnet.checkpoint

        def late():
            from ..evaluation.adherence import _librosa
            from openmagnet.api import _parse_dtype
            from torch.nn import _reduction
    """)
    assert private_imports(source, "openmagnet.checkpoint.read", False) == [
        "openmagnet.checkpoint.read (line 4) imports _hidden from openmagnet.checkpoint.checkpoint",
        "openmagnet.checkpoint.read (line 8) imports _librosa from openmagnet.evaluation.adherence",
        "openmagnet.checkpoint.read (line 9) imports _parse_dtype from openmagnet.api"]


def import_cycles(graph: tp.Dict[str, tp.Set[str]]) -> tp.List[tp.List[str]]:
    """One cycle (a path a -> ... -> a) per strongly connected component of more than one module, or a
    module importing itself; found with Tarjan's algorithm."""
    index, low, stack, on_stack, sccs, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1 or v in graph.get(v, ()):
                sccs.append(scc)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for scc in sccs:
        start = min(scc)
        paths, seen = {start: [start]}, {start}  # breadth-first, inside the component, back to start
        queue = [start]
        while queue:
            v = queue.pop(0)
            for w in sorted(graph[v] & scc):
                if w == start:
                    cycles.append(paths[v] + [start])
                    queue = []
                    break
                if w not in seen:
                    seen.add(w)
                    paths[w] = paths[v] + [w]
                    queue.append(w)
    return cycles


def test_import_cycle_finder():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"a"}}) == [["a", "a"]]


def test_no_import_cycle_at_module_top():
    """Counting the imports that run when a module is imported (module top, not TYPE_CHECKING); an import
    of a module's own enclosing package is not an edge (the package is already being imported)."""
    graph = {name: {imp.target for imp in imports if imp.top and not imp.typing and not within(name, imp.target)}
             for name, imports in package_imports().items()}
    modules = set(graph)
    graph = {name: {t for t in targets if t in modules} for name, targets in graph.items()}
    cycles = import_cycles(graph)
    assert not cycles, "import cycles among module-top imports:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_importing_the_codec_loads_no_training_or_data():
    code = ("import sys, openmagnet.codec; "
            "print(sorted(m for m in sys.modules if m.split('.')[:2] in (['openmagnet', 'train'], "
            "['openmagnet', 'data'])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cli_parsers_load_neither_torch_nor_transformers():
    """`openmagnet --help` stays instant: the sub-commands' parsers (convert's included) are argparse only."""
    code = ("import sys, openmagnet.cli; openmagnet.cli.build_parser(); "
            "print([m for m in ('torch', 'transformers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

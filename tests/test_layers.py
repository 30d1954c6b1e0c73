"""The package's layers, as docs/architecture.md draws them: every import in src/cdtsde (those inside
functions too, relative and absolute) points to a lower layer, and the side-by-side packages of one
layer never import each other. A function-local import is still an arrow; hiding one only hides a loop.

`LAYERS` is the one table of them, top to bottom. A unit is a package or a top-level module of cdtsde, so that
renames inside a package leave the table as it is; every top-level module it does not name (errors, atomic,
settings, draws, intensity, imagefiles, the LMI maps, the package itself) belongs to `CORE`, the bottom layer,
so a new module that imports upward fails here until it is placed.
"""

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cdtsde"
CORE = "core"
LAYERS = (
    ("__main__",),  # python -m cdtsde
    ("cli",),  # one module per command
    ("run", "translate", "evaluation"),  # applications: a training run, translating files, scoring a model
    # the Fabric loop and checkpoints (any method on any data); scores of images and folders; figures
    ("training", "metrics", "visualize"),
    ("methods", "data"),  # translation methods and datasets, knowing nothing of each other
    ("diffusion", "networks"),  # diffusion processes and network architectures the methods share
    (CORE,),
)
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    """'cdtsde.data.readers' for src/cdtsde/data/readers.py, 'cdtsde.data' for its __init__.py."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str, modules: set[str]) -> str:
    """The package or top-level module of cdtsde that `module` lies in; unnamed top-level modules are CORE."""
    parts = module.split(".")
    if len(parts) == 1 or f"{PACKAGE}.{parts[1]}" not in modules:  # the package itself or one of its attributes
        return CORE
    return parts[1] if parts[1] in LAYER_OF else CORE


def imported_modules(tree: ast.Module, module: str, is_package: bool, modules: set[str]):
    """(line, imported cdtsde module) of every import in `tree`, wherever it stands."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            # `from . import draws` imports a module; `from .. import __version__` an attribute of the package
            names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                     for alias in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                yield node.lineno, name


def layer_violations(sources: dict[Path, str]) -> list[str]:
    """One line per import that points up or sideways, for `sources` ({path under src/: text})."""
    modules = {module_name(path) for path in sources}
    problems = []
    for path, text in sorted(sources.items()):
        module = module_name(path)
        importer = unit_of(module, modules)
        for line, name in imported_modules(ast.parse(text, str(path)), module, path.stem == "__init__", modules):
            imported = unit_of(name, modules)
            above, beside = LAYER_OF[imported] < LAYER_OF[importer], LAYER_OF[imported] == LAYER_OF[importer]
            if imported == importer or not (above or beside):
                continue
            problems.append(f"src/{path.as_posix()}:{line}: {importer} imports {name} of {imported}, "
                            f"{'a higher layer' if above else 'which sits beside it'}")
    return problems


def import_cycles(sources: dict[Path, str]) -> list[list[str]]:
    """Circles of modules importing each other (through any imports, function-local ones too), as [a, b, ..., a]:
    those a depth-first walk of the import graph meets, none exactly when there is none. The layers allow
    them inside a unit; this does not."""
    modules = {module_name(path) for path in sources}
    graph = {module_name(path): sorted({name for _, name in imported_modules(
        ast.parse(text, str(path)), module_name(path), path.stem == "__init__", modules)} & modules - {module_name(path)})
        for path, text in sources.items()}
    cycles, done = [], set()

    def visit(module: str, trail: list[str]):
        if module in trail:
            cycles.append(trail[trail.index(module):] + [module])
            return
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, trail + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    return cycles


def package_sources() -> dict[Path, str]:
    return {path.relative_to(SOURCE): path.read_text() for path in sorted((SOURCE / PACKAGE).rglob("*.py"))}


def test_every_import_points_down_the_layers():
    problems = layer_violations(package_sources())
    assert not problems, "imports against the layers of docs/architecture.md:\n" + "\n".join(problems)


def test_no_modules_import_each_other():
    assert not import_cycles(package_sources())


def test_the_table_names_only_what_exists():
    """A renamed unit would fall into the core under its new name while the table kept the old one."""
    units = {path.parts[1].removesuffix(".py") for path in package_sources() if path.parts[1] != "__init__.py"}
    assert set(LAYER_OF) - {CORE} <= units, set(LAYER_OF) - {CORE} - units


def fake_tree(files: dict[str, str]) -> dict[Path, str]:
    """A minimal package beside `files` (path under cdtsde/: text), each package with its __init__.py."""
    tree = {Path("cdtsde/__init__.py"): "", Path("cdtsde/errors.py"): ""}
    for name, text in files.items():
        path = Path("cdtsde", name)
        for package in path.parents[:-2]:
            tree.setdefault(package / "__init__.py", "")
        tree[path] = text
    return tree


@pytest.mark.parametrize(("files", "expected"), [
    # a function-local upward import, relative: data -> training
    ({"data/readers.py": "def f():\n    from ..training.batches import UnpairedData\n",
      "training/batches.py": ""},
     ["src/cdtsde/data/readers.py:2: data imports cdtsde.training.batches of training, a higher layer"]),
    # an absolute one, two packages up: networks -> methods
    ({"networks/unet.py": "import torch\nimport cdtsde.methods.base\n", "methods/base.py": ""},
     ["src/cdtsde/networks/unet.py:2: networks imports cdtsde.methods.base of methods, a higher layer"]),
    # sideways between the side-by-side packages, from a subpackage: methods -> data
    ({"methods/lmi/__init__.py": "\n\nclass A:\n    def f(self):\n        from ...data import readers\n",
      "data/readers.py": ""},
     ["src/cdtsde/methods/lmi/__init__.py:5: methods imports cdtsde.data.readers of data, which sits beside it"]),
    # the core imports an application: a top-level module the table does not name is core
    ({"helpers.py": "from . import translate\n", "translate.py": ""},
     ["src/cdtsde/helpers.py:1: core imports cdtsde.translate of translate, a higher layer"]),
])
def test_an_import_against_the_layers_is_named_with_its_file_line_and_layers(files, expected):
    assert layer_violations(fake_tree(files)) == expected


def test_imports_down_the_layers_and_within_a_unit_pass():
    files = {"training/checkpoint.py": "from .. import __version__\nfrom ..methods import base\n"
                                       "from ..data.readers import R\nfrom .batches import b\n",
             "training/batches.py": "from ..errors import E\n", "methods/base.py": "from ..networks import unet\n",
             "data/readers.py": "from cdtsde.errors import E\n", "networks/unet.py": ""}
    assert layer_violations(fake_tree(files)) == []


def test_a_circle_inside_a_package_is_found():
    """The circle the readers closed before every reader lived in data/readers.py."""
    files = {"data/readers.py": "def classes():\n    from .sar import SarReader\n",
             "data/sar.py": "from .paired import band_indices\nfrom .readers import FileReading\n",
             "data/paired.py": "from .readers import UnitReader\n"}
    assert import_cycles(fake_tree(files)) == [
        ["cdtsde.data.paired", "cdtsde.data.readers", "cdtsde.data.sar", "cdtsde.data.paired"],
        ["cdtsde.data.readers", "cdtsde.data.sar", "cdtsde.data.readers"]]

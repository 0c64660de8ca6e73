"""The house's plan holds: sub-packages by stage, imports only downward and in no loop, entry points that only wire.

The import graph is read from the source (every ``import``, inside functions too; only those under
``if TYPE_CHECKING:`` are left out, since they never run). A lazy import hides a cycle, it does
not remove it.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

SRC = REPO / "src"
PACKAGE = SRC / "pairlie"
# from the ground up: a module may import its own stage and those before it, never one after
STAGES = [
    ("pairlie.errors", "pairlie._aliases", "pairlie.trust", "pairlie.specs"),
    ("pairlie.io",),
    ("pairlie.data",),
    ("pairlie.model",),
    ("pairlie.infer",),
    ("pairlie.evaluate",),
    ("pairlie.train",),
    ("pairlie.deploy",),
    ("pairlie.configuration",),
    ("pairlie.cli",),
]
CLI_LINES = 120


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The pairlie modules ``path`` imports (``from pairlie.x import y`` is pairlie.x.y where that is a module)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("pairlie"))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.module.split(".")[0] == "pairlie":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in known else node.module)

    Visitor().visit(ast.parse(path.read_text()))
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def stage(module: str) -> int | None:
    for index, names in enumerate(STAGES):
        if any(module == n or module.startswith(n + ".") for n in names):
            return index
    return None


def test_every_module_belongs_to_a_stage_and_each_sub_package_says_what_it_may_import():
    for name, path in modules().items():
        if name == "pairlie":
            continue
        assert stage(name) is not None, f"{name}: in no stage of tests/test_house.py's STAGES"
        if path.name == "__init__.py":
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert doc and ("import" in doc or name == "pairlie.cli"), f"{name}: its docstring says what it may import"


def test_the_source_imports_no_module_by_its_old_path():
    from pairlie._aliases import MODULES

    for name, path in modules().items():
        if name == "pairlie._aliases":
            continue
        for imported in imports(path, set(modules())):
            assert imported not in MODULES, f"{name} imports {imported}: write {MODULES[imported]}"


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                loop = trail[trail.index(nxt) :] + [nxt] if nxt in trail else [node, nxt]
                pytest.fail(f"import cycle: {' -> '.join(loop)}")
            if state.get(nxt) is None:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(edges):
        if state.get(node) is None:
            visit(node, [node])


def test_imports_only_go_down():
    for name, targets in graph().items():
        if name == "pairlie":  # the package's face: the public names, lazily
            continue
        for target in targets:
            if target == "pairlie":  # __version__
                continue
            assert stage(target) <= stage(name), (
                f"{name} (stage {STAGES[stage(name)][0]}) imports {target} (stage {STAGES[stage(target)][0]}), a later stage"
            )


def test_a_cycle_or_an_upward_import_would_be_found(tmp_path):
    text = "from pairlie.cli.common import run_cli\n\ndef f():\n    from pairlie.train import module\n"
    (tmp_path / "x.py").write_text(text)
    assert {"pairlie.cli.common", "pairlie.train.module"} <= imports(tmp_path / "x.py", set(modules()))
    assert stage("pairlie.cli.common") > stage("pairlie.model.nets")


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_entry_points_only_wire(path):
    lines = len(path.read_text().splitlines())
    assert lines <= CLI_LINES, f"{path.name}: {lines} lines; move logic into the library (at most {CLI_LINES})"


def test_old_dotted_paths_still_import_as_the_same_modules():
    from pairlie._aliases import MODULES

    for old, new in MODULES.items():
        assert importlib.import_module(old) is importlib.import_module(new), old


def test_a_checkpoint_saved_before_the_sub_packages_loads_everywhere(tmp_path):
    import torch

    from pairlie.infer.enhancer import Enhancer
    from pairlie.model.checkpoints import load_net
    from pairlie.model.nets import PairLIENet
    from pairlie.train.module import PairLIEModule

    old = REPO / "tests" / "data" / "before_subpackages.ckpt"
    blob = torch.load(old, weights_only=True)
    assert blob["hyper_parameters"]["net"]["_target_"] == "pairlie.nets.PairLIENet"  # as written then
    net, hparams = load_net(old)
    assert type(net) is PairLIENet and hparams["gamma"] == 0.14
    module = PairLIEModule.load_from_checkpoint(old)
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in net.state_dict().items())
    image = torch.rand(1, 3, 24, 30, generator=torch.Generator().manual_seed(0))
    assert Enhancer.from_checkpoint(old, device="cpu").decompose(image).enhanced.shape == (1, 3, 24, 30)


def test_configs_name_classes_at_their_current_homes():
    from pairlie._aliases import MODULES

    for path in (REPO / "configs").rglob("*.yaml"):
        for target in re.findall(r"_target_:\s*(pairlie\.[\w.]+)", path.read_text()):
            assert not any(target.startswith(old + ".") for old in MODULES), f"{path}: {target}"


def test_the_code_map_is_generated_from_the_current_docstrings():
    import importlib.util

    spec = importlib.util.spec_from_file_location("code_map", REPO / "scripts" / "code_map.py")
    code_map = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(code_map)
    assert (REPO / "docs" / "code-map.md").read_text() == code_map.render(), (
        "docs/code-map.md is stale: run python scripts/code_map.py --write"
    )


@pytest.mark.parametrize("cli", ["enhance", "export"])
def test_the_inference_entry_points_start_without_lightning(cli):
    # pairlie-enhance and pairlie-export load a net and run it: Lightning (~2.5 s to import) is the
    # training stage's, and a lazy edge from infer/deploy up into train would pull it back in
    code = f"import sys, pairlie.cli.{cli}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'lightning'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"pairlie-{cli} imports {out.strip()}"

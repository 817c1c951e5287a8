"""The house as its plan says: one-way imports, and every stage depends on the code it runs."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "src" / "arcadedreamer"
# config ← data ← models ← training / evaluation / viz / control ← cli (README: Layout); utilities below all
LAYERS = {
    "errors": 0, "fileio": 0, "interrupts": 0, "progress": 0, "config": 0, "provenance": 0, "preflight": 0,
    "data": 1, "tracking": 1,
    "models": 2,
    "training": 3, "evaluation": 3, "viz": 3, "control": 3, "registry_model": 3,
    "cli": 4, "__main__": 5,
}  # fmt: skip


def package_imports(path: Path) -> set[str]:
    """Every `arcadedreamer.…` module a source file imports (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arcadedreamer"):
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (PACKAGE / node.module.split(".", 1)[-1].replace(".", "/") / f"{alias.name}.py").exists()
            )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("arcadedreamer"))
    return found


def part(module: str) -> str | None:
    """`arcadedreamer.data.collector` → "data"; the package itself → None."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_one_way(path):
    here = part("arcadedreamer." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    if here in (None, "__init__"):
        return
    for module in package_imports(path):
        there = part(module)
        if there is None or there == here or there == "errors":
            continue
        assert LAYERS[there] < LAYERS[here], (
            f"{path.relative_to(PACKAGE)} imports {module}: against the layering"
        )


def test_the_layering_test_catches_a_backward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from arcadedreamer.training.common import train_step\n")
    assert "arcadedreamer.training.common" in package_imports(bad)


def stage_modules(stage: dict) -> set[str]:
    """The package modules a stage's command loads: the CLI command function's own imports,
    followed to their closure by importing them in a fresh interpreter."""
    command = stage["cmd"].split()[1]
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == command)
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    roots = {"arcadedreamer.cli"}
    for node in ast.walk(function):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arcadedreamer"):
            roots.add(node.module)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
            for inner in ast.walk(helpers[node.func.id]):  # e.g. dream → _resolve_model → tracking
                if (
                    isinstance(inner, ast.ImportFrom)
                    and inner.module
                    and inner.module.startswith("arcadedreamer")
                ):
                    roots.add(inner.module)
                if isinstance(inner, ast.ImportFrom) and inner.module == "arcadedreamer":
                    roots.update(f"arcadedreamer.{a.name}" for a in inner.names)
    script = (
        "import importlib, json, sys\n"
        f"for name in {sorted(roots)!r}:\n    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('arcadedreamer'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    return set(json.loads(out.stdout))


def module_file(module: str) -> Path:
    relative = Path(*module.split(".")[1:])
    package = PACKAGE / relative / "__init__.py"
    return package if package.exists() else PACKAGE / relative.with_suffix(".py")


@pytest.mark.parametrize("name", ["collect", "vae", "dynamics", "evaluate", "dream", "controller", "agent"])
def test_every_stage_depends_on_all_the_code_it_imports(name):
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    deps = [PROJECT_ROOT / d for d in stages[name]["deps"] if d.startswith("src/")]
    modules = stage_modules(stages[name])
    assert "arcadedreamer.config" in modules and len(modules) > 5
    missing = [
        str(module_file(m).relative_to(PROJECT_ROOT))
        for m in sorted(modules)
        if not any(module_file(m) == d or d in module_file(m).parents for d in deps)
    ]
    assert not missing, f"dvc.yaml stage {name} runs code it does not depend on: {missing}"


def test_the_gpu_check_runs_its_smoke_form_on_the_cpu(tmp_path):
    """`benchmarks/gpu_check.py --smoke`: every part of the GPU check on tiny CPU sizes, so the
    script a lent GPU runs cannot rot unseen."""
    out = tmp_path / "gpu_check.json"
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out),
         "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(out.read_text())
    for stage in ("vae", "dynamics"):
        check = figures["check"][stage]
        assert check["ok"] and check["finite"] and check["relative_gap"] <= 0.05
        assert all(
            r["samples_per_s"] > 0 and 0 <= r["data_wait"] < 1 for r in figures["speed"][stage].values()
        )
    assert figures["report"]["total_s"] > 0 and "full defaults" in figures["report"]["verdict"]

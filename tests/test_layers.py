"""The package's shape: no import cycle between modules, no module importing from a layer above its own.

Every module's imports are read with ``ast``, function-level ones included: a lazy import is still a
dependency. ARCHITECTURE.md says why the layers are in this order.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. Packages on one line are siblings: they may import the layers below, never each other.
LAYERS = [
    ("_version",),
    ("fileio", "workers", "hardware"),  # hardware: the machine described, and the defaults that fit it
    ("config",),
    ("audio", "text", "templates"),  # templates: the HTML pages' jinja2 environment
    ("data",),
    ("models", "vocoders"),  # each model's typed config beside it
    ("voice_config",),  # what inference needs: names a model and holds its typed config
    ("run_config", "vocoder_config"),  # a training run: the voice's fields, the loop, optim, fine-tuning
    ("registry",),  # the bundle store and model cards: file formats, no model code
    ("inference",),  # checkpoints, bundles, synthesis; never training or Lightning
    ("evaluation",),  # the judges; evaluate_run synthesizes through inference
    # training scores with evaluation; serving only synthesizes; doctor checks the machine
    ("training", "serving", "doctor"),
    # studio shares serving's request checks (serving/guard.py); it runs training as a `voicetrain` subprocess,
    # so it never imports training/ although that layer is below it (NEVER_IMPORTS)
    ("studio",),
    ("cli", "__init__"),  # the shell and the package's public API (voicetrain.load_voice)
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}
# lower layers a package must still keep out of: the studio adds nothing to a training process (ARCHITECTURE.md)
NEVER_IMPORTS = {"studio": {"training"}}
# inference/ runs where Lightning is not installed
NO_LIGHTNING = {"_version", "fileio", "workers", "hardware", "config", "voice_config", "run_config", "vocoder_config", "audio", "text",
                "templates", "data", "models", "vocoders", "registry", "inference", "serving", "doctor", "studio"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted((SRC / "voicetrain").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> list[tuple[str, int, str]]:
    """(imported module, line, statement) for every import in ``module``, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, ast.unparse(node)) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level-1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                # `from pkg import mod` imports the submodule; `from mod import name` the module
                target = f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                found.append((target, node.lineno, ast.unparse(node)))
    return found


def _graph() -> dict[str, list[tuple[str, int, str]]]:
    return {m: [i for i in _imports(m, p) if i[0] in MODULES and i[0] != m] for m, p in MODULES.items()}


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(SRC.parent)}:{line}"


def test_every_package_has_a_layer():
    missing = sorted({_layer(m) for m in MODULES} - set(RANK))
    assert not missing, f"add {missing} to LAYERS in tests/test_layers.py (and ARCHITECTURE.md)"


def test_no_module_imports_from_a_layer_above_or_beside_it():
    bad = []
    for module, imports in _graph().items():
        here = _layer(module)
        for target, line, stmt in imports:
            there = _layer(target)
            if there != here and RANK[there] >= RANK[here]:
                where = "a sibling layer" if RANK[there] == RANK[here] else "a layer above"
                bad.append(f"{_where(module, line)}: {module} ({here}) imports {target} ({there}, {where}): {stmt}")
    assert not bad, "imports against the layer order (tests/test_layers.py LAYERS):\n" + "\n".join(bad)


def test_studio_never_imports_training():
    bad = [f"{_where(m, line)}: {m} imports {target}: {stmt}" for m, imps in _graph().items()
           for target, line, stmt in imps if _layer(target) in NEVER_IMPORTS.get(_layer(m), ())]
    assert not bad, "imports NEVER_IMPORTS forbids (tests/test_layers.py):\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = {m: sorted({t for t, _, _ in imps}) for m, imps in _graph().items()}
    cycles, state, stack = [], {}, []

    def visit(m: str) -> None:  # depth-first; an edge back into the stack closes a cycle
        state[m] = "open"
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == "open":
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, "import cycles between modules:\n" + "\n".join(cycles)


def test_runtime_layers_never_import_lightning():
    bad = [f"{_where(m, line)}: {m}: {stmt}" for m, p in MODULES.items() if _layer(m) in NO_LIGHTNING
           for target, line, stmt in _imports(m, p) if target.split(".")[0] in ("lightning", "pytorch_lightning")]
    assert not bad, "Lightning imported outside training/:\n" + "\n".join(bad)

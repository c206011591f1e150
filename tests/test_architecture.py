"""The package's shape (ARCHITECTURE.md): imports point one way, the library reads no
configuration from the environment, and nothing in it imports gradio."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lstm_model")
# The environment variables the library may read: the Hub's own and torchrun's own.
ALLOWED_ENVIRONMENT = {"data.py": {"HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"},
                       "distributed.py": {"WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}}


def modules() -> dict[str, ast.Module]:
    return {name[:-3]: ast.parse(open(os.path.join(PACKAGE, name), encoding="utf-8").read())
            for name in sorted(os.listdir(PACKAGE)) if name.endswith(".py")}


def is_main_guard(node) -> bool:
    """`if __name__ == "__main__":`, the entry point of `python -m lstm_model.x` (not a dependency)."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def walk(tree, mains: bool = False):
    """Every node; the `__main__` blocks only with `mains`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(child for child in ast.iter_child_nodes(node) if mains or not is_main_guard(child))


def package_imports(tree, names) -> set[str]:
    """The package's modules that a module imports: at its top, inside its functions and in its
    `__main__` block (a command line that imports its importer is a circle too: `python -m` loads
    the module twice)."""
    found = set()
    for node in walk(tree, mains=True):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("lstm_model."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lstm_model."))
    return found & set(names)


def find_cycle(graph) -> list[str] | None:
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_cycle():
    trees = modules()
    graph = {name: package_imports(tree, trees) - {name} for name, tree in trees.items()}
    assert graph["model"] <= {"vocab", "cards"}  # the model depends on nothing that serves or trains it
    assert "session" not in graph["text_stream"] and "serving" in graph["text_stream"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_a_main_block_counts_in_the_import_graph():
    tree = ast.parse("from .a import x\nif __name__ == '__main__':\n    from .b import main\n")
    assert package_imports(tree, {"a", "b"}) == {"a", "b"}


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_the_library_reads_no_configuration_and_imports_no_gradio(name):
    tree = modules()[name]
    read = set()
    for node in walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(i.split(".")[0] == "gradio" for i in imported), f"{name}.py imports gradio"
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            parent_keys = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "value", None) is node]
            for call in parent_keys:
                read.update(a.value for a in call.args[:1] if isinstance(a, ast.Constant))
            if not parent_keys:
                read.add("<unknown>")
    assert read <= ALLOWED_ENVIRONMENT.get(f"{name}.py", set()), f"{name}.py reads {sorted(read)}"

"""The package layout the design fixes: autograd depends on nothing of ours."""

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_top_level_names(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_autograd_imports_neither_npplm_nor_gpu():
    for path in sorted((ROOT / "autograd").rglob("*.py")):
        bad = imported_top_level_names(path) & {"npplm", "gpu"}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}: the engine must stand alone"


def test_gpu_does_not_import_npplm():
    for path in sorted((ROOT / "gpu").rglob("*.py")):
        assert "npplm" not in imported_top_level_names(path), path


def import_graph(*tops):
    """{module: modules it imports}, for the packages `tops`, counting every import
    statement (function-level ones too), as ../shared/tools/import_cycles.py does."""
    paths = {}
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            paths[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in found:  # the longest prefix that is one of our modules
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                # A package importing its own submodules is not a cycle by itself.
                leaves = {m for m in component
                          if not any(o.startswith(m + ".") for o in component)}
                if len(component) > 2 or len(leaves) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_in_npplm():
    assert cycles(import_graph("npplm")) == []


def test_the_only_cycle_in_the_tree_is_the_engines_late_import():
    # autograd/tensor.py imports the ops at its end, after Tensor exists, because every op
    # module imports Tensor (documented there). Nothing else may close a loop.
    allowed = {"autograd.tensor", "autograd.primitive"}
    for component in cycles(import_graph("autograd", "gpu", "npplm")):
        assert set(component) <= allowed | {m for m in component
                                            if m.startswith("autograd.ops.")}, component


def test_npplm_top_level_holds_packages_and_the_entry_points_only():
    loose = sorted(p.name for p in (ROOT / "npplm").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "runtime.py"], loose


# The floors, lowest first: a module may import its own floor and those below, never above.
# (npplm/__init__.py, the package's front door, gathers names from every floor.)
FLOORS = [["autograd"], ["gpu"], ["npplm.runtime"], ["npplm.layers"], ["npplm.quantization"],
          ["npplm.generation"],
          ["npplm.io", "npplm.tokenizers"], ["npplm.models"], ["npplm.objectives"],
          ["npplm.distributed"], ["npplm.training"], ["npplm.inference", "npplm.alignment"],
          ["npplm.serving"],
          ["npplm.cli", "npplm.__main__"]]


def floor_of(module):
    for level, names in enumerate(FLOORS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    return None


def test_every_import_goes_to_the_same_floor_or_below():
    graph = import_graph("autograd", "gpu", "npplm")
    upward = []
    for module, targets in graph.items():
        if module == "npplm":
            continue
        assert floor_of(module) is not None, f"{module} is on no floor: add it to FLOORS"
        upward += [f"{module} -> {t}" for t in targets
                   if t != "npplm" and floor_of(t) > floor_of(module)]
    assert upward == []


def test_engine_primitives_compute_the_same_whether_or_not_npplm_is_imported():
    # The engine has no kernel hooks for a later import to set: the same float32 inputs
    # give the same bytes in a process that imported only autograd and in one that
    # imported npplm (and so every layer and kernel) first.
    code = ("{first}import hashlib, numpy as np, autograd as ag\n"
            "x = np.random.default_rng(0).standard_normal((512, 4096)).astype(np.float32)\n"
            "t = ag.Tensor(x, requires_grad=True)\n"
            "y = (ag.exp(t - ag.logsumexp(t, axis=-1, keepdims=True)) @ t.transpose(1, 0))\n"
            "y.sum().backward()\n"
            "print(hashlib.sha256(y.data.tobytes() + t.grad.tobytes()).hexdigest())")
    runs = [subprocess.run([sys.executable, "-c", code.format(first=first)], check=True,
                           capture_output=True, text=True, cwd=ROOT).stdout
            for first in ("", "import npplm, npplm.training\n")]
    assert runs[0] == runs[1]
    import autograd

    assert not hasattr(autograd, "softmax") and not hasattr(autograd, "use_kernels")


def test_softmax_lives_with_the_layers_and_dispatches_visibly():
    # One home: npplm.layers.softmax, whose forward names its kernels on visible lines.
    import inspect

    from npplm.layers import softmax

    source = inspect.getsource(softmax.fun)
    assert "kernels.softmax_forward" in source and "softmax_reference" in source


def test_required_top_level_layout():
    for name in ("pyproject.toml", "README.md", "npplm", "autograd", "gpu", "benchmarks",
                 "tests"):
        assert (ROOT / name).exists(), f"missing {name}"


def test_import_npplm_needs_no_cupy_and_no_gpu():
    # The CUDA kernel modules (gpu/numba_cuda/) are imported by name with the primitives
    # that dispatch to them, which imports numba.cuda but compiles nothing and touches no
    # driver: @cuda.jit compiles on a kernel's first launch. This machine has no GPU.
    code = "import sys, npplm; print('cupy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_every_kernel_module_says_when_it_applies_and_nothing_is_reached_by_getattr():
    # One dispatch pattern: the primitive imports the kernel module and asks its applies().
    for folder in ("numba_cpu", "numba_cuda"):
        for path in sorted((ROOT / "gpu" / folder).glob("*.py")):
            tree = ast.parse(path.read_text())
            defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            if path.name != "__init__.py":
                assert "applies" in defined, f"{path.relative_to(ROOT)} has no applies()"
    for path in sorted([*(ROOT / "gpu").rglob("*.py"), *(ROOT / "npplm").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "__getattr__" not in names, f"{path.relative_to(ROOT)}: a module __getattr__"

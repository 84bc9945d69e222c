"""Loading a script of ``benchmarks/`` as a module, for the tests of the benchmarks (they are scripts, not a package)."""
import importlib.util
import os

BENCHMARKS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load_bench(name: str):
    """``benchmarks/<name>.py``, freshly executed as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS_DIR, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

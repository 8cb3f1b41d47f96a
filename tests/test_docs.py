import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

import pytest

import vapi_trl


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_mkdocs_strict_build(tmp_path):
    pytest.importorskip("mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for symbol in ("VAPiConfig", "VAPiTrainer", "clipped_surrogate", "LlamaGenForClassToImage"):
        assert symbol in api


def public_symbols():
    for module_info in pkgutil.walk_packages(vapi_trl.__path__, "vapi_trl."):
        if module_info.name.startswith("vapi_trl.demo.data"):
            continue
        module = importlib.import_module(module_info.name)
        for name in getattr(module, "__all__", []):
            yield module_info.name, name, getattr(module, name)


def test_every_public_symbol_has_a_docstring():
    missing = []
    for module, name, obj in public_symbols():
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not (obj.__doc__ or "").strip():
            missing.append(f"{module}.{name}")
    assert missing == [], f"public symbols without a docstring: {missing}"

"""Layers point one way: ``textenv`` (core) <- ``rewards`` <- ``agents`` <- the command line.

The core and the reward plugins work with ``agents``, stable-baselines3 and sb3-contrib unimportable, and no
module under ``textenv/`` or ``rewards/`` names ``agents`` in an import, even a lazy one inside a function.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("agents", "stable_baselines3", "sb3_contrib")

CORE_WITHOUT_AGENTS = textwrap.dedent(
    f"""
    import importlib.abc
    import sys

    BLOCKED = {BLOCKED!r}


    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{{name}} is blocked by test_layers", name=name)
            return None


    sys.meta_path.insert(0, Block())
    for name in BLOCKED:
        try:
            __import__(name)
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit(f"the finder did not block {{name}}")

    import gymnasium as gym

    import rewards
    import textenv

    for env_id, (kwargs, _) in textenv.ENV_IDS.items():
        env = gym.make(env_id)
        obs, info = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(int(env.unwrapped.tokenizer.eos_token_id))
        # EOS ends a single-turn episode, or a dialogue env's first agent turn (the other side then replies)
        assert (terminated or info["turn"] == 1) and reward == reward, (env_id, terminated, info, reward)
        assert env.observation_space.contains(obs), env_id
        env.close()
        print("made", env_id, env.spec.kwargs.get("reward"))
    assert "topic_words" in rewards.available()
    loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set(BLOCKED))
    assert not loaded, loaded
    print("ok")
    """
)


def test_core_and_rewards_work_without_agents_or_sb3():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CORE_WITHOUT_AGENTS], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from textenv.registration import ENV_IDS

    assert result.stdout.count("made ") == len(ENV_IDS) >= 2
    assert result.stdout.strip().endswith("ok")


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value:
            module = node.value.split(":")[0]  # "module:attr" strings (entry points, reward specs)
            if module.replace(".", "").replace("_", "").isalnum():
                found.append((node.lineno, module))
    return found


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in ("import_module", "__import__")


@pytest.mark.parametrize("package", ["textenv", "rewards"])
def test_no_core_module_imports_a_higher_layer(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in files
        for line, module in _imported_modules(path)
        if module.split(".")[0] in BLOCKED
    ]
    assert not offending, "lower layer imports a higher one:\n" + "\n".join(offending)


def test_the_static_check_sees_lazy_imports_and_module_attr_strings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f():\n    from agents.runs.runner import train\n"
        "def g():\n    import importlib\n    importlib.import_module('stable_baselines3')\n"
        "REWARD = 'agents.sb3.word_task:topic_word_reward'\n"
    )
    modules = sorted(module for _, module in _imported_modules(sample))
    assert modules == ["agents.runs.runner", "agents.sb3.word_task", "importlib", "stable_baselines3"]

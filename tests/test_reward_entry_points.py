"""Third-party reward plugins through the ``textenv.rewards`` entry-point group.

The demo package in ``tests/fixtures/reward_plugin_pkg`` is really pip-installed into this interpreter for
the module and uninstalled afterwards; the checks run in fresh interpreters so ``importlib.metadata`` sees
the installed state. Shadowing and broken entry points use a dist-info folder put on ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "reward_plugin_pkg"
DIST = "textenv-demo-reward"


def run_python(code: str, extra_path: Path | None = None) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object, returned here."""
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else []) + [env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def demo_package(tmp_path_factory):
    """Install the demo plugin package for this module (serialised across concurrent test runs), then remove it."""
    lock_path = Path(tempfile.gettempdir()) / "textenv-demo-reward-install.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # build from a copy, so setuptools' build/ and *.egg-info never land in the source tree
        source = tmp_path_factory.mktemp("pkg") / "reward_plugin_pkg"
        shutil.copytree(FIXTURE, source)
        pip("install", "--no-deps", "--no-build-isolation", "-q", str(source))
        try:
            yield DIST
        finally:
            with contextlib.suppress(AssertionError):
                pip("uninstall", "-y", "-q", DIST)
            fcntl.flock(lock, fcntl.LOCK_UN)


def test_installed_entry_point_is_listed_lazily_and_made(demo_package):
    result = run_python(
        """
        import json, sys
        import rewards

        listed = rewards.available()
        imported_after_listing = "textenv_demo_reward" in sys.modules
        model = rewards.make("demo_exclaim", per_mark=0.5)
        values = model(["p", "p", "p"], ["hi", "hi!", "wow!!!!!!!!"]).tolist()
        composite = rewards.make(["sentiment", ("demo_exclaim", 2.0)]).score(["p"], ["good!"])
        try:
            rewards.make("demo_exclaim", volume=11)
            bad_kwarg = None
        except TypeError as err:
            bad_kwarg = str(err)
        print(json.dumps({
            "source": listed.get("demo_exclaim"),
            "sentiment": listed.get("sentiment"),
            "imported_after_listing": imported_after_listing,
            "imported_after_make": "textenv_demo_reward" in sys.modules,
            "name": model.name,
            "values": values,
            "components": sorted(composite.components),
            "exclaim_component": composite.components["demo_exclaim"].tolist(),
            "bad_kwarg": bad_kwarg,
        }))
        """
    )
    assert result["source"] == f"entry point: {DIST} (textenv_demo_reward:ExclaimReward)"
    assert result["sentiment"] == "builtin"
    assert result["imported_after_listing"] is False and result["imported_after_make"] is True
    assert result["name"] == "demo_exclaim"
    assert result["values"] == [0.0, 0.5, 3.0]  # 0.5 per "!", capped at 3
    assert result["components"] == ["demo_exclaim", "sentiment"] and result["exclaim_component"] == [1.0]
    assert "demo_exclaim" in result["bad_kwarg"] and "'volume'" in result["bad_kwarg"]


@pytest.fixture
def shadowing_site(tmp_path) -> Path:
    """A dist-info folder declaring entry points that shadow a built-in, point nowhere, or duplicate one another."""
    site = tmp_path / "site"
    for dist, body in {
        "shadow_rewards": "sentiment = shadow_module_never_imported:Nope\nbroken_reward = no_such_module_abc:Thing\n",
        "dup_rewards": "broken_reward = another_missing_module:Thing\n",
    }.items():
        info = site / f"{dist}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[textenv.rewards]\n{body}")
    return site


def test_builtins_win_over_entry_points_and_broken_entry_points_fail_clearly(shadowing_site):
    result = run_python(
        """
        import json, warnings
        import rewards

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            listed = rewards.available()
            model = rewards.make("sentiment")
            rewards.make("sentiment")
            rewards.available()
        try:
            rewards.make("broken_reward")
            error = None
        except ImportError as err:
            error = str(err)
        try:
            rewards.make("not_a_reward_at_all")
        except rewards.UnknownRewardError as err:
            unknown = str(err)
        print(json.dumps({
            "sentiment": listed["sentiment"],
            "broken": listed.get("broken_reward"),
            "plugin": type(model.plugin).__module__,
            "warnings": [str(w.message) for w in caught],
            "error": error,
            "unknown": unknown,
        }))
        """,
        extra_path=shadowing_site,
    )
    assert result["sentiment"] == "builtin" and result["plugin"] == "rewards.builtin.sentiment"
    shadow = [w for w in result["warnings"] if "'sentiment'" in w]
    assert len(shadow) == 1 and "shadow_module_never_imported" in shadow[0]  # warned once
    duplicate = [w for w in result["warnings"] if "defined twice" in w]
    assert len(duplicate) == 1 and "broken_reward" in duplicate[0]
    assert result["broken"].startswith("entry point: ") and "Thing" in result["broken"]
    assert "broken_reward" in result["error"] and "Thing" in result["error"]
    assert "broken_reward" in result["unknown"] and "sentiment" in result["unknown"]

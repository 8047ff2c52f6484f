"""authserver installs like a package: what it imports is declared, and the wheel alone (no
checkout) carries the Cedar policies and the conformance suite."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-")
            for r in requirements}


def _third_party_imports(paths: list[Path]) -> dict[str, set[str]]:
    """distribution name → the files that import it directly."""
    distributions = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("authserver", "conformance"):
                    continue
                for dist in distributions.get(top, [top]):
                    found.setdefault(dist.lower().replace("_", "-"), set()).add(
                        str(path.relative_to(ROOT)))
    return found


def _sources(*dirs: str, exclude: str | None = None) -> list[Path]:
    files = [p for d in dirs for p in (ROOT / d).rglob("*.py") if "migrations" not in p.parts
             and "third_party" not in p.parts]
    return [p for p in files if exclude is None or exclude not in p.parts]


def test_every_import_is_declared() -> None:
    core = _names(PYPROJECT["project"]["dependencies"])
    demo = _names(PYPROJECT["project"]["optional-dependencies"]["demo"])
    undeclared = {dist: files for dist, files in _third_party_imports(
        _sources("authserver", "conformance", exclude="demo")).items() if dist not in core}
    assert undeclared == {}, "imported but not in [project] dependencies"
    undeclared = {dist: files for dist, files in _third_party_imports(
        _sources("authserver/demo")).items() if dist not in core | demo}
    assert undeclared == {}, "imported by the demo but not in the `demo` extra"


def test_demo_only_dependencies_are_not_runtime_dependencies() -> None:
    core = _names(PYPROJECT["project"]["dependencies"])
    assert {"requests-oauth2client", "jwskate"} & core == set()


def test_the_locks_pin_every_declared_dependency() -> None:
    from packaging.requirements import Requirement

    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("#", 1)[0].split(";", 1)[0].strip().split("==", 1)
                    for line in lines if "==" in line and not line.startswith(("#", " ")))

    project = PYPROJECT["project"]
    extras = [r for extra in ("demo", "test") for r in project["optional-dependencies"][extra]
              if not r.startswith("authserver")]
    for lock, requirements in (("requirements.lock", project["dependencies"]),
                               ("requirements-test.lock", project["dependencies"] + extras)):
        pinned = {k.lower().replace("_", "-"): v.strip() for k, v in pins(lock).items()}
        for text in requirements:
            requirement = Requirement(text)
            name = requirement.name.lower().replace("_", "-")
            assert name in pinned, f"{lock} does not pin {name} (re-run scripts/lock)"
            assert requirement.specifier.contains(pinned[name]), \
                f"{lock} pins {name}=={pinned[name]}, outside {requirement.specifier}"
    runtime = pins("requirements.lock")
    assert "pytest" not in runtime and "requests-oauth2client" not in runtime


def test_the_demo_without_its_extra_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from authserver.cli import main

    for name in [m for m in sys.modules if m.startswith("authserver.demo")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "requests_oauth2client", None)
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 1
    assert "the demo needs requests_oauth2client: pip install 'authserver[demo]'" in result.output


# --- the wheel, installed outside the checkout -----------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv holding only the built wheel. Its dependencies come
    from this venv's site-packages, added as a plain path (its .pth files, and so the editable
    install of the checkout, stay inactive), so nothing is downloaded but the build backend."""
    root = tmp_path_factory.mktemp("packaging")
    # Built from a copy: a build writes build/ and *.egg-info beside the sources.
    src = root / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(root / "dist"),
                    str(src)], check=True, capture_output=True)
    (wheel,) = (root / "dist").glob("authserver-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    Path(site.strip(), "_deps_from_test_venv.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def _run(bin_dir: Path, cwd: Path, *args: str,
         timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AUTHSERVER_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_the_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, tmp_path, "python", "-c",
                 "import authserver, conformance; print(authserver.__file__); "
                 "print(conformance.__file__)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(installed.parent)), line


@pytest.mark.slow
def test_the_installed_package_finds_its_policies(installed: Path, tmp_path: Path) -> None:
    check = _run(installed, tmp_path, "authserver", "config", "check")
    assert check.returncode == 0, check.stderr
    policy_dir = Path(__import__("json").loads(check.stdout)["policy_dir"])
    assert policy_dir.is_relative_to(installed.parent)
    assert (policy_dir / "schema.cedarschema").is_file()
    assert list(tmp_path.iterdir()) == []  # a read-only command wrote nothing


@pytest.mark.slow
def test_the_installed_package_plays_the_demo(installed: Path, tmp_path: Path) -> None:
    demo = _run(installed, tmp_path, "authserver", "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Summary" in demo.stdout
    assert not (tmp_path / "var").exists()


@pytest.mark.slow
def test_the_installed_package_runs_the_conformance_suite(installed: Path,
                                                          tmp_path: Path) -> None:
    for args in (("authserver", "conformance", "--help"), ("python", "-m", "conformance", "-h")):
        result = _run(installed, tmp_path, *args)
        assert result.returncode == 0, result.stderr
        assert "--issuer" in result.stdout

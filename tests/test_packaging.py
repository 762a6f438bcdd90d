"""The package as users get it: ``pip install -e .`` / ``pip install .`` (pyproject.toml), console scripts,
``python -m tools.<name>``, no ``sys.path`` edits in the code, and an import of ``paddle_unimo`` that neither
imports paddle nor changes the environment."""
import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py") if p.stem != "__init__")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
CPU_VARIABLES = ("MKL_DEBUG_CPU_TYPE", "OMP_NUM_THREADS")


def clean_env() -> dict:
    """This environment without the variables ``cpu_defaults`` sets (conftest set them for this process)."""
    return {k: v for k, v in os.environ.items() if k not in CPU_VARIABLES}


def python(args, cwd, exe=sys.executable, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_no_sys_path_edits_in_the_code():
    """Imports resolve through the installed (or checked-out) packages, never through edits of sys.path."""
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("paddle_unimo", "tasks", "tools")
             for path in sorted((ROOT / folder).rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "sys.path.insert" in line]
    assert found == []


def test_importing_the_package_changes_nothing_and_does_not_import_paddle(tmp_path):
    code = ("import json, os, sys; before = dict(os.environ); import paddle_unimo, paddle_unimo.fileio; "
            "print(json.dumps({'same': dict(os.environ) == before, 'paddle': 'paddle' in sys.modules}))")
    out = python(["-c", code], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"same": True, "paddle": False}


def test_every_tool_has_a_console_script_and_a_pasteable_docstring():
    scripts = PYPROJECT["project"]["scripts"]
    assert {target for target in scripts.values() if target.startswith("tools.")} == \
        {f"tools.{name}:main" for name in TOOLS}
    assert {scripts[k] for k in ("paddle-unimo", "paddle-unimo-pretrain", "paddle-unimo-demo")} == \
        {"tasks.run:main", "tasks.pretrain:main", "tasks.demo:main"}
    for name in TOOLS:
        doc = ast.get_docstring(ast.parse((ROOT / "tools" / f"{name}.py").read_text(encoding="utf-8")))
        command = re.search(r"^\s+(python .*)$", doc, re.M).group(1)
        assert command.startswith(f"python -m tools.{name} "), (name, command)
        assert "shared" not in doc, name


def test_help_texts_keep_their_shell_line_continuations():
    """A module docstring (argparse's description) with a command continued by a backslash is a raw string: in a
    plain one the backslash and line end vanish, and --help prints the two lines as one with a run of spaces."""
    joined = []
    for path in sorted([*(ROOT / "tasks").glob("*.py"), *(ROOT / "tools").glob("*.py")]):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source)
        if not tree.body or not isinstance(tree.body[0], ast.Expr) or not isinstance(tree.body[0].value, ast.Constant):
            continue
        if "\\\n" in ast.get_source_segment(source, tree.body[0]) and "\\\n" not in tree.body[0].value.value:
            joined.append(path.name)
    assert joined == []


@pytest.mark.parametrize("name", TOOLS)
def test_tool_runs_as_a_module_without_importing_paddle_for_help(name, tmp_path):
    """``python -m tools.<name> --help`` works from the checkout; importing the tool leaves paddle unloaded,
    so that its ``main`` can call ``cpu_defaults()`` first."""
    out = python(["-m", f"tools.{name}", "--help"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ")
    code = f"import sys, tools.{name} as t; print(callable(t.main), 'paddle' in sys.modules)"
    out = python(["-c", code], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False"]


def _throwaway_venv(tmp_path):
    """(python, site-packages) of a venv without pip that sees this interpreter's packages (pip, setuptools,
    paddle, ...) through a .pth file, so that installing into it needs no network and copies only our package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    exe = venv / "bin" / "python"
    site = python(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, exe=exe)
    site = Path(site.stdout.strip())
    (site / "_outer_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return exe, site


def _source_copy(target: Path) -> Path:
    """What a regular install builds from, copied: setuptools writes build/ and *.egg-info into the source."""
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        target.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, target / name)
    for name in ("paddle_unimo", "tasks", "tools"):
        shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _build_backend_works_offline() -> bool:
    """setuptools builds wheels by itself from 70.1; before that it needs the ``wheel`` package."""
    import setuptools
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.skipif(not _build_backend_works_offline(),
                    reason="pip install without build isolation needs setuptools>=70.1 or the wheel package")
@pytest.mark.parametrize("editable", [True, False], ids=["editable", "regular"])
def test_pip_install_gives_the_packages_anywhere(tmp_path, editable):
    exe, site = _throwaway_venv(tmp_path)
    install = ["-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet"]
    install += ["-e", str(ROOT)] if editable else [str(_source_copy(tmp_path / "source"))]
    out = python(install, cwd=tmp_path, exe=exe)
    assert out.returncode == 0, out.stdout + out.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import importlib.resources as r, paddle_unimo, tasks.run, tools.export_model; "
            "print(paddle_unimo.__file__); print(tasks.run.__file__); "
            "print(r.files('tasks').joinpath('configs', 'dureader_qg_tiny.yaml').is_file(), "
            "r.files('tasks').joinpath('demo_data', 'dureader_qg', 'train.json').is_file(), "
            "r.files('paddle_unimo').joinpath('csrc', 'cpu_kernels.cc').is_file())")
    out = python(["-c", code], cwd=elsewhere, exe=exe)
    assert out.returncode == 0, out.stderr
    package, tasks_run, data = out.stdout.splitlines()
    expected = ROOT if editable else site  # editable: this checkout; regular: a copy in the venv
    assert Path(package) == expected / "paddle_unimo" / "__init__.py"
    assert Path(tasks_run) == expected / "tasks" / "run.py"
    assert data == "True True True"  # the configs and demo data tasks/ reads, the kernels' source
    script = exe.parent / "unimo-convert-regions"
    out = subprocess.run([str(script), "--help"], cwd=elsewhere, env=clean_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("usage: "), out.stderr
    assert all((exe.parent / name).is_file() for name in PYPROJECT["project"]["scripts"])


@pytest.mark.parametrize("module", ["tasks.run", "tasks.pretrain", "tasks.demo", "tasks.demo_vl", "tasks.sweep"])
def test_task_entry_points_set_the_cpu_variables_before_paddle(module):
    """Importing an entry point sets MKL_DEBUG_CPU_TYPE / OMP_NUM_THREADS while paddle is not yet loaded
    (``cpu_defaults`` sets nothing once paddle is imported: a value here proves the order)."""
    code = (f"import os, sys, {module}; import paddle; "
            "print(os.environ.get('MKL_DEBUG_CPU_TYPE'), os.environ.get('OMP_NUM_THREADS'))")
    out = python(["-c", code], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    import paddle_unimo
    assert out.stdout.split()[-2:] == [paddle_unimo.mkl_cpu_type(paddle_unimo.cpu_flags()),
                                       str(paddle_unimo.cpu_count())]


AVX2 = "fpu sse sse2 avx avx2 fma"
AVX512 = AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16"


@pytest.mark.parametrize("flags, expected", [
    (AVX512, "7"), (AVX2, "5"), (AVX512.replace(" avx512vl", ""), "5"), (None, "5")])
def test_mkl_cpu_type_follows_the_cpu_flags(tmp_path, flags, expected):
    """MKL's AVX-512 kernels (7) only where the CPU has every AVX-512 subset they use, read from the first
    processor's flags line; AVX2 (5) otherwise and where there is no cpuinfo file."""
    import paddle_unimo
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        block = f"processor\t: {{}}\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n\n"
        cpuinfo.write_text(block.format(0) + block.format(1).replace(" avx512", " x"), encoding="utf-8")
    found = paddle_unimo.cpu_flags(str(cpuinfo))
    assert found == (frozenset(flags.split()) if flags else frozenset())
    assert paddle_unimo.mkl_cpu_type(found) == expected


FRESH_BLOCK_FAULTS = """
import ctypes, json, resource, sys
import paddle_unimo
kept = paddle_unimo.keep_freed_memory() if sys.argv[1] == "call" else None
paddle_unimo.cpu_defaults()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def block():  # a 64 MiB block, written and freed, as a large tensor is
    p = libc.malloc(64 << 20)
    ctypes.memset(p, 1, 64 << 20)
    libc.free(p)
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_cpu_defaults_keep_freed_memory_unless_the_user_tuned_malloc(tmp_path):
    """After ``cpu_defaults`` a freed 64 MiB block is reused without page faults; with one of glibc's own
    ``MALLOC_*_`` variables set, ``keep_freed_memory`` leaves malloc alone (and glibc maps such a block afresh,
    16384 faults of 4 KiB, where transparent huge pages do not serve it)."""
    out = python(["-c", FRESH_BLOCK_FAULTS, "defaults"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    ours = json.loads(out.stdout.splitlines()[-1])["faults"]
    env = {**clean_env(), "MALLOC_TOP_PAD_": "131072"}  # glibc's default value, set by the user
    out = subprocess.run([sys.executable, "-c", FRESH_BLOCK_FAULTS, "call"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    glibc = json.loads(out.stdout.splitlines()[-1])
    assert glibc["kept"] is False
    assert ours < 100 and ours * 10 < max(glibc["faults"], 1000), (ours, glibc)


def test_the_benchmark_refuses_sizes_it_cannot_run(capsys):
    from tools import benchmark_cpu
    assert benchmark_cpu.parse_args(["--layers", "2", "--beams", "2"]).layers == 2
    for argv, message in [(["--layers", "0"], "--layers: '0' is not an integer >= 1"),
                          (["--beams", "1"], "--beams: '1' is not an integer >= 2"),
                          (["--repeats", "-1"], "--repeats: '-1' is not an integer >= 1")]:
        with pytest.raises(SystemExit):
            benchmark_cpu.parse_args(argv)
        assert message in capsys.readouterr().err

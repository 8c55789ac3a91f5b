"""The compiled core's C files checked from C (tests/c/check_core.c), with setup.py's flags:
built natively and run here, and cross-built for aarch64 (aarch64-linux-gnu-gcc) and run
under qemu-user, where both tools are installed (.ci/run installs them). No Python is
needed on the target, so the builds for ARM machines are checked on any x86-64 one."""

import ast
import concurrent.futures
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "src" / "core"
SOURCES = [CORE / "kernels.c", CORE / "smallgemm.c", CORE / "smallstep.c",
           ROOT / "tests" / "c" / "check_core.c"]
CROSS = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")   # Debian's aarch64 libc and libgomp for qemu


def setup_flags():
    """setup.py's `compile_args` (the flags every build of the core gets), read from it."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "compile_args"):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py: no top-level compile_args list")


def native_compiler():
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


# (name, target, OpenMP, extra flags).  PT_NO_CLONES is the baseline-only build (GCC on
# x86-64 otherwise compiles AVX-512, AVX2 and baseline clones); aarch64 has no clones.
BUILDS = [
    ("native", "native", True, []),
    ("native-no-clones-no-openmp", "native", False, ["-DPT_NO_CLONES"]),
    ("aarch64", "aarch64", True, []),
    ("aarch64-no-openmp", "aarch64", False, []),
]


def missing_tools(target):
    """Why a target's build cannot run here, or None."""
    if target == "native":
        return None if shutil.which(native_compiler()[0]) else "no C compiler"
    for tool in (CROSS, QEMU):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian: gcc-aarch64-linux-gnu, qemu-user)"
    if not (SYSROOT / "lib").is_dir():
        return f"no aarch64 libraries in {SYSROOT}"
    return None


def compile_and_link(directory, target, openmp, extra):
    """The check program of one build: its path, or an AssertionError with the compiler's
    words.  The four files compile at once, one process each."""
    cc = native_compiler() if target == "native" else [CROSS]
    flags = setup_flags() + (["-fopenmp"] if openmp else []) + extra + [f"-I{CORE}"]
    directory.mkdir()

    def build(source):
        obj = directory / (source.stem + ".o")
        run = subprocess.run(cc + flags + ["-c", str(source), "-o", str(obj)],
                             capture_output=True, text=True)
        if run.returncode:
            raise AssertionError(f"{source.name} did not compile:\n{run.stderr[-3000:]}")
        return obj

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(SOURCES)) as pool:
        objects = list(pool.map(build, SOURCES))
    exe = directory / "check_core"
    run = subprocess.run(cc + flags + [str(o) for o in objects] + ["-lm", "-o", str(exe)],
                         capture_output=True, text=True)
    if run.returncode:
        raise AssertionError(f"check_core did not link:\n{run.stderr[-3000:]}")
    return exe


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """Every build whose tools are here, compiled side by side: name -> Future(path)."""
    root = tmp_path_factory.mktemp("check_core")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(BUILDS))
    futures = {name: pool.submit(compile_and_link, root / name, target, openmp, extra)
               for name, target, openmp, extra in BUILDS if not missing_tools(target)}
    yield futures
    pool.shutdown(wait=True)


@pytest.mark.parametrize("name,target,openmp,extra", BUILDS, ids=[b[0] for b in BUILDS])
def test_the_core_computes_like_its_references(programs, name, target, openmp, extra):
    """Small-batch products (float32, int8) and network steps against their references,
    sequences against steps, gradients against finite differences (check_core.c)."""
    reason = missing_tools(target)
    if reason:
        pytest.skip(reason)
    exe = programs[name].result()
    command = [str(exe)] if target == "native" else [QEMU, "-L", str(SYSROOT), str(exe)]
    # Two emulated threads that spin at a barrier take the host's cores from each other.
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    summary = run.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert run.returncode == 0, f"{name}:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
    assert summary[0].endswith(f"0 failed (OpenMP {'on' if openmp else 'off'})"), summary


def disassembly(obj):
    """Each function's instructions in an aarch64 object file: name -> text."""
    objdump = shutil.which(CROSS.replace("gcc", "objdump"))
    if not objdump:
        pytest.skip("no aarch64 objdump beside the cross compiler")
    text = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(obj)], capture_output=True,
                          text=True, check=True).stdout
    functions, name = {}, None
    for line in text.splitlines():
        label = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if label:
            name = label.group(1)
            functions[name] = []
        elif name:
            functions[name].append(line)
    return {k: "\n".join(v) for k, v in functions.items()}


def test_the_aarch64_hot_loops_are_neon_code(programs):
    """The products multiply-add four floats at a time (fmla v.4s), and every cell's float32
    gate loop runs on vectors (a loop GCC leaves scalar has only s-register arithmetic)."""
    reason = missing_tools("aarch64")
    if reason:
        pytest.skip(reason)
    directory = programs["aarch64"].result().parent
    found = {**disassembly(directory / "smallgemm.o"), **disassembly(directory / "kernels.o")}

    def body(prefix):
        names = [k for k in found if k == prefix or k.startswith(prefix + ".")]
        assert names, f"{prefix}: not in the objects"
        return "\n".join(found[k] for k in names)

    for function in ("pt_small_gemm_f32", "pt_small_gemm_i8", "packed_product_f"):
        assert re.search(r"\bfmla\s+v\d+\.4s", body(function)), function
    for function in ("rnn_tanh_fwd_row_f", "rnn_relu_fwd_row_f", "lstm_fwd_row_f",
                     "gru_fwd_row_f", "rnn_tanh_bwd_row_f", "lstm_bwd_row_f", "gru_bwd_row_f"):
        assert re.search(r"\bf(mul|add|max|cmgt|cmlt)\s+v\d+\.4s", body(function)), function

"""Build of the compiled core predtext._core (C kernels + Cython shims).

OpenMP is used when the compiler accepts -fopenmp; without it the core still builds and
runs single-threaded.  Environment variables choose other builds (see README, "The
compiled core"):

* PREDTEXT_NO_OPENMP=1: no OpenMP even where the compiler has it (the single-threaded
  build a compiler without OpenMP gives, to test that path);
* PREDTEXT_NO_CLONES=1: the gate loops and the small-batch products compiled once, for
  the baseline of the target (x86-64: SSE2), instead of AVX-512, AVX2 and baseline clones
  chosen at load time;
* PREDTEXT_SANITIZE=1: AddressSanitizer and UBSan (see README, "Sanitizer run").
"""

import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def compiler_accepts(flag):
    """True when the C compiler builds and links a small OpenMP program with `flag`."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    source = "#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        cmd = cc.split() + [flag, path, "-o", os.path.join(tmp, "probe")]
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


# No FP-exception or errno semantics are used; without them GCC cannot vectorise floor
# (in the float exp) or inline the math.  -std=c11 (ISO C) also stops GCC fusing a
# multiply and an add into one FMA where the target has it; the gate math's polynomials
# are chains of those (a fused loop of an LSTM forward ran 1.1-1.2x faster with them).
compile_args = ["-O3", "-std=c11", "-ffp-contract=fast", "-fno-math-errno",
                "-fno-trapping-math"]
link_args = []
define_macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

if os.environ.get("PREDTEXT_NO_OPENMP"):
    print("predtext: PREDTEXT_NO_OPENMP set; building the core single-threaded")
elif sys.platform != "win32" and compiler_accepts("-fopenmp"):
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")
else:
    print("predtext: compiler has no OpenMP; building the core single-threaded")

no_clones = bool(os.environ.get("PREDTEXT_NO_CLONES"))

if os.environ.get("PREDTEXT_SANITIZE"):
    # -fno-wrapv: CPython's flags define signed overflow, which hides it from UBSan.
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-wrapv", "-g",
             "-O1"]
    compile_args = [a for a in compile_args if a != "-O3"] + flags
    link_args += ["-fsanitize=address,undefined"]
    no_clones = True

if no_clones:
    define_macros.append(("PT_NO_CLONES", "1"))

core = Extension(
    "predtext._core",
    sources=["src/core/_core.pyx", "src/core/kernels.c", "src/core/smallgemm.c",
             "src/core/smallstep.c"],
    include_dirs=["src/core", numpy.get_include()],
    depends=["src/core/kernels.h", "src/core/kernels_impl.h", "src/core/cells.h",
             "src/core/fastmath.h", "src/core/parallel.h", "src/core/smallgemm.h"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=define_macros,
)

setup(ext_modules=cythonize([core], language_level=3, include_path=["src/core"]))

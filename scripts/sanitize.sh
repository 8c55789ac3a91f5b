#!/usr/bin/env bash
# Run the compiled-core tests against a build with AddressSanitizer and UBSan.
#
#   scripts/sanitize.sh [extra pytest args]
#
# The core is rebuilt with PREDTEXT_SANITIZE=1 in a throwaway copy of the tree, so the
# normal (editable) build in src/predtext is left alone.  Exits non-zero on a test failure
# or on any sanitizer report, including one from a subprocess a test starts.
#
# PREDTEXT_SANITIZE_KEEP=1 keeps the temporary build directory (its path is printed).
# Takes 1.5 to 2.5 minutes on 2 cores, about half of it the build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python}"
work="$(mktemp -d "${TMPDIR:-/tmp}/predtext-sanitize.XXXXXX")"
if [[ -z "${PREDTEXT_SANITIZE_KEEP:-}" ]]; then
    trap 'rm -rf "$work"' EXIT
else
    echo "sanitize: keeping $work"
fi

# Copy only what the build and the core tests need; no build outputs, so nothing stale
# (an unsanitized .so or generated C) can be picked up.
cd "$root"
mkdir -p "$work/src" "$work/tests"
cp setup.py pyproject.toml "$work/"
cp -r src/predtext "$work/src/"
mkdir -p "$work/src/core"
cp src/core/*.pyx src/core/*.h src/core/kernels.c src/core/smallgemm.c src/core/smallstep.c \
    "$work/src/core/"
# The core tests and the helper modules they import (every tests/*.py that is not a test).
cp tests/test_core*.py $(ls tests/*.py | grep -v "/test_") "$work/tests/"
find "$work/src" \( -name '*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +

echo "sanitize: building the core with ASan + UBSan in $work"
start=$(date +%s)
# CPython's CFLAGS carry -fwrapv, which defines signed overflow and so turns UBSan's check
# for it off; -fno-wrapv (after them on the command line) turns it back on.
(cd "$work" && PREDTEXT_SANITIZE=1 CFLAGS="${CFLAGS:-} -fno-wrapv" \
    "$python" setup.py -q build_ext --inplace --force > build.log 2>&1) \
    || { cat "$work/build.log"; exit 1; }
echo "sanitize: build took $(($(date +%s) - start)) s"

# CPython is not built with ASan, so the runtime has to be loaded before anything else.
libasan="$(gcc -print-file-name=libasan.so)"
if [[ ! -e "$libasan" ]]; then
    echo "sanitize: libasan.so not found (gcc -print-file-name gave '$libasan')" >&2
    exit 1
fi

# Reports go to files as well as aborting the process: a report in a subprocess that a
# test tolerates (or an error that does not halt) still fails the run below.
logs="$work/sanitizer-logs"
mkdir -p "$logs"
export LD_PRELOAD="$libasan"
# detect_leaks=0: CPython keeps its interned objects and arenas until exit, which LSan
# reports as leaks.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
# Route Python's own allocations through malloc so ASan sees them too (pymalloc would
# hide overruns into neighbouring objects).
export PYTHONMALLOC=malloc
export PYTHONPATH="$work/src"
export PYTHONDONTWRITEBYTECODE=1

module="$(cd "$work" && "$python" -c 'import predtext._core as c; print(c.__file__)')"
echo "sanitize: predtext._core is $module"
if [[ "$module" != "$work/"* ]]; then
    echo "sanitize: the sanitized build is not the module imported" >&2
    exit 1
fi

status=0
start=$(date +%s)
(cd "$work" && "$python" -m pytest -q -p no:cacheprovider tests "$@") \
    || status=$?
echo "sanitize: tests took $(($(date +%s) - start)) s"

if compgen -G "$logs/*" > /dev/null; then
    echo "sanitize: sanitizer reports:" >&2
    cat "$logs"/* >&2
    status=1
fi
if [[ $status -ne 0 ]]; then
    echo "sanitize: FAILED" >&2
else
    echo "sanitize: clean"
fi
exit $status

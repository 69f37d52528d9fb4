#!/bin/sh
# `make asan`: builds the chunk engine with AddressSanitizer and UBSan in a temporary copy of the
# backup package and runs the engine tests against that build; any sanitizer report fails the run.
set -eu
engine=$(cd "$(dirname "$0")" && pwd)
backup=$(cd "$engine/../.." && pwd)
root=$(cd "$backup/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir "$work/backup"
cp -R "$backup/setup.py" "$backup/cbr_backup" "$work/backup/"
find "$work/backup" \( -name '*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
(cd "$work/backup" && CFLAGS="$sanitize" LDFLAGS="$sanitize" "$python" setup.py -q build_ext --inplace)

# The interpreter is not instrumented, so the runtime must be loaded first; CPython keeps some
# allocations until exit by design, hence no leak check. PYTHONMALLOC=malloc gives every Python
# buffer its own malloc block with red zones, so an over-read past a buffer's end is reported.
libasan=$(${CC:-gcc} -print-file-name=libasan.so)
export LD_PRELOAD="$libasan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export PYTHONMALLOC=malloc
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$work/backup${PYTHONPATH:+:$PYTHONPATH}"  # ahead of the in-place build on the .pth path
cd "$root"
"$python" -c "import sys, cbr_backup.engine._chunker as m, cbr_backup.engine._codec as c
sys.exit(not (m.__file__.startswith('$work') and c.__file__.startswith('$work')))" \
    || { echo "asan: the sanitized build is not the one imported" >&2; exit 1; }
# --capture=sys: a sanitizer writes its report to file descriptor 2, which must not be captured.
"$python" -m pytest -q -p no:cacheprovider --capture=sys tests/unit/backup/engine "$@"

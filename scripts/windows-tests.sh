#!/usr/bin/env bash
# Builds the test suite for Windows (x86_64-pc-windows-gnu, with mingw-w64) and runs it
# under Wine on Linux, one test per process, each with a time limit, so that one test
# that hangs under Wine neither stops the run nor hides the others. Prints one line per
# test that did not pass (the ignored ones too, which are not failures) and a summary;
# exits with 1 if any test failed or timed out.
#
#   scripts/windows-tests.sh              # everything
#   scripts/windows-tests.sh hostile      # only the test files (or `lib`) named
#
# Needs: rustup, and the Debian packages mingw-w64, wine and jq (as root: `apt-get
# install mingw-w64 wine jq`; about 350 MB to download, 1.9 GB installed). Environment:
# SERPY_WINE_LIMIT seconds per test (default 120), SERPY_WINE_JOBS tests at a time
# (default 2). Wine's files live in target/windows-tests/, which this script creates.
# Doctests are not run (they are the same code on every platform).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-gnu
LIMIT=${SERPY_WINE_LIMIT:-120}
JOBS=${SERPY_WINE_JOBS:-2}
WORK=$PWD/target/windows-tests

# Debian's `wine` wrapper looks for the 32-bit Wine first; the tests are 64-bit.
WINE=$(command -v wine64 || true)
if [ -z "$WINE" ] && [ -x /usr/lib/wine/wine64 ]; then WINE=/usr/lib/wine/wine64; fi
for tool in x86_64-w64-mingw32-gcc "$WINE" jq; do
    if [ -z "$tool" ] || ! command -v "$tool" >/dev/null; then
        echo "windows-tests: mingw-w64, wine and jq are needed: apt-get install mingw-w64 wine jq" >&2
        exit 2
    fi
done
rustup target add "$TARGET" >/dev/null 2>&1 || true # a later build says what is missing

mkdir -p "$WORK"
export WINEPREFIX=$WORK/wineprefix WINEDEBUG=-all
# Rust's standard library on Windows takes its random numbers (the HashMap seeds) from
# ProcessPrng in bcryptprimitives.dll, which Windows 10 has and Wine 8 lacks: give Wine a
# stand-in that takes them from RtlGenRandom.
DLL=$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll
if [ ! -f "$DLL" ]; then
    echo "windows-tests: creating the Wine prefix in $WINEPREFIX"
    "$WINE" wineboot --init >/dev/null 2>&1 || true
    cat >"$WORK/bcryptprimitives.c" <<'EOF'
#include <windows.h>
#include <ntsecapi.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!RtlGenRandom(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
EOF
    printf 'LIBRARY bcryptprimitives.dll\nEXPORTS\nProcessPrng\n' >"$WORK/bcryptprimitives.def"
    x86_64-w64-mingw32-gcc -O2 -shared -o "$DLL" \
        "$WORK/bcryptprimitives.c" "$WORK/bcryptprimitives.def" -ladvapi32
fi

# What to build: the unit tests (`lib`) and every file in tests/, or those named.
if [ $# -gt 0 ]; then selected=("$@"); else
    selected=(lib)
    for f in tests/*.rs; do selected+=("$(basename "$f" .rs)"); done
fi
# tests/examples.rs runs the example programs: build them first.
cargo build --quiet --target "$TARGET" --examples
: >"$WORK/executables"
build_failed=()
for name in "${selected[@]}"; do
    if [ "$name" = lib ]; then what=(--lib); else what=(--test "$name"); fi
    if ! cargo test --quiet --no-run --target "$TARGET" "${what[@]}" --message-format=json \
        | jq -r 'select(.reason == "compiler-artifact" and .executable != null and .profile.test) | .executable' \
            >>"$WORK/executables"; then
        build_failed+=("$name")
    fi
done

# One line per test: "EXE NAME".
: >"$WORK/tests"
while read -r exe; do
    "$WINE" "$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p' |
        while read -r t; do echo "$exe $t"; done >>"$WORK/tests"
done <"$WORK/executables"

run_one() { # EXE NAME: prints "ok", "ignored", "FAILED" or "TIMEOUT" and the name; keeps the output
    local exe=$1 name=$2 log status
    log=$WORK/logs/$(basename "$exe" .exe)--${name//::/-}.log
    if timeout -k 5 "$LIMIT" "$WINE" "$exe" --exact "$name" --test-threads 1 >"$log" 2>&1; then
        # A test marked #[ignore] (Linux-only ones, with their reason) is not run.
        if grep -q '^test result: ok. 0 passed; 0 failed; 1 ignored' "$log"; then
            status=ignored
        else status=ok; fi
    elif [ $? -eq 124 ]; then status=TIMEOUT; else status=FAILED; fi
    echo "$status $(basename "$exe" .exe | sed 's/-[0-9a-f]*$//')::$name $log"
}
export -f run_one
# tests/examples.rs builds the examples with cargo, which a Windows test binary under
# Wine cannot start: they were built above, and this tells it to run them as they are.
export SERPY_EXAMPLES_BUILT=1
export WORK LIMIT WINE
rm -rf "$WORK/logs" && mkdir -p "$WORK/logs"
start=$(date +%s)
xargs -P "$JOBS" -L 1 bash -c 'run_one "$0" "$1"' <"$WORK/tests" >"$WORK/results"

passed=$(grep -c '^ok ' "$WORK/results" || true)
ignored=$(grep -c '^ignored ' "$WORK/results" || true)
grep -v '^ok ' "$WORK/results" | sort || true
for name in "${build_failed[@]}"; do echo "BUILD FAILED $name"; done
echo "windows-tests: $passed of $(wc -l <"$WORK/tests") tests passed, $ignored ignored," \
    "under $("$WINE" --version) in $(($(date +%s) - start)) s;" \
    "builds failed: ${#build_failed[@]}; logs in $WORK/logs"
[ $((passed + ignored)) -eq "$(wc -l <"$WORK/tests")" ] && [ ${#build_failed[@]} -eq 0 ]

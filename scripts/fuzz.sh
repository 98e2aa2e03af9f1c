#!/usr/bin/env bash
# Builds the libFuzzer harnesses (the `sanitize` preset: clang, ASan + UBSan) and runs each of them for
# a bounded time on a scratch copy of its committed seed corpus (tests/fuzz/corpus/<name>, never
# written to). Exits non-zero when any fuzzer finds a crash, a sanitizer report, a timeout, an
# out-of-memory or a broken invariant; the reproducers are left in build/sanitize/artifacts.
#   scripts/fuzz.sh                          # every fuzzer, 60 s each
#   QCS_FUZZ_SECONDS=20 scripts/fuzz.sh      # shorter
#   scripts/fuzz.sh config sigv4             # only these fuzzers
# Replay one reproducer: build/sanitize/tests/fuzz/<name>_fuzzer build/sanitize/artifacts/<name>-crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${QCS_FUZZ_SECONDS:-60}
build=build/sanitize
artifacts=$build/artifacts
scratch=$build/corpus-run
logs=$build/logs

if [[ $# -gt 0 ]]; then
  names=("$@")
else
  names=()
  for dir in tests/fuzz/corpus/*/; do names+=("$(basename "$dir")"); done
fi

cmake --preset sanitize >/dev/null
targets=()
for name in "${names[@]}"; do
  [[ -d tests/fuzz/corpus/$name ]] || { echo "fuzz.sh: no fuzzer named '$name' (see tests/fuzz/corpus/)" >&2; exit 2; }
  targets+=("${name}_fuzzer")
done
cmake --build "$build" --target "${targets[@]}"

mkdir -p "$artifacts" "$logs"
rm -rf "$scratch"
failed=()
summary=()
for name in "${names[@]}"; do
  binary=$build/tests/fuzz/${name}_fuzzer
  mkdir -p "$scratch/$name"
  cp -r "tests/fuzz/corpus/$name/." "$scratch/$name/"
  log=$logs/$name.log
  echo "=== $name: ${seconds}s on a copy of tests/fuzz/corpus/$name"
  status=0
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$name-" "$scratch/$name" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  coverage=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1 || true)
  corpus=$(find "$scratch/$name" -type f | wc -l)
  if [[ $status -ne 0 ]]; then
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n1)
    failed+=("$name")
    summary+=("$name: FAILED (exit $status) ${input:+reproducer $input}")
    echo "--- $name FAILED (exit $status); the end of $log:" >&2
    grep -E 'ERROR: |fuzz invariant failed|runtime error|SUMMARY|Test unit written' "$log" | head -n 20 >&2 || true
    if [[ -n $input ]]; then
      echo "--- failing input: $input (replay: $binary $input)" >&2
    fi
  else
    summary+=("$name: ok, ${execs:-?} execs, ${rate:-?} execs/s, ${coverage:-cov ?}, corpus $corpus inputs")
  fi
done

echo
echo "=== fuzz summary (${seconds}s each; logs in $logs, artifacts in $artifacts)"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: ${#failed[@]} fuzzer(s) failed: ${failed[*]}" >&2
  exit 1
fi

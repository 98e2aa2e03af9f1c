#!/usr/bin/env bash
# CI's sanitizer and fuzz jobs (issue 7), after scripts/test.sh:
#  1. the `sanitize` build (clang, ASan + UBSan with no recovery, libFuzzer instrumentation): every
#     unit and integration test, so the agent binary the integration tests start runs sanitized too;
#     any report aborts the process and fails its test;
#  2. every libFuzzer harness for QCS_FUZZ_SECONDS (default 45) on its seed corpus, same build;
#  3. the `tsan` build (gcc, ThreadSanitizer): the unit tests of the supervisor, the HTTP server,
#     metrics, the instance lock, the Docker client (its event-stream thread), journald and check.
#     Not the containerd client's: Debian's gRPC and Abseil are not built with TSan, and their
#     lock-free internals read as races.
# Needs root (the integration tests start their own dockerd, containerd and registry).
#   scripts/sanitize.sh                # all three
#   scripts/sanitize.sh asan|fuzz|tsan # one of them
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=${1:-all}
scripts/setup.sh

# halt_on_error: the first report ends the process with a non-zero status, so the test fails.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

if [[ $jobs == all || $jobs == asan || $jobs == fuzz ]]; then
  cmake --preset sanitize >/dev/null
  cmake --build --preset sanitize
fi
if [[ $jobs == all || $jobs == asan ]]; then
  echo "=== ASan + UBSan: unit and integration tests"
  ctest --preset sanitize -L 'unit|integration' -j "${QCS_TEST_JOBS:-2}"
fi
if [[ $jobs == all || $jobs == fuzz ]]; then
  echo "=== libFuzzer: ${QCS_FUZZ_SECONDS:-45}s per harness"
  QCS_FUZZ_SECONDS=${QCS_FUZZ_SECONDS:-45} scripts/fuzz.sh
fi
if [[ $jobs == all || $jobs == tsan ]]; then
  echo "=== ThreadSanitizer: supervisor, HTTP server, metrics, instance lock, Docker client, journald, check"
  cmake --preset tsan >/dev/null
  cmake --build --preset tsan --target qcs_unit_tests
  ctest --preset tsan -j "${QCS_TEST_JOBS:-2}" \
    -R '^(Supervisor[A-Za-z]*|HealthProbeTest|RestartBackoffTest|StatsSamplingTest|HttpServerTest|MetricsTest|InstanceLock[A-Za-z]*|Docker[A-Za-z]*|Journal[A-Za-z]*|Notifier|Check[A-Za-z]*)\.'
fi

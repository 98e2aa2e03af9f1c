#!/usr/bin/env bash
# Builds qcs-agent and runs every test: unit tests and the integration tests against a real
# dockerd and a real registry that the tests start themselves. Needs root.
#   scripts/test.sh            # all tests
#   scripts/test.sh -L unit    # extra arguments go to ctest
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
preset=${QCS_PRESET:-dev}
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset"
ctest --preset "$preset" --output-on-failure -j "${QCS_TEST_JOBS:-2}" "$@"

#!/usr/bin/env bash
# Runs the fault-injection suite (tests/faults, issue 7) on Docker and containerd and keeps its
# report as tests/faults/results/<UTC date>.md, which it also prints. Needs root; about 2 minutes
# per iteration on a 2-core machine (20 iterations: 35-40 minutes). Exits with the suite's code: 0
# only when every injected fault recovered with no duplicate sensor, leak or secret seen outside
# the sensor.
#   scripts/faults.sh                              # 20 iterations of every fault
#   QCS_FAULT_ITERATIONS=5 scripts/faults.sh       # fewer
#   QCS_FAULT_SEED=42 scripts/faults.sh            # the same random agent-kill points again
#   scripts/faults.sh --faults oom,two-agents      # extra arguments go to qcs_fault_suite
#   QCS_BUILD_DIR=build/mine scripts/faults.sh     # the dev preset built somewhere else
set -euo pipefail
cd "$(dirname "$0")/.."

iterations=${QCS_FAULT_ITERATIONS:-20}
build=${QCS_BUILD_DIR:-build/dev}
if [[ $(id -u) -ne 0 ]]; then
  echo "faults.sh: the suite starts daemons and mounts filesystems: run it as root" >&2
  exit 2
fi

cmake --preset dev -B "$build" >/dev/null
cmake --build "$build" --target qcs_fault_suite qcs-agent

mkdir -p tests/faults/results
report=tests/faults/results/$(date -u +%Y-%m-%d).md
seed=()
[[ -n ${QCS_FAULT_SEED:-} ]] && seed=(--seed "$QCS_FAULT_SEED")
set +e
"$build/tests/faults/qcs_fault_suite" --runtime both --iterations "$iterations" --report "$report" "${seed[@]}" "$@"
code=$?
set -e
if [[ -f $report ]]; then
  echo
  cat "$report"
fi
exit "$code"

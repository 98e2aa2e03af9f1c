// FaultSuite: issue 7's fault-injection run. It starts a registry (htpasswd), a Secrets Manager
// emulator (the sensor IDs' source), a gate in front of each (to take them down and back at the same
// address), then per runtime a private daemon, and drives the real qcs-agent binary through every
// fault N times: inject, wait until the sensor runs again (a new start the runtime reports and the
// agent confirms), record the time to recovery, then check for duplicate sensors, leaks and secrets
// seen outside the sensor. The report goes to SuiteOptions::reportPath (fault_report.h).
//
// Contract:
// - run() returns the process exit code: 0 when every injected fault recovered with no duplicate,
//   leak or leaked secret; 1 when some did not; 2 when the suite could not set itself up (the report
//   is still written, saying why).
// - Nothing outside 127.0.0.0/8 is contacted; only containers, images and daemons the suite created
//   are touched. Needs root (mounts, daemons).
// - Waits are event-driven (the runtimes' event streams) or polls with a deadline; the only fixed
//   delays are the fault schedule itself (the seeded random point at which an agent is killed).
#pragma once

#include <memory>

#include "faults/suite_options.h"

namespace qcs::faults {

int runFaultSuite(const SuiteOptions& options);

}  // namespace qcs::faults

// Running the real qcs-agent binary in a test and reading what it says: its JSON log messages and
// its /status. Shared by the end-to-end tests on Docker and on containerd.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "harness/harness.h"

namespace qcs::testing {

// The sensor IDs the e2e configs hand to the agent (UUIDs, as the agent insists).
inline constexpr const char* kE2eActivationId = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
inline constexpr const char* kE2eCustomerId = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

// The agent configuration the e2e tests run with: the stand-in sensor with fast backoff (300ms, x2,
// max 3s, no jitter), a 5s reconcile, JSON logs at debug and the HTTP endpoints on port 0.
struct E2eConfig {
  std::string runtime;  // the whole `runtime:` section, e.g. "runtime:\n  kind: docker\n  endpoint: /x.sock\n"
  std::string image = "qcs-standin:test";
  std::string pullPolicy = "never";
  std::string sensorName;
  std::string controlDir;        // mounted read-only at /standin (the stand-in's control file)
  std::string customerIdFile;    // secrets.customer_id; activation_id comes from QCS_E2E_ACTIVATION_ID
  std::string extraSensor;       // more lines of the sensor section
  std::string extraSupervision;  // more lines of the supervision section
  std::string extraTop;          // more top-level sections
  // The whole `platform:` section. Detection is off by default: on a cloud VM it would contact the
  // real metadata service, and tests send nothing outside 127.0.0.0/8.
  std::string platform = "platform: {detect: none}\n";
};
std::string e2eConfigYaml(const E2eConfig& config);

// Starts `qcs-agent run --config <dir>/<name>.yaml` (yaml written there, mode 0600) with env added
// to its environment and its output in <dir>/<name>-<n>.log; nullptr (and a test failure) if not.
std::unique_ptr<Process> startAgentProcess(const TempDir& dir, const std::string& yaml, const std::string& name,
                                           const std::map<std::string, std::string>& env, int& counter);

// The "msg" of every JSON log line the agent printed so far (logging.format: json).
std::vector<std::string> agentMessages(Process& agent);
// Whether some message contains needle.
bool agentLogged(Process& agent, const std::string& needle);
// The agent's /status, from the address it logged when its listener was bound (the e2e configs
// listen on port 0); null until it answers.
nlohmann::json agentStatus(Process& agent);

// Views of /status["sensor"] (zero, empty or nullopt while the agent does not answer).
struct SensorView {
  explicit SensorView(Process& agent);
  nlohmann::json sensor;
  uint64_t restarts(const std::string& reason) const;
  std::string state() const;
  std::optional<int> lastExitCode() const;
  // A string field of the sensor's status ("" when absent or null).
  std::string text(const std::string& key) const;
};

}  // namespace qcs::testing

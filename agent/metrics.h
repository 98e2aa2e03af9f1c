// Metrics: the agent's Prometheus registry (prometheus-cpp) and its text rendering.
//
// Contract:
// - render() brings every metric up to date from a SupervisorStatus snapshot and /proc/self, then
//   serializes the registry in text format 0.0.4 with serializeTextFormat(). It is cheap (no
//   runtime call) and thread-safe, so the HTTP thread calls it on every scrape.
// - Counters only ever go up: they follow the supervisor's own monotonic counts, and the sensor's
//   CPU time carries over when a new container starts from zero.
// - Labels hold only fixed names (states, reasons, ops, runtime kind, version, the node's platform:
//   cloud, orchestrator, region, zone, ECS cluster): never a secret, an image reference or an
//   error message.
// - Runtime call durations and errors arrive through RuntimeObserver (see InstrumentedRuntime).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "agent/instrumented_runtime.h"
#include "agent/supervisor.h"
#include "common/result.h"
#include "platform/platform_detect.h"

namespace prometheus {
class Registry;
template <typename T>
class Family;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace qcs::agent {

// The agent's own resource usage, from /proc/self (the Prometheus client conventions' process_*).
struct ProcessStats {
  double cpuSeconds = 0;
  int64_t residentBytes = 0;
  int64_t virtualBytes = 0;
  int64_t openFds = 0;
  int64_t maxFds = 0;
  double startTimeSeconds = 0;  // since the Unix epoch
};
Result<ProcessStats> readProcessStats();

class Metrics final : public RuntimeObserver {
 public:
  Metrics(const std::string& version, const std::string& revision);
  ~Metrics() override;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  void runtimeCall(const std::string& runtime, const char* op, double seconds, bool failed) override;

  // qcs_agent_info{cloud,orchestrator,region,zone,cluster} 1: where the node runs (detected once).
  void setPlatform(const platform::PlatformInfo& platform);

  // Updates every metric from the snapshot and returns the text exposition.
  std::string render(const SupervisorStatus& status);

 private:
  void update(const SupervisorStatus& status);

  std::mutex mu_;
  std::shared_ptr<prometheus::Registry> registry_;

  prometheus::Family<prometheus::Gauge>* agentInfo_;
  std::vector<prometheus::Gauge*> agentInfoSeries_;
  prometheus::Family<prometheus::Gauge>* runtimeUp_;
  prometheus::Family<prometheus::Gauge>* eventStreamUp_;
  prometheus::Counter* eventStreamLosses_;
  prometheus::Family<prometheus::Histogram>* runtimeDuration_;
  prometheus::Family<prometheus::Counter>* runtimeErrors_;
  prometheus::Gauge* sensorUp_;
  std::map<SensorState, prometheus::Gauge*> sensorState_;
  std::map<RestartReason, prometheus::Counter*> restarts_;
  prometheus::Gauge* lastExitCode_;
  prometheus::Gauge* startTime_;
  prometheus::Counter* oomKills_;
  prometheus::Gauge* backoff_;
  prometheus::Counter* sensorCpu_;
  prometheus::Gauge* sensorMemory_;
  prometheus::Histogram* pullDuration_;
  prometheus::Counter* pullsSucceeded_;
  prometheus::Counter* pullsFailed_;
  prometheus::Counter* processCpu_;
  prometheus::Gauge* processResident_;
  prometheus::Gauge* processVirtual_;
  prometheus::Gauge* processOpenFds_;
  prometheus::Gauge* processMaxFds_;
  prometheus::Gauge* processStart_;

  std::string lastRuntimeKind_;
  uint64_t pullsSeen_ = 0;
  // Sensor CPU time across containers: what finished containers used, plus the current one's.
  std::string cpuContainerId_;
  double cpuCarried_ = 0;
  double cpuCurrent_ = 0;
};

}  // namespace qcs::agent

// Microbenchmarks of the work the agent does on every reconcile, event and scrape: building the
// sensor spec with its hash, parsing the configuration at start-up, parsing one Docker /events
// line, and rendering /metrics. bench/run.sh runs them with --benchmark_format=json and quotes
// the real time per iteration in its results table.
#include <benchmark/benchmark.h>

#include <chrono>
#include <string>

#include "agent/config.h"
#include "agent/metrics.h"
#include "agent/sensor_spec.h"
#include "agent/supervisor.h"
#include "runtime/docker/docker_runtime.h"

namespace {

using namespace qcs::agent;

void BM_BuildSpecAndHash(benchmark::State& state) {
  Config config;
  SensorSecrets secrets{"11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"};
  SpecContext ctx;
  ctx.runtimeKind = "docker";
  ctx.runtimeSocketHost = "/var/run/docker.sock";
  ctx.agentVersion = "bench";
  ctx.hostPathExists = [](const std::string&) { return true; };
  for (auto _ : state) {
    auto spec = buildSensorSpec(config, secrets, ctx);
    benchmark::DoNotOptimize(spec);
  }
}
BENCHMARK(BM_BuildSpecAndHash);

void BM_ParseConfig(benchmark::State& state) {
  const std::string yaml = R"(runtime: {kind: docker}
sensor:
  image: registry.example.com/qualys/qcs-sensor:1.2.3
  pull_policy: always
  resources: {cpu_request: 250m, cpu_limit: 500m, memory_request: 512Mi, memory_limit: 1Gi}
secrets:
  activation_id: {source: env, name: QUALYS_ACTIVATION_ID}
  customer_id: {source: file, path: /etc/qcs-agent/secrets/customer-id}
supervision:
  backoff: {initial: 1s, max: 5m, multiplier: 2, jitter: 0.1, reset_after: 10m}
)";
  for (auto _ : state) {
    auto config = parseConfig(yaml);
    benchmark::DoNotOptimize(config);
  }
}
BENCHMARK(BM_ParseConfig);

// A "die" event as dockerd 20.10+ sends it: the whole Actor with the container's labels, which is
// what makes the line long (the sensor carries the agent's three labels and the image's).
void BM_ParseDockerEvent(benchmark::State& state) {
  const std::string line =
      R"({"status":"die","id":"4f1c3b2a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b",)"
      R"("from":"qualys/qcs-sensor:latest","Type":"container","Action":"die","Actor":{"ID":)"
      R"("4f1c3b2a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b","Attributes":{)"
      R"("exitCode":"137","image":"qualys/qcs-sensor:latest","io.qcs-agent.managed":"true",)"
      R"("io.qcs-agent.spec-hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",)"
      R"("io.qcs-agent.version":"0.1.0","name":"qualys-container-sensor"}},"scope":"local",)"
      R"("time":1700000000,"timeNano":1700000000123456789})";
  for (auto _ : state) {
    auto event = qcs::runtime::docker::parseDockerEvent(line);
    benchmark::DoNotOptimize(event);
  }
}
BENCHMARK(BM_ParseDockerEvent);

// One scrape's work: the registry brought up to date from a supervisor snapshot and /proc/self,
// then serialized. Runtime histograms are filled first so the output has the size of a real one.
void BM_RenderMetrics(benchmark::State& state) {
  Metrics metrics("bench", "0000000");
  for (const char* op : {"inspect", "create", "start", "remove", "stats", "events"}) {
    for (int i = 0; i < 10; ++i) metrics.runtimeCall("docker", op, 0.001 * (i + 1), i == 9);
  }
  SupervisorStatus status;
  status.runtimeKind = "docker";
  status.runtimeUp = true;
  status.state = SensorState::kRunning;
  status.containerId = "4f1c3b2a9e8d";
  status.restarts[RestartReason::kExit] = 3;
  status.lastExitCode = 137;
  status.sensorStartedAt = std::chrono::system_clock::now();
  status.pullsSucceeded = 1;
  status.lastPullSeconds = 2.5;
  status.statsContainerId = status.containerId;
  status.sensorCpuSeconds = 12.5;
  status.sensorMemoryBytes = 200 << 20;
  size_t bytes = 0;
  for (auto _ : state) {
    std::string text = metrics.render(status);
    bytes = text.size();
    benchmark::DoNotOptimize(text);
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_RenderMetrics);

}  // namespace

BENCHMARK_MAIN();

// Microbenchmarks of the work the agent does on every reconcile: building the sensor spec with
// its hash, and parsing the configuration at start-up.
#include <benchmark/benchmark.h>

#include "agent/config.h"
#include "agent/sensor_spec.h"

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

}  // namespace

BENCHMARK_MAIN();

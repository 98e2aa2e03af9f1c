// Metrics: every SPEC metric rendered with its type, counters monotonic, no secrets; the
// instrumenting runtime decorator; and the supervisor's periodic sensor resource sampling.
#include "agent/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <sstream>

#include "agent/instrumented_runtime.h"
#include "agent/sensor_spec.h"
#include "agent/supervisor.h"
#include "fake_runtime.h"
#include "platform/registry_auth.h"
#include "runtime/docker/docker_runtime.h"

namespace qcs::agent {
namespace {

using namespace std::chrono_literals;
using testing::FakeRuntime;
using testing::ForwardingRuntime;

class FixedRandom final : public Random {
 public:
  double uniform() override { return 0.5; }  // no jitter
};

// The value of the sample whose name-and-labels part is exactly `series`; nullopt when absent.
std::optional<double> sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

bool hasType(const std::string& text, const std::string& name, const std::string& type) {
  return text.find("# TYPE " + name + " " + type + "\n") != std::string::npos;
}

SupervisorStatus runningStatus() {
  SupervisorStatus s;
  s.runtimeKind = "docker";
  s.runtimeEndpoint = "/var/run/docker.sock";
  s.runtimeUp = true;
  s.state = SensorState::kRunning;
  s.containerId = "c1";
  s.sensorStartedAt = WallTime(std::chrono::seconds(1'800'000'000));
  s.statsContainerId = "c1";
  s.sensorCpuSeconds = 2.5;
  s.sensorMemoryBytes = 64 << 20;
  return s;
}

class MetricsTest : public ::testing::Test {
 protected:
  MetricsTest() : fake(clock) {
    // One call through the decorator so the per-op families have a series.
    InstrumentedRuntime runtime(std::make_unique<ForwardingRuntime>(fake), metrics, clock);
    (void)runtime.ping();
  }
  FakeClock clock;
  FakeRuntime fake;
  Metrics metrics{"1.2.3", "abcdef"};
};

TEST_F(MetricsTest, RendersEverySpecMetricWithItsType) {
  const std::string text = metrics.render(runningStatus());
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"qcs_agent_build_info", "gauge"},
      {"qcs_runtime_up", "gauge"},
      {"qcs_runtime_request_duration_seconds", "histogram"},
      {"qcs_runtime_errors_total", "counter"},
      {"qcs_sensor_up", "gauge"},
      {"qcs_sensor_state", "gauge"},
      {"qcs_sensor_restarts_total", "counter"},
      {"qcs_sensor_last_exit_code", "gauge"},
      {"qcs_sensor_start_time_seconds", "gauge"},
      {"qcs_sensor_oom_kills_total", "counter"},
      {"qcs_sensor_backoff_seconds", "gauge"},
      {"qcs_sensor_cpu_seconds_total", "counter"},
      {"qcs_sensor_memory_bytes", "gauge"},
      {"qcs_image_pull_duration_seconds", "histogram"},
      {"qcs_image_pulls_total", "counter"},
      {"process_cpu_seconds_total", "counter"},
      {"process_resident_memory_bytes", "gauge"},
      {"process_virtual_memory_bytes", "gauge"},
      {"process_open_fds", "gauge"},
      {"process_max_fds", "gauge"},
      {"process_start_time_seconds", "gauge"},
  };
  for (const auto& [name, type] : expected) EXPECT_TRUE(hasType(text, name, type)) << name << " " << type;

  EXPECT_EQ(sample(text, "qcs_agent_build_info{revision=\"abcdef\",version=\"1.2.3\"}"), 1);
  EXPECT_EQ(sample(text, "qcs_runtime_up{runtime=\"docker\"}"), 1);
  EXPECT_EQ(sample(text, "qcs_sensor_up"), 1);
  EXPECT_EQ(sample(text, "qcs_sensor_start_time_seconds"), 1'800'000'000);
  EXPECT_EQ(sample(text, "qcs_sensor_cpu_seconds_total"), 2.5);
  EXPECT_EQ(sample(text, "qcs_sensor_memory_bytes"), 64 << 20);
  EXPECT_EQ(sample(text, "qcs_sensor_last_exit_code"), -1) << "no exit seen yet";
  EXPECT_EQ(sample(text, "qcs_runtime_request_duration_seconds_count{op=\"ping\",runtime=\"docker\"}"), 1);
  EXPECT_EQ(sample(text, "qcs_runtime_errors_total{op=\"ping\",runtime=\"docker\"}"), 0);
}

TEST_F(MetricsTest, AgentInfoCarriesThePlatformAndIsReplacedNotDuplicated) {
  platform::PlatformInfo node;
  node.cloud = "gcp";
  node.orchestrator = "gke";
  node.region = "us-central1";
  node.zone = "us-central1-a";
  metrics.setPlatform(node);
  std::string text = metrics.render(runningStatus());
  EXPECT_TRUE(hasType(text, "qcs_agent_info", "gauge"));
  EXPECT_EQ(
      sample(text,
             R"(qcs_agent_info{cloud="gcp",cluster="",orchestrator="gke",region="us-central1",zone="us-central1-a"})"),
      1.0)
      << text;
  node.cloud = "none";
  node.orchestrator = "none";
  node.region = node.zone = "";
  metrics.setPlatform(node);
  text = metrics.render(runningStatus());
  EXPECT_EQ(sample(text, R"(qcs_agent_info{cloud="none",cluster="",orchestrator="none",region="",zone=""})"), 1.0);
  EXPECT_EQ(text.find("gke"), std::string::npos) << "one series at a time";
}

TEST_F(MetricsTest, SensorStateIsOneHot) {
  auto s = runningStatus();
  s.state = SensorState::kBackoff;
  const std::string text = metrics.render(s);
  double sum = 0;
  for (SensorState state : kAllSensorStates) {
    auto value = sample(text, std::string("qcs_sensor_state{state=\"") + sensorStateName(state) + "\"}");
    ASSERT_TRUE(value) << sensorStateName(state);
    sum += *value;
    EXPECT_EQ(*value, state == SensorState::kBackoff ? 1 : 0) << sensorStateName(state);
  }
  EXPECT_EQ(sum, 1);
  EXPECT_EQ(sample(text, "qcs_sensor_up"), 0);
  EXPECT_EQ(sample(text, "qcs_sensor_memory_bytes"), 0) << "nothing runs, nothing used";
}

TEST_F(MetricsTest, AllSixRestartReasonsArePresentAtZero) {
  const std::string text = metrics.render(SupervisorStatus{});
  for (const char* reason : {"exit", "oom", "missing", "drift", "unhealthy", "runtime"}) {
    EXPECT_EQ(sample(text, std::string("qcs_sensor_restarts_total{reason=\"") + reason + "\"}"), 0) << reason;
  }
  EXPECT_EQ(sample(text, "qcs_image_pulls_total{result=\"success\"}"), 0);
  EXPECT_EQ(sample(text, "qcs_image_pulls_total{result=\"failure\"}"), 0);
}

TEST_F(MetricsTest, CountersFollowTheSupervisorAndNeverGoDown) {
  auto s = runningStatus();
  s.restarts[RestartReason::kExit] = 3;
  s.oomKills = 1;
  s.lastExitCode = 137;
  s.pullsSucceeded = 1;
  s.lastPullSeconds = 4;
  std::string text = metrics.render(s);
  EXPECT_EQ(sample(text, "qcs_sensor_restarts_total{reason=\"exit\"}"), 3);
  EXPECT_EQ(sample(text, "qcs_sensor_oom_kills_total"), 1);
  EXPECT_EQ(sample(text, "qcs_sensor_last_exit_code"), 137);
  EXPECT_EQ(sample(text, "qcs_image_pull_duration_seconds_count"), 1);
  EXPECT_EQ(sample(text, "qcs_image_pull_duration_seconds_sum"), 4);
  EXPECT_EQ(sample(text, "qcs_image_pulls_total{result=\"success\"}"), 1);

  // A new container starts its CPU time from zero: the counter keeps what the old one used.
  s.containerId = s.statsContainerId = "c2";
  s.sensorCpuSeconds = 0.5;
  text = metrics.render(s);
  EXPECT_EQ(sample(text, "qcs_sensor_cpu_seconds_total"), 3.0);
  s.sensorCpuSeconds = 1.0;
  EXPECT_EQ(sample(metrics.render(s), "qcs_sensor_cpu_seconds_total"), 3.5);
  // Rendering the same snapshot again observes no new pull.
  EXPECT_EQ(sample(metrics.render(s), "qcs_image_pull_duration_seconds_count"), 1);
}

TEST_F(MetricsTest, TheEventStreamIsShownAndItsLossesCounted) {
  auto s = runningStatus();
  std::string text = metrics.render(s);
  EXPECT_TRUE(hasType(text, "qcs_runtime_event_stream_up", "gauge"));
  EXPECT_TRUE(hasType(text, "qcs_runtime_event_stream_losses_total", "counter"));
  EXPECT_EQ(sample(text, "qcs_runtime_event_stream_up{runtime=\"docker\"}"), 0) << "not said to be connected yet";
  EXPECT_EQ(sample(text, "qcs_runtime_event_stream_losses_total"), 0);
  s.eventStreamConnected = true;
  EXPECT_EQ(sample(metrics.render(s), "qcs_runtime_event_stream_up{runtime=\"docker\"}"), 1);
  s.eventStreamConnected = false;
  s.eventStreamLosses = 2;
  text = metrics.render(s);
  EXPECT_EQ(sample(text, "qcs_runtime_event_stream_up{runtime=\"docker\"}"), 0);
  EXPECT_EQ(sample(text, "qcs_runtime_event_stream_losses_total"), 2);
}

TEST_F(MetricsTest, ProcessMetricsArePlausible) {
  const std::string text = metrics.render(SupervisorStatus{});
  auto resident = sample(text, "process_resident_memory_bytes");
  auto virtualBytes = sample(text, "process_virtual_memory_bytes");
  auto openFds = sample(text, "process_open_fds");
  auto maxFds = sample(text, "process_max_fds");
  auto start = sample(text, "process_start_time_seconds");
  auto cpu = sample(text, "process_cpu_seconds_total");
  ASSERT_TRUE(resident && virtualBytes && openFds && maxFds && start && cpu);
  EXPECT_GT(*resident, 1 << 20);
  EXPECT_GE(*virtualBytes, *resident);
  EXPECT_GE(*openFds, 3);
  EXPECT_GE(*maxFds, *openFds);
  const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(*start, now + 1);
  EXPECT_GT(*start, now - 24 * 3600) << "a test process started today";
  EXPECT_GE(*cpu, 0);
}

TEST_F(MetricsTest, NoSecretValueIsRendered) {
  const std::string secret = "7a9c4f0e-1b2d-4e3f-8a5b-6c7d8e9f0a1b";
  auto s = runningStatus();
  s.lastError = "registry said: token " + secret + " rejected";
  s.specHash = secret;
  s.image = "registry.example/" + secret;
  s.imageId = secret;
  const std::string text = metrics.render(s);
  EXPECT_EQ(text.find(secret), std::string::npos);
  EXPECT_EQ(text.find("7a9c4f0e"), std::string::npos);
}

TEST_F(MetricsTest, RuntimeErrorsCountFailuresButNotNotFound) {
  InstrumentedRuntime runtime(std::make_unique<ForwardingRuntime>(fake), metrics, clock);
  EXPECT_FALSE(runtime.inspectContainer("nope").ok());  // kNotFound: an answer
  fake.down = true;
  EXPECT_FALSE(runtime.inspectContainer("nope").ok());  // kUnavailable: a failure
  EXPECT_FALSE(runtime.containerStats("x").ok());
  const std::string text = metrics.render(SupervisorStatus{});
  EXPECT_EQ(sample(text, "qcs_runtime_errors_total{op=\"inspect_container\",runtime=\"docker\"}"), 1);
  EXPECT_EQ(sample(text, "qcs_runtime_request_duration_seconds_count{op=\"inspect_container\",runtime=\"docker\"}"), 2);
  EXPECT_EQ(sample(text, "qcs_runtime_errors_total{op=\"container_stats\",runtime=\"docker\"}"), 1);
}

TEST(ParseContainerStats, MemoryIsUsageMinusPageCacheAsDockerStatsShows) {
  // cgroup v2: inactive_file
  auto v2 = runtime::docker::parseContainerStats(
      R"({"cpu_stats":{"cpu_usage":{"total_usage":2500000000}},"memory_stats":{"usage":10485760,)"
      R"("stats":{"inactive_file":2097152,"anon":8000000}}})");
  ASSERT_TRUE(v2.ok()) << v2.message();
  EXPECT_DOUBLE_EQ(v2->cpuSeconds, 2.5);
  EXPECT_EQ(v2->memoryBytes, 10485760 - 2097152);
  // cgroup v1: total_inactive_file wins over cache
  auto v1 = runtime::docker::parseContainerStats(
      R"({"cpu_stats":{"cpu_usage":{"total_usage":1000000000}},"memory_stats":{"usage":5000,)"
      R"("stats":{"cache":3000,"total_inactive_file":1000}}})");
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->memoryBytes, 4000);
  // A stopped container reports empty sections.
  auto empty = runtime::docker::parseContainerStats(R"({"cpu_stats":{},"memory_stats":{}})");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->memoryBytes, 0);
  EXPECT_FALSE(runtime::docker::parseContainerStats("not json").ok());
}

// The supervisor samples the running sensor's usage on its own timer, not per scrape.
class StatsSamplingTest : public ::testing::Test {
 protected:
  class Connector final : public RuntimeConnector {
   public:
    explicit Connector(FakeRuntime& runtime) : runtime_(runtime) {}
    Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
      return std::unique_ptr<runtime::ContainerRuntime>(std::make_unique<ForwardingRuntime>(runtime_));
    }

   private:
    FakeRuntime& runtime_;
  };
  class SpecSource final : public DesiredSpecSource {
   public:
    Result<runtime::ContainerSpec> desiredSpec(const runtime::RuntimeInfo&) override {
      runtime::ContainerSpec spec;
      spec.name = "qualys-container-sensor";
      spec.image = "qualys/sensor:1";
      spec.labels = {{kLabelManaged, "true"}, {kLabelSpecHash, "h1"}};
      return spec;
    }
  };

  StatsSamplingTest() : fake(clock), connector(fake) {
    fake.images.insert("qualys/sensor:1");
    options.reconcileInterval = 30s;
    options.statsInterval = 15s;
  }
  void settle() {
    for (int i = 0; i < 10; ++i) {
      if (supervisor->step() > clock.now()) break;
    }
  }

  FakeClock clock;
  FakeRuntime fake;
  Connector connector;
  SpecSource specSource;
  FixedRandom random;
  std::unique_ptr<platform::RegistryAuthProvider> auth = platform::makeNoAuth();
  SupervisorOptions options;
  std::unique_ptr<Supervisor> supervisor;
};

TEST_F(StatsSamplingTest, SamplesTheRunningSensorEveryInterval) {
  supervisor = std::make_unique<Supervisor>(connector, specSource, *auth, clock, random, options);
  settle();
  auto s = supervisor->status();
  ASSERT_EQ(s.state, SensorState::kRunning);
  EXPECT_EQ(fake.statsCalls, 1);
  EXPECT_EQ(s.statsContainerId, s.containerId);
  EXPECT_EQ(s.sensorCpuSeconds, 1.5);
  EXPECT_EQ(s.sensorMemoryBytes, 4 * 1024 * 1024);
  EXPECT_EQ(supervisor->step(), clock.now() + 15s) << "the next sample is the next deadline";

  fake.stats = {2.0, 8 * 1024 * 1024};
  clock.advance(15s);
  settle();
  EXPECT_EQ(fake.statsCalls, 2);
  EXPECT_EQ(supervisor->status().sensorCpuSeconds, 2.0);
  EXPECT_TRUE(supervisor->status().lastHeartbeat.has_value());
  EXPECT_EQ(*supervisor->status().lastHeartbeat, clock.now());
}

TEST_F(StatsSamplingTest, AFailedSampleChangesNothingElse) {
  supervisor = std::make_unique<Supervisor>(connector, specSource, *auth, clock, random, options);
  settle();
  const auto creates = fake.creates;
  fake.down = true;
  clock.advance(15s);
  supervisor->step();
  fake.down = false;
  settle();
  EXPECT_EQ(fake.creates, creates);
  EXPECT_EQ(supervisor->status().state, SensorState::kRunning);
}

}  // namespace
}  // namespace qcs::agent

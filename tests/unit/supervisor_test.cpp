// The supervisor's decisions, driven through a fake runtime and simulated time.
#include "agent/supervisor.h"

#include <gtest/gtest.h>

#include "agent/config.h"
#include "agent/sensor_spec.h"
#include "fake_runtime.h"

namespace qcs::agent {
namespace {

using namespace std::chrono_literals;
using runtime::ContainerState;
using testing::FakeRuntime;

class FixedRandom final : public Random {
 public:
  double value = 0.5;  // 0.5 = no jitter
  double uniform() override { return value; }
};

class FakeConnector final : public RuntimeConnector {
 public:
  explicit FakeConnector(Clock& clock) : runtime(clock) {}
  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    ++connects;
    if (fail) return makeError(ErrorCode::kUnavailable, "nothing answers");
    return std::unique_ptr<runtime::ContainerRuntime>(std::make_unique<testing::ForwardingRuntime>(runtime));
  }
  FakeRuntime runtime;
  bool fail = false;
  int connects = 0;
};

class FakeSpecSource final : public DesiredSpecSource {
 public:
  Config config;
  SensorSecrets secrets{"11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"};
  std::string error;
  Result<runtime::ContainerSpec> desiredSpec(const runtime::RuntimeInfo& info) override {
    if (!error.empty()) return makeError(ErrorCode::kNotFound, error);
    SpecContext ctx;
    ctx.runtimeKind = info.kind;
    ctx.runtimeSocketHost = info.endpoint;
    ctx.agentVersion = "test";
    ctx.hostPathExists = [](const std::string&) { return false; };
    return buildSensorSpec(config, secrets, ctx);
  }
  std::string hash(const runtime::RuntimeInfo& info) { return desiredSpec(info)->labels.at(kLabelSpecHash); }
};

class SupervisorTest : public ::testing::Test {
 protected:
  SupervisorTest() : connector(clock) {
    fake().images.insert(specSource.config.sensor.image);
    options.backoff = BackoffPolicy{1000ms, 300000ms, 2.0, 0.1, 600000ms};
    options.reconcileInterval = 30s;
  }

  FakeRuntime& fake() { return connector.runtime; }
  Supervisor& supervisor() {
    if (!supervisor_) {
      supervisor_ = std::make_unique<Supervisor>(connector, specSource, *auth, clock, random, options);
    }
    return *supervisor_;
  }
  // Runs every step that is due now (events posted by the fake are processed too).
  void settle() {
    for (int i = 0; i < 10; ++i) {
      auto next = supervisor().step();
      if (next > clock.now()) break;
    }
  }
  void advance(std::chrono::milliseconds d) {
    clock.advance(d);
    settle();
  }
  std::string sensorId() {
    for (const auto& c : fake().all()) {
      if (c.name == specSource.config.sensor.name) return c.id;
    }
    return "";
  }
  SupervisorStatus status() { return supervisor().status(); }
  uint64_t restarts(RestartReason r) {
    auto s = status();
    return s.restarts.count(r) ? s.restarts.at(r) : 0;
  }

  FakeClock clock;
  FixedRandom random;
  FakeConnector connector;
  FakeSpecSource specSource;
  std::unique_ptr<platform::RegistryAuthProvider> auth = platform::makeNoAuth();
  SupervisorOptions options;
  std::unique_ptr<Supervisor> supervisor_;
};

TEST_F(SupervisorTest, FirstStartCreatesAndStartsTheSensor) {
  fake().images.clear();
  settle();
  EXPECT_EQ(fake().pulls, 1);
  EXPECT_EQ(fake().creates, 1);
  EXPECT_EQ(fake().starts, 1);
  auto s = status();
  EXPECT_EQ(s.state, SensorState::kRunning);
  EXPECT_EQ(s.containerId, sensorId());
  EXPECT_TRUE(s.runtimeUp);
  EXPECT_TRUE(s.firstReconcileDone);
  EXPECT_EQ(s.pullsSucceeded, 1u);
  EXPECT_TRUE(s.restarts.empty()) << "the first start is not a restart";
}

TEST_F(SupervisorTest, NextDeadlineIsTheReconcileIntervalWhenAllIsWell) {
  settle();
  auto next = supervisor().step();
  EXPECT_EQ(next, clock.now() + 30s);
}

TEST_F(SupervisorTest, AdoptsARunningSensorWithTheSameSpecHash) {
  std::string id = fake().addContainer(
      specSource.config.sensor.name, {{kLabelManaged, "true"}, {kLabelSpecHash, specSource.hash(fake().info())}}, true);
  settle();
  EXPECT_EQ(fake().creates, 0);
  EXPECT_EQ(fake().starts, 0);
  EXPECT_EQ(fake().removes, 0);
  EXPECT_EQ(status().containerId, id);
  EXPECT_EQ(status().state, SensorState::kRunning);
}

TEST_F(SupervisorTest, ReplacesASensorWhoseSpecDrifted) {
  std::string old =
      fake().addContainer(specSource.config.sensor.name, {{kLabelManaged, "true"}, {kLabelSpecHash, "stale"}}, true);
  settle();
  EXPECT_EQ(fake().removes, 1);
  EXPECT_EQ(fake().creates, 1);
  EXPECT_NE(sensorId(), old);
  EXPECT_EQ(restarts(RestartReason::kDrift), 1u);
  EXPECT_EQ(status().state, SensorState::kRunning);
}

TEST_F(SupervisorTest, AChangedSecretReplacesTheSensor) {
  settle();
  std::string first = sensorId();
  specSource.secrets.customerId = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
  advance(30s);
  EXPECT_NE(sensorId(), first);
  EXPECT_EQ(restarts(RestartReason::kDrift), 1u);
}

TEST_F(SupervisorTest, RemovesAStraySecondCopy) {
  std::string hash = specSource.hash(fake().info());
  std::string keep =
      fake().addContainer(specSource.config.sensor.name, {{kLabelManaged, "true"}, {kLabelSpecHash, hash}}, true);
  std::string stray =
      fake().addContainer("qualys-container-sensor-old", {{kLabelManaged, "true"}, {kLabelSpecHash, hash}}, true);
  settle();
  EXPECT_EQ(fake().all().size(), 1u);
  EXPECT_EQ(sensorId(), keep);
  EXPECT_EQ(status().strayRemoved, 1u);
}

TEST_F(SupervisorTest, NeverTouchesAForeignContainerWithTheSensorsName) {
  std::string foreign = fake().addContainer(specSource.config.sensor.name, {}, true);
  std::string scanner = fake().addContainer("QCS-Image-Scanning-abc123", {}, true);
  settle();
  EXPECT_EQ(fake().removes, 0);
  EXPECT_EQ(fake().creates, 0);
  EXPECT_EQ(status().state, SensorState::kBlocked);
  EXPECT_NE(status().lastError.find("did not create"), std::string::npos);
}

TEST_F(SupervisorTest, RestartsACrashedSensorInPlaceWithExponentialBackoff) {
  settle();
  std::string id = sensorId();
  std::chrono::milliseconds expected[] = {1000ms, 2000ms, 4000ms, 8000ms};
  int starts = fake().starts;
  for (auto delay : expected) {
    fake().exitContainer(id, 137);
    settle();
    EXPECT_EQ(status().state, SensorState::kBackoff);
    EXPECT_DOUBLE_EQ(status().backoffSeconds, delay.count() / 1000.0);
    advance(delay - 1ms);
    EXPECT_EQ(fake().starts, starts) << "started before the backoff delay of " << delay.count() << "ms";
    advance(1ms);
    EXPECT_EQ(fake().starts, ++starts);
    EXPECT_EQ(sensorId(), id) << "an unchanged spec restarts in place";
    EXPECT_EQ(status().state, SensorState::kRunning);
  }
  EXPECT_EQ(restarts(RestartReason::kExit), 4u);
  EXPECT_EQ(status().lastExitCode, 137);
}

TEST_F(SupervisorTest, BackoffIsCappedAtTheMaximum) {
  options.backoff.max = 5000ms;
  settle();
  std::string id = sensorId();
  for (int i = 0; i < 6; ++i) {
    fake().exitContainer(id, 24);
    settle();
    EXPECT_LE(status().backoffSeconds, 5.0);
    advance(5000ms);
  }
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 0.0);
  fake().exitContainer(id, 24);
  settle();
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 5.0);
}

TEST_F(SupervisorTest, Exit24IsRecoverableAndExit1IsIrrecoverable) {
  settle();
  std::string id = sensorId();
  fake().exitContainer(id, 24);
  settle();
  EXPECT_EQ(status().state, SensorState::kBackoff);
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 1.0);
  advance(1000ms);
  ASSERT_EQ(status().state, SensorState::kRunning);

  fake().exitContainer(id, 1);
  settle();
  EXPECT_EQ(status().state, SensorState::kFailed);
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 300.0) << "irrecoverable exits wait the maximum";
  EXPECT_EQ(status().lastExitCode, 1);
  int starts = fake().starts;
  advance(299s);
  EXPECT_EQ(fake().starts, starts);
  advance(1s);
  EXPECT_EQ(fake().starts, starts + 1);
}

TEST_F(SupervisorTest, AnOomKillIsCountedAsOom) {
  settle();
  fake().exitContainer(sensorId(), 137, /*oom=*/true);
  settle();
  EXPECT_EQ(status().oomKills, 1u);
  EXPECT_TRUE(status().lastExitOom);
  advance(1000ms);
  EXPECT_EQ(restarts(RestartReason::kOom), 1u);
  EXPECT_EQ(restarts(RestartReason::kExit), 0u);
}

TEST_F(SupervisorTest, AnOomEventWithoutTheInspectFlagStillCountsAsOom) {
  settle();
  std::string id = sensorId();
  supervisor().post({runtime::RuntimeEvent::Kind::kContainerOom, id, std::nullopt, ""});
  fake().exitContainer(id, 137, /*oom=*/false);
  settle();
  EXPECT_EQ(status().oomKills, 1u);
}

TEST_F(SupervisorTest, AnOomNoticeArrivingAfterTheExitStillCountsAsOom) {
  settle();
  std::string id = sensorId();
  fake().exitContainer(id, 137, /*oom=*/false);
  settle();
  EXPECT_EQ(status().oomKills, 0u);
  supervisor().post({runtime::RuntimeEvent::Kind::kContainerOom, id, std::nullopt, ""});
  settle();
  EXPECT_EQ(status().oomKills, 1u);
  EXPECT_TRUE(status().lastExitOom);
  advance(1000ms);
  EXPECT_EQ(restarts(RestartReason::kOom), 1u);
  EXPECT_EQ(restarts(RestartReason::kExit), 0u);
  // A second notice about the same exit is not a second kill.
  supervisor().post({runtime::RuntimeEvent::Kind::kContainerOom, id, std::nullopt, ""});
  settle();
  EXPECT_EQ(status().oomKills, 1u);
}

TEST_F(SupervisorTest, AnOldOomNoticeDoesNotMakeALaterExitAnOom) {
  settle();
  std::string id = sensorId();
  // A child process of the sensor was OOM-killed; the sensor itself went on running.
  supervisor().post({runtime::RuntimeEvent::Kind::kContainerOom, id, std::nullopt, ""});
  settle();
  advance(5min);
  fake().exitContainer(id, 137, /*oom=*/false);
  settle();
  EXPECT_EQ(status().oomKills, 0u);
  advance(1000ms);
  EXPECT_EQ(restarts(RestartReason::kExit), 1u);
}

TEST_F(SupervisorTest, BackoffResetsAfterTheSensorRanLongEnough) {
  settle();
  std::string id = sensorId();
  fake().exitContainer(id, 137);
  advance(1000ms);
  fake().exitContainer(id, 137);
  settle();
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 2.0);
  advance(2000ms);
  advance(11min);
  fake().exitContainer(id, 137);
  settle();
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 1.0);
}

TEST_F(SupervisorTest, ARemovedSensorIsCreatedAgain) {
  settle();
  std::string first = sensorId();
  fake().deleteContainer(first);
  settle();
  EXPECT_EQ(status().state, SensorState::kBackoff);
  advance(1000ms);
  EXPECT_NE(sensorId(), "");
  EXPECT_NE(sensorId(), first);
  EXPECT_EQ(restarts(RestartReason::kMissing), 1u);
}

TEST_F(SupervisorTest, SurvivesTheRuntimeGoingAwayAndAdoptsAgain) {
  settle();
  std::string id = sensorId();
  fake().down = true;
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamLost, "", std::nullopt, "EOF"});
  settle();
  EXPECT_EQ(status().state, SensorState::kRuntimeDown);
  EXPECT_FALSE(status().runtimeUp);
  // The runtime came back with the sensor still running (live-restore): adopt, no restart.
  fake().down = false;
  advance(500ms);
  EXPECT_TRUE(status().runtimeUp);
  EXPECT_EQ(status().state, SensorState::kRunning);
  EXPECT_EQ(sensorId(), id);
  EXPECT_EQ(fake().starts, 1);
}

TEST_F(SupervisorTest, TheStatusFollowsTheEventStream) {
  settle();
  EXPECT_FALSE(status().eventStreamConnected) << "nothing said the stream connected yet";
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamConnected, "", std::nullopt, ""});
  settle();
  EXPECT_TRUE(status().eventStreamConnected);
  EXPECT_EQ(status().eventStreamLosses, 0u);
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamLost, "", std::nullopt, "unexpected EOF"});
  settle();
  EXPECT_FALSE(status().eventStreamConnected);
  EXPECT_EQ(status().eventStreamLosses, 1u);
  EXPECT_EQ(status().lastEventStreamLoss, "unexpected EOF");
  EXPECT_EQ(status().state, SensorState::kRunning) << "a lost stream alone is no reason to touch the sensor";
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamConnected, "", std::nullopt, ""});
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamLost, "", std::nullopt, "reset by peer"});
  settle();
  EXPECT_FALSE(status().eventStreamConnected);
  EXPECT_EQ(status().eventStreamLosses, 2u);
  EXPECT_EQ(status().lastEventStreamLoss, "reset by peer");
  EXPECT_EQ(fake().starts, 1);
}

TEST_F(SupervisorTest, ASensorStoppedWithTheRuntimeIsStartedAtOnceWhenItReturns) {
  settle();
  std::string id = sensorId();
  fake().down = true;
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamLost, "", std::nullopt, "EOF"});
  settle();
  fake().down = false;
  fake().container(id).state = ContainerState::kExited;
  fake().container(id).exitCode = 143;
  fake().container(id).finishedAt = "later";
  supervisor().post({runtime::RuntimeEvent::Kind::kStreamConnected, "", std::nullopt, ""});
  settle();
  EXPECT_EQ(status().state, SensorState::kRunning);
  EXPECT_EQ(restarts(RestartReason::kRuntime), 1u);
}

TEST_F(SupervisorTest, ReconnectsWithBackoffWhileNoRuntimeAnswers) {
  connector.fail = true;
  settle();
  EXPECT_EQ(status().state, SensorState::kRuntimeDown);
  EXPECT_EQ(connector.connects, 1);
  advance(499ms);
  EXPECT_EQ(connector.connects, 1);
  advance(1ms);
  EXPECT_EQ(connector.connects, 2);
  advance(1000ms);
  EXPECT_EQ(connector.connects, 3);
  connector.fail = false;
  advance(2000ms);
  EXPECT_EQ(status().state, SensorState::kRunning);
}

TEST_F(SupervisorTest, PullPolicyNeverWithoutTheImageWaitsAndSaysWhy) {
  options.pullPolicy = "never";
  fake().images.clear();
  settle();
  EXPECT_EQ(fake().pulls, 0);
  EXPECT_EQ(status().state, SensorState::kBackoff);
  EXPECT_NE(status().lastError.find("pull_policy is never"), std::string::npos);
  fake().images.insert(specSource.config.sensor.image);
  advance(1000ms);
  EXPECT_EQ(status().state, SensorState::kRunning);
}

TEST_F(SupervisorTest, PullPolicyAlwaysPullsEvenWhenPresent) {
  options.pullPolicy = "always";
  settle();
  EXPECT_EQ(fake().pulls, 1);
}

TEST_F(SupervisorTest, AFailedPullIsRetriedWithBackoffAndKeepsTheRegistrysMessage) {
  fake().images.clear();
  fake().pullError = "unauthorized: authentication required";
  settle();
  EXPECT_EQ(status().state, SensorState::kBackoff);
  EXPECT_EQ(status().pullsFailed, 1u);
  EXPECT_NE(status().lastError.find("unauthorized: authentication required"), std::string::npos);
  fake().pullError.clear();
  advance(1000ms);
  EXPECT_EQ(status().state, SensorState::kRunning);
}

TEST_F(SupervisorTest, UnreadableSecretsKeepTheRunningSensor) {
  settle();
  std::string id = sensorId();
  specSource.error = "secret file /x does not exist";
  advance(30s);
  EXPECT_EQ(sensorId(), id);
  EXPECT_EQ(fake().removes, 0);
  EXPECT_NE(status().lastError.find("/x"), std::string::npos);
}

TEST_F(SupervisorTest, OnStopStopStopsTheSensorAndLeaveDoesNot) {
  settle();
  supervisor().shutdown();
  EXPECT_EQ(fake().stops, 0);
  supervisor_.reset();

  options.stopSensorOnShutdown = true;
  settle();
  supervisor().shutdown();
  EXPECT_EQ(fake().stops, 1);
  EXPECT_EQ(status().state, SensorState::kStopped);
}

TEST_F(SupervisorTest, CreatesTheSpecItWasGiven) {
  settle();
  const auto& spec = fake().lastSpec();
  EXPECT_EQ(spec.name, "qualys-container-sensor");
  EXPECT_EQ(spec.labels.at(kLabelManaged), "true");
  EXPECT_EQ(spec.labels.at(kLabelSpecHash), status().specHash);
}

// ---- Health probes ----------------------------------------------------------------------------

class HealthProbeTest : public SupervisorTest {
 protected:
  HealthProbeTest() {
    options.health.execCommand = {"/bin/sh", "-c", "check"};
    options.health.startupGrace = 10s;
    options.health.period = 5s;
    options.health.timeout = 1s;
    options.health.failureThreshold = 3;
  }
};

TEST_F(HealthProbeTest, AnExecProbeFailingThresholdTimesRestartsTheSensorAsUnhealthy) {
  settle();
  std::string id = sensorId();
  int starts = fake().starts;
  EXPECT_TRUE(status().healthProbes);
  fake().execResult = 1;
  advance(10s);
  EXPECT_EQ(fake().execCalls, 1);
  EXPECT_EQ(fake().lastExecCommand, options.health.execCommand);
  EXPECT_EQ(fake().lastExecTimeout, 1s);
  EXPECT_EQ(status().probeFailures, 1);
  EXPECT_NE(status().lastProbeResult.find("exited with code 1"), std::string::npos);
  advance(5s);
  EXPECT_EQ(status().probeFailures, 2);
  EXPECT_EQ(fake().stops, 0);
  advance(5s);
  EXPECT_EQ(fake().stops, 1) << "the third failure in a row stops the sensor";
  EXPECT_EQ(status().state, SensorState::kBackoff);
  EXPECT_DOUBLE_EQ(status().backoffSeconds, 1.0) << "an unhealthy restart waits the backoff like any other";
  EXPECT_EQ(fake().starts, starts);

  advance(1s);
  EXPECT_EQ(fake().starts, starts + 1);
  EXPECT_EQ(sensorId(), id) << "an unchanged spec restarts in place";
  EXPECT_EQ(status().state, SensorState::kRunning);
  EXPECT_EQ(restarts(RestartReason::kUnhealthy), 1u);
  EXPECT_EQ(restarts(RestartReason::kExit), 0u) << "the exit the stop caused is not an exit of the sensor";
  EXPECT_EQ(status().probeFailures, 0);

  // The new start has its own grace.
  int calls = fake().execCalls;
  advance(9s);
  EXPECT_EQ(fake().execCalls, calls);
  advance(1s);
  EXPECT_EQ(fake().execCalls, calls + 1);
}

TEST_F(HealthProbeTest, ASuccessResetsTheFailureCount) {
  settle();
  fake().execResult = 1;
  advance(10s);
  advance(5s);
  EXPECT_EQ(status().probeFailures, 2);
  fake().execResult = 0;
  advance(5s);
  EXPECT_EQ(status().probeFailures, 0);
  EXPECT_EQ(status().lastProbeResult, "ok");
  fake().execResult = 1;
  advance(5s);
  advance(5s);
  EXPECT_EQ(status().probeFailures, 2);
  EXPECT_EQ(fake().stops, 0);
  EXPECT_EQ(restarts(RestartReason::kUnhealthy), 0u);
}

TEST_F(HealthProbeTest, NoProbeRunsDuringTheStartupGrace) {
  options.health.startupGrace = 60s;
  settle();
  fake().execResult = 1;
  for (int i = 0; i < 11; ++i) advance(5s);
  EXPECT_EQ(fake().execCalls, 0);
  EXPECT_TRUE(status().lastProbeResult.empty());
  advance(5s);
  EXPECT_EQ(fake().execCalls, 1);
}

TEST_F(HealthProbeTest, AnAdoptedSensorPastItsGraceIsProbedAtOnce) {
  std::string id = fake().addContainer(
      specSource.config.sensor.name, {{kLabelManaged, "true"}, {kLabelSpecHash, specSource.hash(fake().info())}}, true);
  fake().container(id).startedAtTime = clock.wallNow() - 2min;
  settle();
  EXPECT_EQ(fake().execCalls, 1);
  EXPECT_EQ(status().lastProbeResult, "ok");
}

TEST_F(HealthProbeTest, AProbeThatTimesOutCountsAsAFailure) {
  options.health.failureThreshold = 2;
  settle();
  fake().execResult = makeError(ErrorCode::kTimeout, "did not finish");
  advance(10s);
  EXPECT_EQ(status().probeFailures, 1);
  EXPECT_NE(status().lastProbeResult.find("did not finish within 1000ms"), std::string::npos);
  EXPECT_TRUE(status().runtimeUp) << "a probe timing out is the sensor's fault, not the runtime's";
  advance(5s);
  EXPECT_EQ(fake().stops, 1);
  advance(1s);
  EXPECT_EQ(restarts(RestartReason::kUnhealthy), 1u);
  EXPECT_EQ(restarts(RestartReason::kExit), 0u);
}

TEST_F(HealthProbeTest, AQuietSensorIsRestartedAsUnhealthy) {
  options.health.execCommand.clear();
  options.health.quietAfter = 20s;
  options.health.failureThreshold = 2;
  settle();
  fake().lastOutput = clock.wallNow();
  // Output keeps coming: healthy.
  for (int i = 0; i < 4; ++i) {
    advance(5s);
    fake().lastOutput = clock.wallNow() - 1s;
  }
  EXPECT_GE(fake().lastOutputCalls, 2);
  EXPECT_EQ(fake().execCalls, 0);
  EXPECT_EQ(status().lastProbeResult, "ok");
  // Then it goes quiet: ok while the last line is at most 20s old, failing after.
  WallTime lastLine = clock.wallNow() - 1s;
  advance(5s);   // quiet for 6s
  advance(10s);  // 16s
  EXPECT_EQ(status().probeFailures, 0);
  EXPECT_EQ(fake().lastOutput, lastLine);
  advance(5s);  // 21s
  EXPECT_EQ(status().probeFailures, 1);
  EXPECT_NE(status().lastProbeResult.find("no output"), std::string::npos);
  advance(5s);
  EXPECT_EQ(fake().stops, 1);
  advance(1s);
  EXPECT_EQ(restarts(RestartReason::kUnhealthy), 1u);
  EXPECT_EQ(restarts(RestartReason::kExit), 0u);
}

TEST_F(HealthProbeTest, ASensorThatNeverWroteIsNotQuietBeforeQuietAfterHasPassed) {
  options.health.execCommand.clear();
  options.health.quietAfter = 20s;
  options.health.startupGrace = 0s;
  options.health.failureThreshold = 1;
  settle();  // first probe at once: started 0s ago, nothing written yet
  EXPECT_EQ(status().lastProbeResult, "ok");
  advance(20s);
  EXPECT_EQ(fake().stops, 0);
  advance(5s);
  EXPECT_EQ(fake().stops, 1);
}

TEST_F(HealthProbeTest, APermanentlyUnhealthySensorRestartsWithGrowingBackoff) {
  options.health.failureThreshold = 1;
  options.health.startupGrace = 2s;
  settle();
  fake().execResult = 1;
  std::chrono::milliseconds expected[] = {1000ms, 2000ms, 4000ms};
  for (auto delay : expected) {
    advance(2s);
    EXPECT_EQ(status().state, SensorState::kBackoff);
    EXPECT_DOUBLE_EQ(status().backoffSeconds, delay.count() / 1000.0);
    advance(delay);
    EXPECT_EQ(status().state, SensorState::kRunning);
  }
  EXPECT_EQ(restarts(RestartReason::kUnhealthy), 3u);
  EXPECT_EQ(restarts(RestartReason::kExit), 0u);
}

TEST_F(HealthProbeTest, ASensorThatExitsIsNotProbedAndItsExitCountsAsAnExit) {
  settle();
  advance(5s);
  fake().exitContainer(sensorId(), 137);
  settle();
  advance(5s);  // the old grace would have ended now: an exited sensor is restarted, not probed
  EXPECT_EQ(fake().execCalls, 0);
  EXPECT_EQ(restarts(RestartReason::kExit), 1u);
  EXPECT_EQ(restarts(RestartReason::kUnhealthy), 0u);
}

TEST_F(SupervisorTest, WithoutProbesConfiguredNothingIsProbed) {
  settle();
  advance(10min);
  EXPECT_EQ(fake().execCalls, 0);
  EXPECT_EQ(fake().lastOutputCalls, 0);
  EXPECT_FALSE(status().healthProbes);
  EXPECT_EQ(supervisor().step(), clock.now() + 30s);
}

}  // namespace
}  // namespace qcs::agent

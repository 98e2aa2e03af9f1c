// The qcs-agent binary supervising the stand-in sensor on a real dockerd: every fault of the
// foundation issue, observed through `docker inspect` and the agent's own exit codes and logs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness/agent_process.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kActivationId = kE2eActivationId;
constexpr const char* kCustomerId = kE2eCustomerId;
constexpr const char* kSensorName = "qcs-e2e-sensor";

class AgentE2ETest : public ::testing::Test {
 protected:
  void SetUp() override {
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << image.message();
    ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kCustomerId) + "\n", 0600));
    ::mkdir(dir_.file("control").c_str(), 0755);
    setControl("run");
  }

  void TearDown() override {
    agent_.reset();
    dockerd_.reset();
  }

  // The stand-in reads this at each start: "<mode> [code] [after]". The container runs before its
  // shell reaches the read, so once an agent runs, the file changes only after the sensor's output
  // shows that it was read: otherwise the first run may already see the new mode.
  void setControl(const std::string& line) {
    if (agent_) {
      ASSERT_TRUE(waitFor(
          [&] {
            auto out = dockerd_->cli(std::string("logs ") + kSensorName);
            return out.ok() && out->find("standin: mode:") != std::string::npos;
          },
          30s))
          << "the stand-in never read its control file\nagent:\n"
          << agent_->output();
    }
    ASSERT_TRUE(writeFile(dir_.file("control/control"), line + "\n"));
  }

  std::string config(const std::string& extraSensor = "", const std::string& extraTop = "",
                     const std::string& image = "qcs-standin:test", const std::string& pullPolicy = "never",
                     const std::string& extraSupervision = "") {
    E2eConfig c;
    c.runtime = "runtime:\n  kind: docker\n  endpoint: " + dockerd_->socketPath() + "\n";
    c.image = image;
    c.pullPolicy = pullPolicy;
    c.sensorName = kSensorName;
    c.controlDir = dir_.file("control");
    c.customerIdFile = dir_.file("customer-id");
    c.extraSensor = extraSensor;
    c.extraSupervision = extraSupervision;
    c.extraTop = extraTop;
    return e2eConfigYaml(c);
  }

  std::unique_ptr<Process> startAgent(const std::string& yaml, const std::string& name = "agent") {
    return startAgentProcess(dir_, yaml, name, {{"QCS_E2E_ACTIVATION_ID", kActivationId}, {"DOCKER_HOST", ""}},
                             agents_);
  }

  json inspect(const std::string& nameOrId) {
    auto out = dockerd_->cli("inspect " + nameOrId);
    if (!out.ok()) return json();
    auto doc = json::parse(out.value(), nullptr, false);
    return doc.is_array() && !doc.empty() ? doc[0] : json();
  }
  std::string sensorState() {
    auto c = inspect(kSensorName);
    return c.is_null() ? "" : c["State"]["Status"].get<std::string>();
  }
  std::string sensorId() {
    auto c = inspect(kSensorName);
    return c.is_null() ? "" : c["Id"].get<std::string>();
  }
  std::string sensorStartedAt() {
    auto c = inspect(kSensorName);
    return c.is_null() ? "" : c["State"]["StartedAt"].get<std::string>();
  }
  bool waitRunning(std::chrono::milliseconds deadline = 30s) {
    return waitFor([&] { return sensorState() == "running"; }, deadline);
  }
  // Waits for the sensor to run again after StartedAt `before`.
  bool waitRestarted(const std::string& before, std::chrono::milliseconds deadline = 30s) {
    return waitFor([&] { return sensorState() == "running" && sensorStartedAt() != before; }, deadline);
  }
  bool logged(Process& agent, const std::string& needle) { return agentLogged(agent, needle); }
  json sensorStatus() { return SensorView(*agent_).sensor; }
  uint64_t restarts(const std::string& reason) { return SensorView(*agent_).restarts(reason); }
  std::string agentState() { return SensorView(*agent_).state(); }
  std::optional<int> lastExitCode() { return SensorView(*agent_).lastExitCode(); }

  int managedCount() {
    auto out = dockerd_->cli("ps -aq --filter label=io.qcs-agent.managed=true");
    if (!out.ok() || out->empty()) return 0;
    return static_cast<int>(std::count(out->begin(), out->end(), '\n')) + 1;
  }

  TempDir dir_;
  std::unique_ptr<Dockerd> dockerd_;
  std::unique_ptr<Process> agent_;
  int agents_ = 0;
};

TEST_F(AgentE2ETest, CreatesTheSensorExactlyPerSpec) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  json c = inspect(kSensorName);

  std::vector<std::string> args = c["Args"];
  EXPECT_EQ(args, (std::vector<std::string>{"--registry-sensor", "--perform-sca-scan", "--optimize-image-scans",
                                            "--sensor-without-persistent-storage", "--enable-console-logs",
                                            "--storage-driver-type", "overlay2"}));
  std::set<std::string> envNames;
  for (const auto& e : c["Config"]["Env"])
    envNames.insert(e.get<std::string>().substr(0, e.get<std::string>().find('=')));
  for (const char* name : {"ACTIVATIONID", "CUSTOMERID", "POD_URL", "STANDIN_LOG_INTERVAL"}) {
    EXPECT_TRUE(envNames.count(name)) << name;
  }
  std::map<std::string, json> mounts;
  for (const auto& m : c["Mounts"]) mounts[m["Destination"]] = m;
  ASSERT_TRUE(mounts.count("/var/run/docker.sock"));
  EXPECT_EQ(mounts["/var/run/docker.sock"]["Source"], dockerd_->socketPath());
  EXPECT_EQ(mounts["/standin"]["RW"], false);
  if (access("/var/lib/docker", F_OK) == 0) {
    ASSERT_TRUE(mounts.count("/var/lib/docker"));
    EXPECT_EQ(mounts["/var/lib/docker"]["RW"], false);
  }
  const json& host = c["HostConfig"];
  std::set<std::string> caps(host["CapAdd"].begin(), host["CapAdd"].end());
  EXPECT_EQ(caps, (std::set<std::string>{"SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"}));
  EXPECT_EQ(host["Privileged"], false);
  EXPECT_EQ(host["NetworkMode"], "host");
  EXPECT_EQ(host["RestartPolicy"]["Name"], "no");
  EXPECT_EQ(host["NanoCpus"], 500000000);
  EXPECT_EQ(host["CpuShares"], 102);
  EXPECT_EQ(host["Memory"], 64 << 20);
  EXPECT_EQ(host["MemoryReservation"], 16 << 20);
  const json& labels = c["Config"]["Labels"];
  EXPECT_EQ(labels["io.qcs-agent.managed"], "true");
  EXPECT_EQ(labels["io.qcs-agent.spec-hash"].get<std::string>().size(), 64u);
  EXPECT_FALSE(labels["io.qcs-agent.version"].get<std::string>().empty());

  // The stand-in saw its arguments and the names of its environment.
  // The names line comes after the args line, once the stand-in has read its environment.
  std::string logs;
  EXPECT_TRUE(waitFor(
      [&] {
        auto out = dockerd_->cli(std::string("logs ") + kSensorName);
        logs = out.ok() ? *out : "";
        return logs.find("standin: env:") != std::string::npos;
      },
      20s));
  EXPECT_NE(logs.find("standin: args: --registry-sensor"), std::string::npos) << logs;
  EXPECT_NE(logs.find("ACTIVATIONID"), std::string::npos) << logs;
}

TEST_F(AgentE2ETest, SecretsNeverLeaveTheSensorsEnvironment) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  // Provoke a crash so the agent copies sensor output and logs restarts too.
  setControl("exit 24");
  std::string started = sensorStartedAt();
  {
    auto killed = dockerd_->killContainer(kSensorName);
    ASSERT_TRUE(killed.ok()) << killed.message();
  }
  ASSERT_TRUE(waitFor([&] { return logged(*agent_, "exited with code 24"); }, 30s)) << agent_->output();
  setControl("run");
  ASSERT_TRUE(waitRestarted(started));

  std::string agentLog = agent_->output();
  EXPECT_EQ(agentLog.find(kActivationId), std::string::npos);
  EXPECT_EQ(agentLog.find(kCustomerId), std::string::npos);
  std::string cmdline = readFile("/proc/" + std::to_string(agent_->pid()) + "/cmdline");
  EXPECT_EQ(cmdline.find(kActivationId), std::string::npos);
  json c = inspect(kSensorName);
  EXPECT_EQ(c["Config"]["Labels"].dump().find(kCustomerId), std::string::npos);
  EXPECT_EQ(c["Args"].dump().find(kCustomerId), std::string::npos);
  // ...while the sensor itself has them.
  EXPECT_NE(c["Config"]["Env"].dump().find(kActivationId), std::string::npos);

  auto render = runCommand({QCS_AGENT_BINARY, "render", "--config", dir_.file("agent.yaml")});
  ASSERT_TRUE(render.ok());
  EXPECT_EQ(render->exitCode, 0) << render->err;
  EXPECT_EQ(render->out.find(kCustomerId), std::string::npos);
  EXPECT_NE(render->out.find("<redacted>"), std::string::npos);
}

TEST_F(AgentE2ETest, AKilledSensorIsRestartedInPlaceWithGrowingBackoff) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string id = sensorId();
  std::vector<double> delays;
  for (int i = 0; i < 3; ++i) {
    std::string before = sensorStartedAt();
    auto killedAt = std::chrono::steady_clock::now();
    {
      auto killed = dockerd_->killContainer(kSensorName);
      ASSERT_TRUE(killed.ok()) << killed.message();
    }
    ASSERT_TRUE(waitRestarted(before)) << agent_->output();
    delays.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - killedAt).count());
    EXPECT_EQ(sensorId(), id) << "an unchanged spec is restarted in place";
  }
  // Backoff 300ms, 600ms, 1200ms (no jitter in this config): each restart waits at least that.
  EXPECT_GE(delays[0], 0.3);
  EXPECT_GE(delays[1], 0.6);
  EXPECT_GE(delays[2], 1.2);
  EXPECT_EQ(restarts("exit"), 3u);
  EXPECT_EQ(lastExitCode(), 137);
  EXPECT_EQ(managedCount(), 1);
}

TEST_F(AgentE2ETest, AnOomKillIsReportedAsOom) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  setControl("oom");
  {
    auto killed = dockerd_->killContainer(kSensorName);
    ASSERT_TRUE(killed.ok()) << killed.message();
  }
  ASSERT_TRUE(waitFor([&] { return sensorStatus().value("oomKills", 0) >= 1; }, 30s)) << agent_->output();
  EXPECT_TRUE(sensorStatus().value("lastExitOom", false));
  setControl("run");
  ASSERT_TRUE(waitFor([&] { return restarts("oom") >= 1 && agentState() == "running"; }, 30s)) << agent_->output();
}

TEST_F(AgentE2ETest, Exit24IsRetriedSoonAndExit1WaitsTheMaximum) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();

  setControl("exit 24");
  std::string before = sensorStartedAt();
  {
    auto killed = dockerd_->killContainer(kSensorName);
    ASSERT_TRUE(killed.ok()) << killed.message();
  }
  // The kill (137) restarts after 300ms; the stand-in then exits 24 and is retried with backoff.
  ASSERT_TRUE(waitFor([&] { return lastExitCode() == 24; }, 20s)) << agent_->output();
  EXPECT_NE(agentState(), "failed") << "exit 24 is recoverable";

  setControl("exit 1");
  ASSERT_TRUE(waitFor([&] { return lastExitCode() == 1 && agentState() == "failed"; }, 20s)) << agent_->output();
  auto failedAt = std::chrono::steady_clock::now();
  std::string exited = inspect(kSensorName)["State"]["FinishedAt"];
  setControl("run");
  // Irrecoverable: waits backoff.max (3s) before the next start.
  ASSERT_TRUE(waitFor([&] { return sensorState() == "running"; }, 20s));
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - failedAt).count();
  EXPECT_GE(waited, 2.5) << "exit 1 must wait the maximum delay";
  EXPECT_TRUE(logged(*agent_, "irrecoverable")) << "the log says why the sensor waits";
}

TEST_F(AgentE2ETest, ARestartedAgentAdoptsTheSameContainer) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string id = sensorId();
  std::string started = sensorStartedAt();
  agent_->kill(SIGKILL);
  agent_->wait(10s);

  agent_ = startAgent(config());
  ASSERT_TRUE(waitFor([&] { return agentState() == "running"; }, 30s)) << agent_->output();
  EXPECT_EQ(sensorStatus().value("containerId", ""), id);
  for (const char* reason : {"exit", "oom", "missing", "drift", "unhealthy", "runtime"}) {
    EXPECT_EQ(restarts(reason), 0u) << reason;
  }
  EXPECT_EQ(sensorId(), id);
  EXPECT_EQ(sensorStartedAt(), started) << "adoption must not restart the sensor";
  EXPECT_EQ(managedCount(), 1);
}

TEST_F(AgentE2ETest, OfTwoAgentsStartedAtOnceOneSupervisesAndTheOtherExitsClearly) {
  const std::string yaml = config();
  auto first = startAgent(yaml, "first");
  auto second = startAgent(yaml, "second");
  ASSERT_TRUE(first && second);
  std::optional<int> firstExit;
  std::optional<int> secondExit;
  ASSERT_TRUE(waitFor(
      [&] {
        if (!firstExit) firstExit = first->wait(0ms);
        if (!secondExit) secondExit = second->wait(0ms);
        return firstExit.has_value() != secondExit.has_value();
      },
      20s))
      << first->output() << second->output();
  Process& loser = firstExit ? *first : *second;
  Process& winner = firstExit ? *second : *first;
  EXPECT_EQ(firstExit ? *firstExit : *secondExit, 1);
  EXPECT_TRUE(logged(
      loser, "already supervises sensor '" + std::string(kSensorName) + "' on docker at " + dockerd_->socketPath()))
      << loser.output();
  EXPECT_TRUE(logged(loser, "(pid " + std::to_string(winner.pid()) + ")")) << loser.output();

  ASSERT_TRUE(waitRunning()) << winner.output();
  const std::string started = sensorStartedAt();
  // A third agent while the winner supervises is refused the same way and touches nothing.
  auto third = startAgent(yaml, "third");
  auto thirdExit = third->wait(20s);
  ASSERT_TRUE(thirdExit.has_value()) << third->output();
  EXPECT_EQ(*thirdExit, 1);
  EXPECT_TRUE(logged(*third, "already supervises")) << third->output();
  EXPECT_TRUE(winner.running());
  EXPECT_EQ(sensorStartedAt(), started);
  EXPECT_EQ(managedCount(), 1);
  EXPECT_EQ(SensorView(winner).restarts("exit"), 0u);
}

TEST_F(AgentE2ETest, AChangedConfigReplacesTheContainer) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string first = sensorId();
  std::string hash = inspect(kSensorName)["Config"]["Labels"]["io.qcs-agent.spec-hash"];
  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(20s), 0);
  EXPECT_EQ(sensorState(), "running") << "SIGTERM leaves the sensor running by default";

  agent_ = startAgent(config("  args: [--perform-sca-scan, --enable-console-logs]\n"));
  ASSERT_TRUE(waitFor([&] { return sensorId() != first && sensorState() == "running"; }, 30s)) << agent_->output();
  EXPECT_NE(inspect(kSensorName)["Config"]["Labels"]["io.qcs-agent.spec-hash"], hash);
  EXPECT_EQ(managedCount(), 1);
  EXPECT_TRUE(waitFor([&] { return restarts("drift") == 1; }, 10s));
}

TEST_F(AgentE2ETest, AStraySecondCopyIsRemoved) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string id = sensorId();
  ASSERT_TRUE(
      dockerd_->cli("run -d --name qcs-stray --network none --label io.qcs-agent.managed=true qcs-standin:test").ok());
  // A scanning container the sensor launched is not ours to touch.
  ASSERT_TRUE(dockerd_->cli("run -d --name QCS-Image-Scanning-0abc --network none qcs-standin:test").ok());
  ASSERT_TRUE(waitFor([&] { return inspect("qcs-stray").is_null(); }, 30s)) << agent_->output();
  EXPECT_EQ(sensorId(), id);
  EXPECT_FALSE(inspect("QCS-Image-Scanning-0abc").is_null());
  EXPECT_EQ(managedCount(), 1);
}

TEST_F(AgentE2ETest, ARemovedSensorIsCreatedAgain) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string first = sensorId();
  ASSERT_TRUE(dockerd_->cli(std::string("rm -f ") + kSensorName).ok());
  ASSERT_TRUE(waitFor([&] { return !sensorId().empty() && sensorId() != first && sensorState() == "running"; }, 30s))
      << agent_->output();
  EXPECT_TRUE(waitFor([&] { return restarts("missing") == 1; }, 10s));
}

TEST_F(AgentE2ETest, SurvivesADockerdRestart) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  auto eventStream = [&] { return agentStatus(*agent_)["runtime"]["eventStream"]; };
  ASSERT_TRUE(waitFor([&] { return eventStream().value("connected", false); }, 30s)) << eventStream().dump();
  EXPECT_EQ(eventStream().value("losses", -1), 0);
  std::string started = sensorStartedAt();
  ASSERT_TRUE(dockerd_->restart()) << dockerd_->log();
  ASSERT_TRUE(waitRestarted(started, 60s)) << agent_->output();
  EXPECT_TRUE(agent_->running());
  EXPECT_EQ(managedCount(), 1);
  ASSERT_TRUE(waitFor([&] { return agentState() == "running"; }, 30s));
  EXPECT_EQ(agentStatus(*agent_)["runtime"].value("up", false), true);
  // The stream was cut with the daemon and is back.
  EXPECT_TRUE(waitFor([&] { return eventStream().value("connected", false); }, 30s)) << eventStream().dump();
  EXPECT_GE(eventStream().value("losses", 0), 1) << eventStream().dump();
  EXPECT_EQ(restarts("runtime") + restarts("exit"), 1u) << "one restart, whichever came first: the exit or the outage";
}

TEST_F(AgentE2ETest, ABadConfigExits78AndLeavesTheRunningSensorAlone) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string id = sensorId();
  std::string started = sensorStartedAt();
  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(20s), 0);

  for (const std::string& bad :
       {config("  mode: banana\n"), config("  imagee: x\n"), config("", "platform:\n  detect: mars\n")}) {
    auto agent = startAgent(bad, "bad");
    auto code = agent->wait(20s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 78) << agent->output();
  }
  // A secret that cannot be read is a configuration error too.
  ASSERT_TRUE(writeFile(dir_.file("customer-id"), "not-a-uuid\n", 0600));
  auto agent = startAgent(config(), "badsecret");
  auto code = agent->wait(20s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 78) << agent->output();
  EXPECT_EQ(agent->output().find("not-a-uuid"), std::string::npos) << "the value is never echoed";

  EXPECT_EQ(sensorId(), id);
  EXPECT_EQ(sensorStartedAt(), started);
  EXPECT_EQ(sensorState(), "running");
}

TEST_F(AgentE2ETest, OnStopStopStopsTheSensorWithTheAgent) {
  std::string path = dir_.file("stop.yaml");
  ASSERT_TRUE(writeFile(path, config(), 0600));
  auto p = Process::spawn({QCS_AGENT_BINARY, "run", "--config", path, "--set", "supervision.on_stop=stop"},
                          {{"QCS_E2E_ACTIVATION_ID", kActivationId}}, dir_.file("stop.log"));
  ASSERT_TRUE(p.ok());
  agent_ = std::move(p.value());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(30s), 0) << agent_->output();
  EXPECT_EQ(sensorState(), "exited");
}

TEST_F(AgentE2ETest, TheCrashedSensorsLastOutputIsCopiedIntoTheAgentLog) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  setControl("exit 24");
  {
    auto killed = dockerd_->killContainer(kSensorName);
    ASSERT_TRUE(killed.ok()) << killed.message();
  }
  ASSERT_TRUE(waitFor([&] { return logged(*agent_, "sensor| standin: exiting with 24"); }, 30s)) << agent_->output();
}

// Health probes: the stand-in hangs (one line, then silence) and the output probe restarts it.
TEST_F(AgentE2ETest, AQuietSensorIsRestartedAsUnhealthy) {
  setControl("hang");
  agent_ = startAgent(config("", "", "qcs-standin:test", "never",
                             "  health: {quiet_after: 2s, startup_grace: 1s, period: 1s, timeout: 500ms, "
                             "failure_threshold: 2}\n"));
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string started = sensorStartedAt();
  ASSERT_TRUE(waitRestarted(started, 30s)) << agent_->output();
  ASSERT_TRUE(waitFor([&] { return restarts("unhealthy") >= 1; }, 30s)) << agent_->output();
  EXPECT_TRUE(logged(*agent_, "no output for longer than 2000ms"));
  EXPECT_EQ(restarts("exit"), 0u) << "the stop the probe caused is not an exit";
  EXPECT_EQ(managedCount(), 1);
}

// The exec probe runs in the sensor container; a file in the (read-only) control mount fails it.
TEST_F(AgentE2ETest, AFailingExecProbeRestartsTheSensorAsUnhealthy) {
  agent_ = startAgent(config("", "", "qcs-standin:test", "never",
                             "  health:\n"
                             "    exec: {command: [/bin/sh, -c, \"test ! -e /standin/unhealthy\"]}\n"
                             "    startup_grace: 1s\n    period: 2s\n    timeout: 1500ms\n"
                             "    failure_threshold: 2\n"));
  ASSERT_TRUE(waitRunning()) << agent_->output();
  std::string started = sensorStartedAt();
  ASSERT_TRUE(writeFile(dir_.file("control/unhealthy"), "1\n"));
  ASSERT_TRUE(waitFor([&] { return restarts("unhealthy") >= 1; }, 30s)) << agent_->output();
  EXPECT_TRUE(logged(*agent_, "exec probe exited with code 1"));
  ASSERT_TRUE(waitRestarted(started, 30s)) << agent_->output();
  EXPECT_EQ(restarts("exit"), 0u);
  std::string id = sensorId();
  ::unlink(dir_.file("control/unhealthy").c_str());
  EXPECT_EQ(sensorId(), id) << "restarted in place";
}

class RegistryPullTest : public AgentE2ETest {
 protected:
  void SetUp() override {
    AgentE2ETest::SetUp();
    registry_ = Registry::start("qcs", "right-password");
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(registry_->push(*dockerd_, "qcs-standin:test", "qcs/standin:1").ok());
    remote_ = registry_->address() + "/qcs/standin:1";
    // The node starts without the image: the agent must pull it.
    ASSERT_TRUE(dockerd_->cli("rmi " + remote_).ok());
    ASSERT_TRUE(writeFile(dir_.file("registry-password"), password_ + "\n", 0600));
  }
  std::string withAuth() {
    return "registry_auth:\n  kind: basic\n  username: qcs\n  password: {source: file, path: " +
           dir_.file("registry-password") + "}\n";
  }
  std::unique_ptr<Registry> registry_;
  std::string remote_;
  std::string password_ = "right-password";
};

TEST_F(RegistryPullTest, PullsWithTheRightPassword) {
  agent_ = startAgent(config("", withAuth(), remote_, "if-not-present"));
  ASSERT_TRUE(waitRunning(60s)) << agent_->output();
  EXPECT_EQ(inspect(kSensorName)["Config"]["Image"], remote_);
  EXPECT_TRUE(logged(*agent_, "pulled " + remote_));
  EXPECT_EQ(agent_->output().find("right-password"), std::string::npos);
}

TEST_F(RegistryPullTest, AWrongPasswordFailsClearlyAndCreatesNothing) {
  password_ = "wrong-password";
  ASSERT_TRUE(writeFile(dir_.file("registry-password"), password_ + "\n", 0600));
  agent_ = startAgent(config("", withAuth(), remote_, "if-not-present"));
  ASSERT_TRUE(waitFor([&] { return logged(*agent_, "unauthorized"); }, 60s)) << agent_->output();
  EXPECT_TRUE(agent_->running());
  EXPECT_EQ(managedCount(), 0);
  EXPECT_EQ(agent_->output().find("wrong-password"), std::string::npos);
}

}  // namespace
}  // namespace qcs::testing

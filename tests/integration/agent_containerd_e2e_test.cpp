// The qcs-agent binary supervising the stand-in sensor on a real containerd (`runtime.kind:
// containerd`): the foundation issue's fault list again, observed through `ctr` and the agent's
// /status and exit codes.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "harness/agent_process.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kSensorName = "qcs-e2e-sensor";
// The agent's sensor.image "qcs-standin:test" is this image in containerd's naming.
constexpr const char* kImage = "docker.io/library/qcs-standin:test";

// Each test gets its own containerd namespace: runc keeps its state under /run/containerd/runc/<ns>
// and the sensor's cgroup is /<ns>/<name>, both shared by every containerd on the machine, so tests
// running in parallel (each with its own containerd) must not share a namespace and sensor name.
std::string uniqueNamespace() {
  std::random_device random;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", random());
  return std::string("qcs-e2e-") + suffix;
}

class ContainerdAgentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    containerd_ = Containerd::start();
    ASSERT_NE(containerd_, nullptr) << "containerd did not start";
    auto image = importStandinImage(*containerd_, kImage, ns_);
    ASSERT_TRUE(image.ok()) << image.message();
    ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kE2eCustomerId) + "\n", 0600));
    ::mkdir(dir_.file("control").c_str(), 0755);
    setControl("run");
  }

  void TearDown() override {
    agent_.reset();
    containerd_.reset();
  }

  // The stand-in reads this at each start: "<mode> [code] [after]". The task runs before its shell
  // reaches the read, so once an agent runs, the file changes only after the sensor's output shows
  // that it was read: otherwise the first run may already see the new mode.
  void setControl(const std::string& line) {
    if (agent_) {
      ASSERT_TRUE(waitFor([&] { return sensorLog().find("standin: mode:") != std::string::npos; }, 30s))
          << "the stand-in never read its control file\nagent:\n"
          << agent_->output();
    }
    ASSERT_TRUE(writeFile(dir_.file("control/control"), line + "\n"));
  }

  std::string config(const std::string& extraSensor = "", const std::string& extraTop = "",
                     const std::string& image = "qcs-standin:test", const std::string& pullPolicy = "never",
                     const std::string& extraSupervision = "") {
    E2eConfig c;
    c.runtime = "runtime:\n  kind: containerd\n  endpoint: " + containerd_->socketPath() +
                "\n  containerd_namespace: " + ns_ + "\n  containerd_log_dir: " + dir_.file("logs") + "\n";
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
    return startAgentProcess(dir_, yaml, name, {{"QCS_E2E_ACTIVATION_ID", kE2eActivationId}}, agents_);
  }

  Result<std::string> ctr(const std::string& args) { return containerd_->cli("-n " + ns_ + " " + args); }

  json containerInfo(const std::string& id = kSensorName) {
    auto out = ctr("containers info " + id);
    if (!out.ok()) return json();
    auto doc = json::parse(out.value(), nullptr, false);
    return doc.is_object() ? doc : json();
  }
  // "RUNNING", "STOPPED", ... from `ctr tasks ls`; "" when there is no task.
  std::pair<std::string, int> task(const std::string& id = kSensorName) {
    auto out = ctr("tasks ls");
    if (!out.ok()) return {"", 0};
    std::istringstream lines(out.value());
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      std::string name, pid, status;
      fields >> name >> pid >> status;
      if (name == id) return {status, std::atoi(pid.c_str())};
    }
    return {"", 0};
  }
  bool running() { return task().first == "RUNNING"; }
  int pid() { return running() ? task().second : 0; }
  bool waitRunning(std::chrono::milliseconds deadline = 30s) {
    return waitFor([&] { return running(); }, deadline);
  }
  // Waits for the sensor's task to run again with another process than `before`.
  bool waitRestarted(int before, std::chrono::milliseconds deadline = 30s) {
    return waitFor([&] { return running() && pid() != before && pid() != 0; }, deadline);
  }
  void killSensor() {
    const int before = pid();
    auto killed = ctr(std::string("tasks kill -s SIGKILL ") + kSensorName);
    if (killed.ok()) return;
    // On a loaded machine ctr can refuse a kill that landed as the task was already going: the kill
    // still counts when the process that ran is gone.
    ASSERT_TRUE(waitFor([&] { return pid() != before; }, 10s))
        << "ctr tasks kill failed: " << killed.message() << "\nagent:\n"
        << (agent_ ? agent_->output() : "");
  }
  int managedCount() {
    auto out = ctr("containers ls -q 'labels.\"io.qcs-agent.managed\"==true'");
    if (!out.ok()) return -1;
    std::istringstream lines(out.value());
    int n = 0;
    for (std::string line; std::getline(lines, line);) n += line.empty() ? 0 : 1;
    return n;
  }
  std::string specHash() {
    json info = containerInfo();
    return info.is_null() ? "" : info["Labels"].value("io.qcs-agent.spec-hash", "");
  }
  std::string createdAt() {
    json info = containerInfo();
    return info.is_null() ? "" : info.value("CreatedAt", "");
  }
  SensorView view() { return SensorView(*agent_); }
  std::string sensorLog() { return readFile(dir_.file(std::string("logs/") + kSensorName + ".log")); }

  const std::string ns_ = uniqueNamespace();
  TempDir dir_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<Process> agent_;
  int agents_ = 0;
};

TEST_F(ContainerdAgentTest, CreatesTheSensorExactlyPerSpec) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  json info = containerInfo();
  ASSERT_TRUE(info.is_object());
  EXPECT_EQ(info["Image"], kImage);
  EXPECT_EQ(info["Labels"]["io.qcs-agent.managed"], "true");
  EXPECT_EQ(info["Labels"]["io.qcs-agent.spec-hash"].get<std::string>().size(), 64u);
  EXPECT_FALSE(info["Labels"]["io.qcs-agent.version"].get<std::string>().empty());
  EXPECT_EQ(info["Snapshotter"], "overlayfs");

  const json& oci = info["Spec"];
  EXPECT_EQ(oci["process"]["args"],
            json({"/sensor", "--registry-sensor", "--perform-sca-scan", "--optimize-image-scans",
                  "--sensor-without-persistent-storage", "--enable-console-logs", "--container-runtime", "containerd",
                  "--storage-driver-type", "overlay"}));
  std::set<std::string> envNames;
  for (const auto& e : oci["process"]["env"]) {
    envNames.insert(e.get<std::string>().substr(0, e.get<std::string>().find('=')));
  }
  for (const char* name : {"ACTIVATIONID", "CUSTOMERID", "POD_URL", "STANDIN_LOG_INTERVAL"}) {
    EXPECT_TRUE(envNames.count(name)) << name;
  }
  std::map<std::string, json> mounts;
  for (const auto& m : oci["mounts"]) mounts[m["destination"]] = m;
  ASSERT_TRUE(mounts.count("/run/containerd/containerd.sock"));
  EXPECT_EQ(mounts["/run/containerd/containerd.sock"]["source"], containerd_->socketPath());
  auto readOnly = [&](const std::string& target) {
    std::set<std::string> options(mounts[target]["options"].begin(), mounts[target]["options"].end());
    return options.count("ro") == 1;
  };
  EXPECT_TRUE(readOnly("/standin"));
  if (::access("/var/lib/containerd", F_OK) == 0) {
    ASSERT_TRUE(mounts.count("/var/lib/containerd"));
    EXPECT_TRUE(readOnly("/var/lib/containerd"));
  }
  std::set<std::string> caps(oci["process"]["capabilities"]["effective"].begin(),
                             oci["process"]["capabilities"]["effective"].end());
  for (const char* cap : {"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID"}) {
    EXPECT_TRUE(caps.count(cap)) << cap;
  }
  EXPECT_FALSE(caps.count("CAP_SYS_MODULE")) << "not privileged";
  for (const auto& n : oci["linux"]["namespaces"]) EXPECT_NE(n["type"], "network") << "host network";
  EXPECT_EQ(oci["linux"]["resources"]["cpu"]["shares"], 102);
  EXPECT_EQ(oci["linux"]["resources"]["cpu"]["quota"], 50000);
  EXPECT_EQ(oci["linux"]["resources"]["cpu"]["period"], 100000);
  EXPECT_EQ(oci["linux"]["resources"]["memory"]["limit"], 64 << 20);
  EXPECT_EQ(oci["linux"]["resources"]["memory"]["reservation"], 16 << 20);

  // The stand-in saw its arguments; its output went to the capped log file, not a FIFO.
  ASSERT_TRUE(waitFor([&] { return sensorLog().find("standin: args: --registry-sensor") != std::string::npos; }, 20s));
  // The names line comes after the args line, once the stand-in has read its environment.
  EXPECT_TRUE(waitFor([&] { return sensorLog().find("standin: env:") != std::string::npos; }, 20s));
  EXPECT_NE(sensorLog().find("ACTIVATIONID"), std::string::npos) << sensorLog();
  ASSERT_TRUE(waitFor([&] { return view().state() == "running"; }, 20s)) << agent_->output();
  json status = agentStatus(*agent_);
  EXPECT_EQ(status["runtime"].value("kind", ""), "containerd");
  EXPECT_EQ(status["sensor"].value("containerId", ""), kSensorName);
}

TEST_F(ContainerdAgentTest, SecretsNeverLeaveTheSensorsEnvironment) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  setControl("exit 24");
  int before = pid();
  killSensor();
  ASSERT_TRUE(waitFor([&] { return view().lastExitCode() == 24; }, 30s)) << agent_->output();
  setControl("run");
  ASSERT_TRUE(waitRestarted(before));

  std::string agentLog = agent_->output();
  EXPECT_EQ(agentLog.find(kE2eActivationId), std::string::npos);
  EXPECT_EQ(agentLog.find(kE2eCustomerId), std::string::npos);
  std::string cmdline = readFile("/proc/" + std::to_string(agent_->pid()) + "/cmdline");
  EXPECT_EQ(cmdline.find(kE2eActivationId), std::string::npos);
  json info = containerInfo();
  EXPECT_EQ(info["Labels"].dump().find(kE2eCustomerId), std::string::npos);
  EXPECT_EQ(info["Spec"]["process"]["args"].dump().find(kE2eCustomerId), std::string::npos);
  EXPECT_NE(info["Spec"]["process"]["env"].dump().find(kE2eActivationId), std::string::npos);
  EXPECT_EQ(agentStatus(*agent_).dump().find(kE2eCustomerId), std::string::npos);
  EXPECT_EQ(sensorLog().find(kE2eActivationId), std::string::npos);

  auto render = runCommand({QCS_AGENT_BINARY, "render", "--config", dir_.file("agent.yaml")});
  ASSERT_TRUE(render.ok());
  EXPECT_EQ(render->exitCode, 0) << render->err;
  EXPECT_EQ(render->out.find(kE2eCustomerId), std::string::npos);
  EXPECT_NE(render->out.find("--container-runtime"), std::string::npos) << "rendered for containerd";
}

TEST_F(ContainerdAgentTest, AKilledSensorIsRestartedInPlaceWithGrowingBackoff) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  const std::string created = createdAt();
  std::vector<double> delays;
  for (int i = 0; i < 3; ++i) {
    int before = pid();
    auto killedAt = std::chrono::steady_clock::now();
    killSensor();
    ASSERT_TRUE(waitRestarted(before)) << agent_->output();
    delays.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - killedAt).count());
    EXPECT_EQ(createdAt(), created) << "an unchanged spec is restarted in place";
  }
  EXPECT_GE(delays[0], 0.3);
  EXPECT_GE(delays[1], 0.6);
  EXPECT_GE(delays[2], 1.2);
  ASSERT_TRUE(waitFor([&] { return view().restarts("exit") == 3; }, 10s)) << agent_->output();
  EXPECT_EQ(view().lastExitCode(), 137);
  EXPECT_EQ(managedCount(), 1);
}

TEST_F(ContainerdAgentTest, AnOomKillIsReportedAsOom) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  setControl("oom");
  killSensor();
  ASSERT_TRUE(waitFor([&] { return view().sensor.value("oomKills", 0) >= 1; }, 30s)) << agent_->output();
  EXPECT_TRUE(view().sensor.value("lastExitOom", false));
  setControl("run");
  ASSERT_TRUE(waitFor([&] { return view().restarts("oom") >= 1 && view().state() == "running"; }, 30s))
      << agent_->output();
}

TEST_F(ContainerdAgentTest, Exit24IsRetriedSoonAndExit1WaitsTheMaximum) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  setControl("exit 24");
  killSensor();
  ASSERT_TRUE(waitFor([&] { return view().lastExitCode() == 24; }, 20s)) << agent_->output();
  EXPECT_NE(view().state(), "failed") << "exit 24 is recoverable";

  setControl("exit 1");
  ASSERT_TRUE(waitFor([&] { return view().lastExitCode() == 1 && view().state() == "failed"; }, 20s))
      << agent_->output();
  auto failedAt = std::chrono::steady_clock::now();
  setControl("run");
  ASSERT_TRUE(waitRunning(20s));
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - failedAt).count();
  EXPECT_GE(waited, 2.5) << "exit 1 must wait the maximum delay";
}

TEST_F(ContainerdAgentTest, ARestartedAgentAdoptsTheSameTask) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  int before = pid();
  agent_->kill(SIGKILL);
  agent_->wait(10s);

  const double secondAgentStart =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  agent_ = startAgent(config());
  ASSERT_TRUE(waitFor([&] { return view().state() == "running"; }, 30s)) << agent_->output();
  for (const char* reason : {"exit", "oom", "missing", "drift", "unhealthy", "runtime"}) {
    EXPECT_EQ(view().restarts(reason), 0u) << reason;
  }
  EXPECT_EQ(pid(), before) << "adoption must not restart the sensor";
  EXPECT_EQ(managedCount(), 1);
  // The start time comes from the task's process, not from this agent's own start.
  const json startedAt = view().sensor["startedAt"];
  ASSERT_TRUE(startedAt.is_number()) << view().sensor.dump();
  EXPECT_LT(startedAt.get<double>(), secondAgentStart);
  EXPECT_GT(startedAt.get<double>(), secondAgentStart - 60);
}

TEST_F(ContainerdAgentTest, AChangedConfigReplacesTheContainer) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  const std::string hash = specHash();
  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(20s), 0);
  EXPECT_TRUE(running()) << "SIGTERM leaves the sensor running by default";

  agent_ = startAgent(config("  args: [--perform-sca-scan, --enable-console-logs]\n"));
  ASSERT_TRUE(waitFor([&] { return running() && !specHash().empty() && specHash() != hash; }, 30s)) << agent_->output();
  EXPECT_EQ(managedCount(), 1);
  EXPECT_TRUE(waitFor([&] { return view().restarts("drift") == 1; }, 10s));
  // The old rootfs snapshot went with the old container: one active snapshot, the new sensor's.
  auto snapshots = ctr("snapshots --snapshotter overlayfs ls");
  ASSERT_TRUE(snapshots.ok());
  std::istringstream lines(snapshots.value());
  int active = 0;
  for (std::string line; std::getline(lines, line);) active += line.find("Active") != std::string::npos ? 1 : 0;
  EXPECT_EQ(active, 1) << *snapshots;
}

TEST_F(ContainerdAgentTest, AStraySecondCopyIsRemovedAndScannersAreLeftAlone) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  const std::string created = createdAt();
  const std::string logUri = " --log-uri file://" + dir_.file("other.log") + " ";
  ASSERT_TRUE(ctr("run -d --net-host --label io.qcs-agent.managed=true" + logUri + kImage + " qcs-stray").ok());
  ASSERT_TRUE(ctr("run -d --net-host" + logUri + kImage + " QCS-Image-Scanning-0abc").ok());
  ASSERT_TRUE(waitFor([&] { return containerInfo("qcs-stray").is_null(); }, 30s)) << agent_->output();
  EXPECT_EQ(createdAt(), created);
  EXPECT_FALSE(containerInfo("QCS-Image-Scanning-0abc").is_null());
  EXPECT_EQ(task("QCS-Image-Scanning-0abc").first, "RUNNING");
  EXPECT_EQ(managedCount(), 1);
}

TEST_F(ContainerdAgentTest, ARemovedSensorIsCreatedAgain) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  const std::string created = createdAt();
  ASSERT_TRUE(ctr(std::string("tasks delete -f ") + kSensorName).ok());
  ASSERT_TRUE(ctr(std::string("containers delete ") + kSensorName).ok());
  ASSERT_TRUE(waitFor([&] { return running() && !createdAt().empty() && createdAt() != created; }, 30s))
      << agent_->output();
  EXPECT_TRUE(waitFor([&] { return view().restarts("missing") == 1; }, 10s)) << view().sensor.dump();
}

TEST_F(ContainerdAgentTest, SurvivesAContainerdRestart) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  ASSERT_TRUE(waitFor([&] { return view().state() == "running"; }, 20s));
  int before = pid();
  ASSERT_TRUE(containerd_->restart()) << containerd_->log();
  // The shim keeps the task through containerd's restart: nothing to restart, only to re-adopt.
  ASSERT_TRUE(waitFor([&] { return agentStatus(*agent_)["runtime"].value("up", false); }, 60s)) << agent_->output();
  ASSERT_TRUE(waitFor([&] { return view().state() == "running"; }, 30s)) << agent_->output();
  EXPECT_EQ(pid(), before);
  EXPECT_TRUE(agent_->running());
  EXPECT_EQ(managedCount(), 1);

  // And the event stream works again: a kill after the restart is noticed at once.
  killSensor();
  ASSERT_TRUE(waitRestarted(before, 20s)) << agent_->output();
}

TEST_F(ContainerdAgentTest, SurvivesContainerdBeingDownAndStartsTheSensorWhenItIsBack) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  containerd_->stop();
  ASSERT_TRUE(waitFor([&] { return !agentStatus(*agent_)["runtime"].value("up", true); }, 30s)) << agent_->output();
  EXPECT_TRUE(agent_->running());
  ASSERT_TRUE(containerd_->restart()) << containerd_->log();
  ASSERT_TRUE(waitFor([&] { return view().state() == "running"; }, 60s)) << agent_->output();
  EXPECT_EQ(managedCount(), 1);
}

TEST_F(ContainerdAgentTest, ABadConfigExits78AndLeavesTheRunningSensorAlone) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  int before = pid();
  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(20s), 0);

  std::string tinyLog = config();
  tinyLog.insert(tinyLog.find("  containerd_log_dir:"), "  containerd_log_max_size: 1Ki\n");
  for (const std::string& bad : {config("  mode: banana\n"), config("", "platform:\n  detect: mars\n"), tinyLog}) {
    auto agent = startAgent(bad, "bad");
    auto code = agent->wait(20s);
    ASSERT_TRUE(code.has_value());
    EXPECT_EQ(*code, 78) << agent->output();
  }
  EXPECT_EQ(pid(), before);
  EXPECT_TRUE(running());
}

TEST_F(ContainerdAgentTest, OnStopStopStopsTheSensorWithTheAgent) {
  std::string path = dir_.file("stop.yaml");
  ASSERT_TRUE(writeFile(path, config(), 0600));
  auto p = Process::spawn({QCS_AGENT_BINARY, "run", "--config", path, "--set", "supervision.on_stop=stop"},
                          {{"QCS_E2E_ACTIVATION_ID", kE2eActivationId}}, dir_.file("stop.log"));
  ASSERT_TRUE(p.ok());
  agent_ = std::move(p.value());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  ASSERT_TRUE(waitFor([&] { return view().state() == "running"; }, 30s)) << agent_->output();
  agent_->kill(SIGTERM);
  ASSERT_EQ(agent_->wait(40s), 0) << agent_->output();
  EXPECT_EQ(task().first, "STOPPED");
}

TEST_F(ContainerdAgentTest, TheNextAgentDeletesTheLeasesAKilledOneLeftThoughItPullsNothing) {
  // A pull lease of an agent killed after the image was stored, a create lease of one killed
  // mid-create, and a lease that is not the agent's. The image is stored and pull_policy is never:
  // no pull runs that could sweep, only the agent's connection.
  for (const char* id :
       {"qcs-agent-pull-999999-1-0-deadbeef", "qcs-agent-create-0123456789ab", "someone-elses-lease"}) {
    auto created = ctr(std::string("leases create --id ") + id);
    ASSERT_TRUE(created.ok()) << created.message();
  }
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning(60s)) << agent_->output();
  // The sweep ran at connect, before the first reconcile created the sensor (under a lease of its
  // own, deleted when the create returned).
  auto leases = ctr("leases ls -q");
  ASSERT_TRUE(leases.ok()) << leases.message();
  EXPECT_EQ(nonEmptyLines(*leases), std::vector<std::string>{"someone-elses-lease"}) << agent_->output();
  (void)ctr("leases delete someone-elses-lease");
}

TEST_F(ContainerdAgentTest, TheCrashedSensorsLastOutputIsCopiedIntoTheAgentLog) {
  agent_ = startAgent(config());
  ASSERT_TRUE(waitRunning()) << agent_->output();
  setControl("exit 24");
  killSensor();
  ASSERT_TRUE(waitFor([&] { return agentLogged(*agent_, "sensor| standin: exiting with 24"); }, 30s))
      << agent_->output();
}

// Pulls through the agent: the image is pushed by a private dockerd into the htpasswd registry and
// is not in containerd until the agent pulls it.
class ContainerdPullAgentTest : public ContainerdAgentTest {
 protected:
  void SetUp() override {
    ContainerdAgentTest::SetUp();
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr);
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << image.message();
    registry_ = Registry::start("qcs", "right-password");
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(registry_->push(*dockerd_, "qcs-standin:test", "qcs/standin:1").ok());
    remote_ = registry_->address() + "/qcs/standin:1";
    ASSERT_TRUE(writeFile(dir_.file("registry-password"), "right-password\n", 0600));
  }
  void TearDown() override {
    ContainerdAgentTest::TearDown();
    registry_.reset();
    dockerd_.reset();
  }
  std::string withAuth() {
    return "registry_auth:\n  kind: basic\n  username: qcs\n  password: {source: file, path: " +
           dir_.file("registry-password") + "}\n";
  }
  std::unique_ptr<Dockerd> dockerd_;
  std::unique_ptr<Registry> registry_;
  std::string remote_;
};

TEST_F(ContainerdPullAgentTest, PullsWithTheRightPasswordAndRunsTheSensor) {
  agent_ = startAgent(config("", withAuth(), remote_, "if-not-present"));
  ASSERT_TRUE(waitRunning(60s)) << agent_->output();
  EXPECT_EQ(containerInfo()["Image"], remote_);
  auto images = ctr("images ls -q");
  ASSERT_TRUE(images.ok());
  EXPECT_NE(images->find(remote_), std::string::npos);
  EXPECT_EQ(agent_->output().find("right-password"), std::string::npos);
  ASSERT_TRUE(waitFor([&] { return !view().text("imageId").empty(); }, 20s)) << view().sensor.dump();
}

TEST_F(ContainerdPullAgentTest, AWrongPasswordFailsClearlyAndCreatesNothing) {
  ASSERT_TRUE(writeFile(dir_.file("registry-password"), "wrong-password\n", 0600));
  agent_ = startAgent(config("", withAuth(), remote_, "if-not-present"));
  auto lastError = [&] {
    json status = agentStatus(*agent_);
    return status.is_object() && status["lastError"].is_string() ? status["lastError"].get<std::string>()
                                                                 : std::string();
  };
  // The registry's own words reach /status (and the log) as the reason the sensor is not running.
  ASSERT_TRUE(waitFor([&] { return lastError().find("authentication required") != std::string::npos; }, 60s))
      << agent_->output();
  EXPECT_TRUE(agent_->running());
  EXPECT_EQ(managedCount(), 0);
  EXPECT_EQ(agent_->output().find("wrong-password"), std::string::npos);
}

TEST_F(ContainerdPullAgentTest, AnUnknownTagFailsClearly) {
  const std::string missing = registry_->address() + "/qcs/standin:no-such-tag";
  agent_ = startAgent(config("", withAuth(), missing, "if-not-present"));
  ASSERT_TRUE(waitFor([&] { return agentLogged(*agent_, "no-such-tag"); }, 60s)) << agent_->output();
  EXPECT_TRUE(agent_->running());
  EXPECT_EQ(managedCount(), 0);
}

// A registry without auth: the agent pulls anonymously (registry_auth.kind: none).
TEST_F(ContainerdAgentTest, PullsAnonymouslyFromAnOpenRegistry) {
  auto dockerd = Dockerd::start();
  ASSERT_NE(dockerd, nullptr);
  ASSERT_TRUE(buildStandinImage(*dockerd).ok());
  auto registry = Registry::start("", "");
  ASSERT_NE(registry, nullptr);
  ASSERT_TRUE(registry->push(*dockerd, "qcs-standin:test", "open/standin:1").ok());
  const std::string remote = registry->address() + "/open/standin:1";
  agent_ = startAgent(config("", "", remote, "if-not-present"));
  ASSERT_TRUE(waitRunning(60s)) << agent_->output();
  EXPECT_EQ(containerInfo()["Image"], remote);
  ASSERT_TRUE(waitFor([&] { return agentStatus(*agent_)["pulls"].value("succeeded", 0) == 1; }, 20s));
}

// Health probes on containerd: the quiet-output probe reads the log file's modification time.
TEST_F(ContainerdAgentTest, AQuietSensorIsRestartedAsUnhealthy) {
  setControl("hang");
  agent_ = startAgent(config("", "", "qcs-standin:test", "never",
                             "  health: {quiet_after: 2s, startup_grace: 1s, period: 1s, timeout: 500ms, "
                             "failure_threshold: 2}\n"));
  ASSERT_TRUE(waitRunning()) << agent_->output();
  ASSERT_TRUE(waitFor([&] { return view().restarts("unhealthy") >= 1; }, 30s)) << agent_->output();
  EXPECT_EQ(view().restarts("exit"), 0u) << "the stop the probe caused is not an exit";
  EXPECT_EQ(managedCount(), 1);
}

// The exec probe runs in the sensor's task with its process spec; a failing one restarts it.
TEST_F(ContainerdAgentTest, AFailingExecProbeRestartsTheSensorAsUnhealthy) {
  agent_ = startAgent(config("", "", "qcs-standin:test", "never",
                             "  health:\n    exec: {command: [/bin/sh, -c, \"test ! -e /standin/unhealthy\"]}\n"
                             "    startup_grace: 1s\n    period: 2s\n    timeout: 1500ms\n    failure_threshold: 2\n"));
  ASSERT_TRUE(waitRunning()) << agent_->output();
  int before = pid();
  ASSERT_TRUE(writeFile(dir_.file("control/unhealthy"), "1\n"));
  ASSERT_TRUE(waitFor([&] { return view().restarts("unhealthy") >= 1; }, 30s)) << agent_->output();
  ::unlink(dir_.file("control/unhealthy").c_str());
  ASSERT_TRUE(waitRestarted(before, 30s)) << agent_->output();
  EXPECT_EQ(view().restarts("exit"), 0u);
}

}  // namespace
}  // namespace qcs::testing

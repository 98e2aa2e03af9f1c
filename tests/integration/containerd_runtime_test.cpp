// The containerd runtime against a real containerd the harness starts (own socket, root, state):
// the OCI spec it stores, the task lifecycle, the capped log file, exit/OOM reporting, metrics,
// exec probes, removal, and the event watcher across a containerd restart.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/encoding.h"
#include "harness/harness.h"
#include "runtime/containerd/containerd_runtime.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using runtime::ContainerInfo;
using runtime::ContainerRuntime;
using runtime::ContainerSpec;
using runtime::ContainerState;
using runtime::RuntimeEvent;

constexpr const char* kNamespace = "qualys";
constexpr const char* kImage = "docker.io/library/qcs-standin:test";
constexpr const char* kSecret = "5b8e2c1a-0d4f-4e6b-9a7c-3f2e1d0c9b8a";

class RecordedEvents {
 public:
  void add(const RuntimeEvent& event) {
    std::lock_guard lock(mutex_);
    events_.push_back(event);
  }
  size_t count(RuntimeEvent::Kind kind, const std::string& id = "") const {
    std::lock_guard lock(mutex_);
    return size_t(std::count_if(events_.begin(), events_.end(), [&](const RuntimeEvent& e) {
      return e.kind == kind && (id.empty() || e.containerId == id);
    }));
  }
  std::optional<RuntimeEvent> last(RuntimeEvent::Kind kind, const std::string& id) const {
    std::lock_guard lock(mutex_);
    for (auto it = events_.rbegin(); it != events_.rend(); ++it) {
      if (it->kind == kind && it->containerId == id) return *it;
    }
    return std::nullopt;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<RuntimeEvent> events_;
};

class ContainerdRuntimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    containerd_ = Containerd::start();
    if (!containerd_) return;
    auto image = importStandinImage(*containerd_, kImage, kNamespace);
    if (!image.ok()) imageError_ = image.message();
  }
  static void TearDownTestSuite() { containerd_.reset(); }

  void SetUp() override {
    ASSERT_NE(containerd_, nullptr) << "the private containerd did not start";
    ASSERT_TRUE(containerd_->running()) << "an earlier test left containerd stopped";
    ASSERT_TRUE(imageError_.empty()) << "importing the stand-in image failed: " << imageError_;
    ::mkdir(dir_.file("control").c_str(), 0755);
    setControl("run");
    runtime::containerd::ContainerdRuntimeOptions options;
    options.socketPath = containerd_->socketPath();
    options.nameSpace = kNamespace;
    options.logDir = dir_.file("logs");
    options.timeout = 5s;
    options.logLimits.maxBytes = 64 * 1024;
    auto connected = runtime::containerd::connectContainerd(options);
    ASSERT_TRUE(connected.ok()) << connected.message();
    runtime_ = std::move(connected.value());
  }

  void TearDown() override {
    if (runtime_) {
      for (const auto& id : created_) (void)runtime_->removeContainer(id, true);
    }
  }

  void setControl(const std::string& line) { ASSERT_TRUE(writeFile(dir_.file("control/control"), line + "\n")); }

  std::string uniqueId() {
    std::string id = std::string("qcs-rt-") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::transform(id.begin(), id.end(), id.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return id;
  }

  ContainerSpec spec(const std::string& id) {
    ContainerSpec s;
    s.name = id;
    s.image = kImage;
    s.args = {"--registry-sensor", "--container-runtime", "containerd"};
    s.env = {{"ACTIVATIONID", kSecret, true}, {"STANDIN_LOG_INTERVAL", "0.2", false}};
    s.mounts = {{dir_.file("control"), "/standin", true}, {dir_.path(), "/scratch", false}};
    s.capAdd = {"SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"};
    s.resources = {250, 500, 16 << 20, 64 << 20};
    s.labels = {{"io.qcs-agent.managed", "true"}, {"io.qcs-agent.spec-hash", std::string(64, 'a')}};
    return s;
  }

  std::string createAndStart(const std::string& id) {
    auto created = runtime_->createContainer(spec(id));
    EXPECT_TRUE(created.ok()) << created.message();
    if (!created.ok()) return "";
    created_.push_back(id);
    auto started = runtime_->startContainer(id);
    EXPECT_TRUE(started.ok()) << started.message();
    return created.value();
  }

  ContainerInfo inspect(const std::string& id) {
    auto info = runtime_->inspectContainer(id);
    return info.ok() ? info.value() : ContainerInfo{};
  }

  // The PID ctr reports for the container's task (0 when it has none).
  int taskPid(const std::string& id) {
    auto out = containerd_->cli(std::string("-n ") + kNamespace + " tasks ls");
    if (!out.ok()) return 0;
    std::istringstream lines(out.value());
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      std::string task, pid;
      fields >> task >> pid;
      if (task == id) return std::atoi(pid.c_str());
    }
    return 0;
  }

  std::string logFile(const std::string& id) { return dir_.file("logs/" + id + ".log"); }

  static std::unique_ptr<Containerd> containerd_;
  static std::string imageError_;
  TempDir dir_;
  std::unique_ptr<ContainerRuntime> runtime_;
  std::vector<std::string> created_;
};

std::unique_ptr<Containerd> ContainerdRuntimeTest::containerd_;
std::string ContainerdRuntimeTest::imageError_;

TEST_F(ContainerdRuntimeTest, ReportsItselfAsContainerd) {
  EXPECT_EQ(runtime_->info().kind, "containerd");
  EXPECT_EQ(runtime_->info().endpoint, containerd_->socketPath());
  EXPECT_FALSE(runtime_->info().version.empty());
  EXPECT_TRUE(runtime_->ping().ok());
}

TEST_F(ContainerdRuntimeTest, TheContainerRecordHoldsTheCompleteOciSpec) {
  const std::string id = uniqueId();
  auto created = runtime_->createContainer(spec(id));
  ASSERT_TRUE(created.ok()) << created.message();
  created_.push_back(id);
  EXPECT_EQ(created.value(), id);

  auto out = containerd_->cli(std::string("-n ") + kNamespace + " containers info " + id);
  ASSERT_TRUE(out.ok()) << out.message();
  json info = json::parse(out.value());
  EXPECT_EQ(info["ID"], id);
  EXPECT_EQ(info["Image"], kImage);
  EXPECT_EQ(info["Runtime"]["Name"], "io.containerd.runc.v2");
  EXPECT_EQ(info["Snapshotter"], "overlayfs");
  EXPECT_EQ(info["SnapshotKey"], id);
  EXPECT_EQ(info["Labels"]["io.qcs-agent.managed"], "true");
  EXPECT_EQ(info["Labels"]["io.qcs-agent.spec-hash"], std::string(64, 'a'));
  EXPECT_EQ(info["Labels"].dump().find(kSecret), std::string::npos) << "no secret in a label";

  const json& oci = info["Spec"];
  EXPECT_EQ(oci["root"]["path"], "rootfs");
  // The stand-in's Entrypoint is ["/sensor"]; the spec's args follow it, as Docker's Cmd would.
  EXPECT_EQ(oci["process"]["args"], json({"/sensor", "--registry-sensor", "--container-runtime", "containerd"}));
  std::set<std::string> env(oci["process"]["env"].begin(), oci["process"]["env"].end());
  EXPECT_TRUE(env.count(std::string("ACTIVATIONID=") + kSecret)) << "the sensor gets its secret";
  EXPECT_TRUE(env.count("STANDIN_LOG_INTERVAL=0.2"));
  const json& caps = oci["process"]["capabilities"];
  for (const char* set : {"bounding", "effective", "permitted"}) {
    std::set<std::string> have(caps[set].begin(), caps[set].end());
    for (const char* cap : {"CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_KILL"}) {
      EXPECT_TRUE(have.count(cap)) << set << " lacks " << cap;
    }
    EXPECT_FALSE(have.count("CAP_SYS_MODULE")) << set << ": not privileged";
  }
  std::map<std::string, json> mounts;
  for (const auto& m : oci["mounts"]) mounts[m["destination"]] = m;
  for (const char* target : {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"}) {
    EXPECT_TRUE(mounts.count(target)) << target;
  }
  ASSERT_TRUE(mounts.count("/standin"));
  EXPECT_EQ(mounts["/standin"]["source"], dir_.file("control"));
  std::set<std::string> roOptions(mounts["/standin"]["options"].begin(), mounts["/standin"]["options"].end());
  EXPECT_TRUE(roOptions.count("ro"));
  std::set<std::string> rwOptions(mounts["/scratch"]["options"].begin(), mounts["/scratch"]["options"].end());
  EXPECT_FALSE(rwOptions.count("ro"));
  std::set<std::string> namespaces;
  for (const auto& n : oci["linux"]["namespaces"]) namespaces.insert(n["type"]);
  EXPECT_FALSE(namespaces.count("network")) << "the sensor uses the host network";
  EXPECT_TRUE(namespaces.count("pid"));
  EXPECT_TRUE(namespaces.count("mount"));
  const json& resources = oci["linux"]["resources"];
  EXPECT_EQ(resources["cpu"]["shares"], 256);
  EXPECT_EQ(resources["cpu"]["quota"], 50000);
  EXPECT_EQ(resources["cpu"]["period"], 100000);
  EXPECT_EQ(resources["memory"]["limit"], 64 << 20);
  EXPECT_EQ(resources["memory"]["reservation"], 16 << 20);
  EXPECT_EQ(oci["linux"]["cgroupsPath"], std::string("/") + kNamespace + "/" + id);

  ContainerInfo described = inspect(id);
  EXPECT_EQ(described.state, ContainerState::kCreated);
  EXPECT_EQ(described.name, id);
  EXPECT_FALSE(described.imageId.empty());
}

TEST_F(ContainerdRuntimeTest, ACreateOverAnExistingContainerIsAlreadyExists) {
  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  auto again = runtime_->createContainer(spec(id));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.code(), ErrorCode::kAlreadyExists) << again.message();
}

TEST_F(ContainerdRuntimeTest, TheTasksOutputGoesToItsLogFile) {
  const std::string id = uniqueId();
  const auto before = std::chrono::system_clock::now();
  ASSERT_FALSE(createAndStart(id).empty());
  ContainerInfo running = inspect(id);
  EXPECT_EQ(running.state, ContainerState::kRunning);
  ASSERT_TRUE(running.startedAtTime.has_value());
  EXPECT_LE(*running.startedAtTime - before, 10s);
  EXPECT_GE(*running.startedAtTime - before, -2s);

  ASSERT_TRUE(waitFor(
      [&] {
        auto tail = runtime_->logTail(id, 50);
        return tail.ok() && std::any_of(tail->begin(), tail->end(), [](const std::string& l) {
                 return l.find("standin: alive 2") != std::string::npos;
               });
      },
      20s))
      << readFile(logFile(id));
  auto tail = runtime_->logTail(id, 50);
  ASSERT_TRUE(tail.ok());
  EXPECT_NE(tail->front().find("standin: args: --registry-sensor"), std::string::npos) << tail->front();
  auto last = runtime_->lastOutputTime(id, before - 1s);
  ASSERT_TRUE(last.ok()) << last.message();
  ASSERT_TRUE(last->has_value());
  EXPECT_GE(**last, before - 1s);
  EXPECT_EQ(readFile(logFile(id)).find(kSecret), std::string::npos) << "the stand-in prints names only";
}

TEST_F(ContainerdRuntimeTest, AnEndedTaskIsExitedWithItsCodeAndStartsAgainInPlace) {
  const std::string id = uniqueId();
  setControl("exit 24");
  ASSERT_FALSE(createAndStart(id).empty());
  ASSERT_TRUE(waitFor([&] { return inspect(id).state == ContainerState::kExited; }, 20s));
  ContainerInfo exited = inspect(id);
  EXPECT_EQ(exited.exitCode, 24);
  EXPECT_FALSE(exited.oomKilled);
  EXPECT_FALSE(exited.finishedAt.empty());

  setControl("run");
  auto started = runtime_->startContainer(id);
  ASSERT_TRUE(started.ok()) << started.message();
  ContainerInfo again = inspect(id);
  EXPECT_EQ(again.state, ContainerState::kRunning);
  EXPECT_EQ(again.id, id) << "restarted in place: the same container";
  EXPECT_GT(taskPid(id), 0);
  // Starting a running container is not an error (as on Docker).
  EXPECT_TRUE(runtime_->startContainer(id).ok());
}

TEST_F(ContainerdRuntimeTest, AnOomKillIsReportedByInspect) {
  const std::string id = uniqueId();
  setControl("oom");
  ASSERT_FALSE(createAndStart(id).empty());
  ASSERT_TRUE(waitFor([&] { return inspect(id).state == ContainerState::kExited; }, 30s)) << readFile(logFile(id));
  ContainerInfo exited = inspect(id);
  EXPECT_EQ(exited.exitCode, 137);
  EXPECT_TRUE(exited.oomKilled);
}

TEST_F(ContainerdRuntimeTest, StatsComeFromTheTasksMetrics) {
  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  auto stats = runtime_->containerStats(id);
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_GT(stats->memoryBytes, 0);
  EXPECT_LT(stats->memoryBytes, 64 << 20);
  EXPECT_GE(stats->cpuSeconds, 0.0);
  ASSERT_TRUE(waitFor([&] { return runtime_->containerStats(id)->cpuSeconds > 0; }, 10s));
  auto missing = runtime_->containerStats("qcs-rt-no-such-container");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), ErrorCode::kNotFound);
}

TEST_F(ContainerdRuntimeTest, ExecProbesReturnTheirCodeAndAHangingOneIsKilled) {
  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  auto ok = runtime_->execInContainer(id, {"/bin/sh", "-c", "test -r /standin/control"}, 5s);
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(ok.value(), 0);
  auto three = runtime_->execInContainer(id, {"/bin/sh", "-c", "exit 3"}, 5s);
  ASSERT_TRUE(three.ok()) << three.message();
  EXPECT_EQ(three.value(), 3);

  auto hung = runtime_->execInContainer(id, {"/bin/sleep", "300"}, 500ms);
  ASSERT_FALSE(hung.ok());
  EXPECT_EQ(hung.code(), ErrorCode::kTimeout);
  // Nothing of the probe is left in the container: only the stand-in (and its sleep child).
  auto top = runCommand({"/bin/sh", "-c", "ps -eo args | grep -c '^/bin/sleep 300$' || true"});
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(std::string(trim(top->out)), "0") << "the timed-out probe was killed";

  auto missing = runtime_->execInContainer("qcs-rt-no-such-container", {"/bin/true"}, 1s);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), ErrorCode::kNotFound);
}

TEST_F(ContainerdRuntimeTest, StopEndsTheTaskAndRemoveDeletesTaskContainerAndSnapshot) {
  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  auto refused = runtime_->removeContainer(id, false);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kConflict);

  // The task runs before the stand-in's shell has set its TERM trap; as PID 1 without the trap it
  // would ignore TERM and end by the KILL after the grace time (137).
  ASSERT_TRUE(waitFor([&] { return readFile(logFile(id)).find("alive 1") != std::string::npos; }, 20s));
  auto stopped = runtime_->stopContainer(id, 10s);
  ASSERT_TRUE(stopped.ok()) << stopped.message();
  ContainerInfo info = inspect(id);
  EXPECT_EQ(info.state, ContainerState::kExited);
  EXPECT_EQ(info.exitCode, 143) << "the stand-in traps SIGTERM and exits 143";

  ASSERT_TRUE(runtime_->startContainer(id).ok());
  auto removed = runtime_->removeContainer(id, true);
  ASSERT_TRUE(removed.ok()) << removed.message();
  auto gone = runtime_->inspectContainer(id);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.code(), ErrorCode::kNotFound);
  auto containers = containerd_->cli(std::string("-n ") + kNamespace + " containers ls -q");
  ASSERT_TRUE(containers.ok());
  EXPECT_EQ(containers->find(id), std::string::npos);
  auto snapshots = containerd_->cli(std::string("-n ") + kNamespace + " snapshots --snapshotter overlayfs ls");
  ASSERT_TRUE(snapshots.ok());
  EXPECT_EQ(snapshots->find(id), std::string::npos) << *snapshots;
  EXPECT_EQ(runtime_->removeContainer(id, true).code(), ErrorCode::kNotFound);
}

TEST_F(ContainerdRuntimeTest, ListFindsContainersByLabel) {
  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  // Someone else's container in the same namespace, without the label.
  const std::string other = id + "-other";
  ASSERT_TRUE(containerd_->cli(std::string("-n ") + kNamespace + " containers create " + kImage + " " + other).ok());
  auto managed = runtime_->listContainers({{"io.qcs-agent.managed", "true"}});
  ASSERT_TRUE(managed.ok()) << managed.message();
  std::set<std::string> ids;
  for (const auto& c : managed.value()) ids.insert(c.id);
  EXPECT_TRUE(ids.count(id));
  EXPECT_FALSE(ids.count(other));
  EXPECT_TRUE(containerd_->cli(std::string("-n ") + kNamespace + " containers delete " + other).ok());
}

TEST_F(ContainerdRuntimeTest, TheLogIsCappedAndTheShimKeepsAppending) {
  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  ASSERT_TRUE(waitFor([&] { return readFile(logFile(id)).find("alive 1") != std::string::npos; }, 20s));
  {
    // 200 KiB of old output, appended as the shim does.
    const int fd = ::open(logFile(id).c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0);
    const std::string line(1023, 'x');
    for (int i = 0; i < 200; ++i) ASSERT_EQ(::write(fd, (line + "\n").data(), 1024), 1024);
    ::close(fd);
  }
  ASSERT_TRUE(runtime_->containerStats(id).ok());  // each stats sample enforces the cap
  struct stat after {};
  ASSERT_EQ(::stat(logFile(id).c_str(), &after), 0);
  EXPECT_LT(after.st_size, 64 * 1024);
  EXPECT_GE(readFile(logFile(id) + ".1").size(), 200u * 1024);
  // The shim's O_APPEND writes go on at the new end: fresh lines, no hole of NULs before them.
  ASSERT_TRUE(waitFor([&] { return readFile(logFile(id)).find("standin: alive") != std::string::npos; }, 20s));
  std::string fresh = readFile(logFile(id));
  EXPECT_EQ(fresh.find('\0'), std::string::npos);
}

TEST_F(ContainerdRuntimeTest, EventsReportStartExitOomRemovalAndSurviveARestart) {
  RecordedEvents events;
  auto watcher =
      runtime_->watchEvents({{"io.qcs-agent.managed", "true"}}, [&](const RuntimeEvent& e) { events.add(e); });
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) == 1; }, 10s));

  const std::string id = uniqueId();
  ASSERT_FALSE(createAndStart(id).empty());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kContainerStarted, id) >= 1; }, 10s));
  // A probe's exit is not the task's.
  ASSERT_TRUE(runtime_->execInContainer(id, {"/bin/sh", "-c", "true"}, 5s).ok());
  ASSERT_TRUE(containerd_->cli(std::string("-n ") + kNamespace + " tasks kill -s SIGKILL " + id).ok());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kContainerExited, id) >= 1; }, 10s));
  EXPECT_EQ(events.count(RuntimeEvent::Kind::kContainerExited, id), 1u);
  EXPECT_EQ(events.last(RuntimeEvent::Kind::kContainerExited, id)->exitCode, 137);

  setControl("oom");
  ASSERT_TRUE(runtime_->startContainer(id).ok());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kContainerOom, id) >= 1; }, 30s));

  ASSERT_TRUE(containerd_->restart()) << containerd_->log();
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamLost) >= 1; }, 20s));
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) >= 2; }, 30s));

  // After the restart the stream still delivers.
  ASSERT_TRUE(runtime_->removeContainer(id, true).ok());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kContainerRemoved, id) >= 1; }, 10s));
}

TEST(ContainerdRuntimeHelpers, TaskLogUriIsAFileUri) {
  EXPECT_EQ(runtime::containerd::taskLogUri("/var/log/qcs-agent", "s"), "file:///var/log/qcs-agent/s.log");
  EXPECT_EQ(runtime::containerd::taskLogUri("/var/log/qcs-agent/", "s"), "file:///var/log/qcs-agent/s.log");
}

TEST(ContainerdRuntimeHelpers, OomKillCountsFromTheCgroup) {
  using runtime::containerd::cgroupReportsOomKill;
  EXPECT_FALSE(cgroupReportsOomKill("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"));
  EXPECT_TRUE(cgroupReportsOomKill("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"));
  EXPECT_TRUE(cgroupReportsOomKill("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n"));
  EXPECT_FALSE(cgroupReportsOomKill("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"));
  EXPECT_FALSE(cgroupReportsOomKill(""));
  EXPECT_FALSE(cgroupReportsOomKill("oom_kill_disable 1\n"));
}

TEST(ContainerdRuntimeHelpers, ProcessStartTimeFromProcStat) {
  using runtime::containerd::processStartTime;
  // Field 22 (starttime) is 500 ticks after boot; comm holds a space and a parenthesis.
  const std::string stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 500 1000 10";
  auto at = processStartTime(stat, 1'000'000, 100);
  ASSERT_TRUE(at.has_value());
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>(at->time_since_epoch()).count(), 1'000'005);
  EXPECT_FALSE(processStartTime("garbage", 1'000'000, 100).has_value());
  EXPECT_FALSE(processStartTime("42 (x) S 1 2", 1'000'000, 100).has_value());
}

}  // namespace
}  // namespace qcs::testing

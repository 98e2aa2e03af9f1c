// DockerRuntime against a real, private dockerd (and a real registry for pulls), driven through the
// stand-in sensor image. Every wait is a condition with a deadline.
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness/harness.h"
#include "runtime/detect.h"
#include "runtime/docker/docker_runtime.h"

namespace qcs::runtime::docker {
namespace {

using namespace std::chrono_literals;
using json = nlohmann::json;
using qcs::testing::Dockerd;
using qcs::testing::Registry;
using qcs::testing::TempDir;
using qcs::testing::waitFor;

constexpr auto kDeadline = 30s;
constexpr const char* kSecretValue = "6f1c9a52-secret-activation-0d4e";

// Records what a watcher reports; outlives the watcher (declare it first).
class EventLog {
 public:
  RuntimeEventFn callback() {
    return [this](const RuntimeEvent& event) {
      std::lock_guard lock(mutex_);
      events_.push_back(event);
    };
  }
  std::vector<RuntimeEvent> snapshot() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  int count(RuntimeEvent::Kind kind, const std::string& id = {}) const {
    std::lock_guard lock(mutex_);
    return int(std::count_if(events_.begin(), events_.end(), [&](const RuntimeEvent& event) {
      return event.kind == kind && (id.empty() || event.containerId == id);
    }));
  }
  std::optional<RuntimeEvent> find(RuntimeEvent::Kind kind, const std::string& id) const {
    std::lock_guard lock(mutex_);
    for (const auto& event : events_) {
      if (event.kind == kind && event.containerId == id) return event;
    }
    return std::nullopt;
  }
  bool mentions(const std::string& id) const {
    std::lock_guard lock(mutex_);
    return std::any_of(events_.begin(), events_.end(), [&](const RuntimeEvent& e) { return e.containerId == id; });
  }

 private:
  mutable std::mutex mutex_;
  std::vector<RuntimeEvent> events_;
};

bool anyLineContains(const std::vector<std::string>& lines, const std::string& text) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.find(text) != std::string::npos; });
}

class DockerRuntimeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dockerd_ = Dockerd::start();
    if (!dockerd_) return;
    auto image = qcs::testing::buildStandinImage(*dockerd_);
    if (image.ok()) {
      image_ = *image;
    } else {
      imageError_ = image.message();
    }
  }
  static void TearDownTestSuite() { dockerd_.reset(); }

  void SetUp() override {
    ASSERT_NE(dockerd_, nullptr) << "the private dockerd did not start";
    ASSERT_TRUE(dockerd_->running()) << "an earlier test left dockerd stopped";
    ASSERT_FALSE(image_.empty()) << "building the stand-in image failed: " << imageError_;
    auto connected = connectDocker(dockerd_->socketPath(), 5s);
    ASSERT_TRUE(connected.ok()) << connected.message();
    runtime_ = std::move(connected).value();
  }

  // A test-unique name, so the tests also pass when they share one dockerd.
  static std::string uniqueName(const std::string& base) {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "qcs-" + base + "-" + info->name();
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return name;
  }

  ContainerSpec standinSpec(const std::string& name, const std::map<std::string, std::string>& steering = {}) const {
    ContainerSpec spec;
    spec.name = name;
    spec.image = image_;
    spec.args = {"--registry-sensor", "--perform-sca-scan", "--storage-driver-type", "overlay2"};
    spec.env.push_back(EnvVar{"ACTIVATIONID", kSecretValue, true});
    spec.env.push_back(EnvVar{"POD_URL", "https://cmsqagpublic.example.invalid/ContainerSensor", false});
    spec.env.push_back(EnvVar{"STANDIN_LOG_INTERVAL", "0.2", false});
    for (const auto& [key, value] : steering) spec.env.push_back(EnvVar{key, value, false});
    spec.hostNetwork = true;
    spec.labels = {{"io.qcs-agent.managed", "true"}, {"io.qcs-test", name}};
    return spec;
  }

  std::string createAndStart(const ContainerSpec& spec) {
    auto id = runtime_->createContainer(spec);
    EXPECT_TRUE(id.ok()) << id.message();
    if (!id.ok()) return {};
    auto started = runtime_->startContainer(*id);
    EXPECT_TRUE(started.ok()) << started.message();
    return *id;
  }

  bool waitForState(const std::string& id, ContainerState state, std::chrono::milliseconds deadline = kDeadline) {
    return waitFor(
        [&] {
          auto info = runtime_->inspectContainer(id);
          return info.ok() && info->state == state;
        },
        deadline);
  }

  json dockerInspect(const std::string& id) {
    auto raw = dockerd_->cli("inspect " + id);
    EXPECT_TRUE(raw.ok()) << raw.message();
    json parsed = json::parse(raw.ok() ? *raw : std::string("[]"), nullptr, false);
    return parsed.is_array() && !parsed.empty() ? parsed[0] : json::object();
  }

  static std::unique_ptr<Dockerd> dockerd_;
  static std::string image_;
  static std::string imageError_;
  std::unique_ptr<ContainerRuntime> runtime_;
};

std::unique_ptr<Dockerd> DockerRuntimeTest::dockerd_;
std::string DockerRuntimeTest::image_;
std::string DockerRuntimeTest::imageError_;

TEST_F(DockerRuntimeTest, PingsAndNegotiatesTheApiVersion) {
  auto serverApi = dockerd_->cli("version --format '{{.Server.APIVersion}}'");
  ASSERT_TRUE(serverApi.ok()) << serverApi.message();
  const int serverMinor = std::stoi(serverApi->substr(serverApi->find('.') + 1));
  const std::string expected = "1." + std::to_string(std::min(serverMinor, kMaxApiMinor));

  EXPECT_TRUE(runtime_->ping().ok());
  EXPECT_EQ(runtime_->info().kind, "docker");
  EXPECT_EQ(runtime_->info().endpoint, dockerd_->socketPath());
  EXPECT_EQ(runtime_->info().apiVersion, expected);
  auto serverVersion = dockerd_->cli("version --format '{{.Server.Version}}'");
  ASSERT_TRUE(serverVersion.ok());
  EXPECT_EQ(runtime_->info().version, *serverVersion);

  std::string detail;
  EXPECT_EQ(probeDocker(dockerd_->socketPath(), 3s, detail), ProbeOutcome::kAnswered) << detail;
  EXPECT_NE(detail.find(*serverVersion), std::string::npos) << detail;

  // Detection with the build's real prober picks an explicit endpoint that answers.
  DetectOptions options;
  options.endpoint = "unix://" + dockerd_->socketPath();
  auto detection = detectRuntime(options, defaultProbe());
  ASSERT_TRUE(detection.chosen.has_value()) << describeDetection(detection);
  EXPECT_EQ(detection.chosen->kind, "docker");
  EXPECT_EQ(detection.chosen->path, dockerd_->socketPath());
}

TEST_F(DockerRuntimeTest, CreateSendsTheWholeSpec) {
  TempDir roSource;
  TempDir rwSource;
  ContainerSpec spec = standinSpec(uniqueName("spec"));
  spec.mounts = {Mount{roSource.path(), "/var/lib/docker", true}, Mount{rwSource.path(), "/standin", false}};
  spec.capAdd = {"SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"};
  spec.privileged = false;
  spec.resources = Resources{250, 500, 512LL << 20, 1LL << 30};
  spec.log.driver = "json-file";
  spec.log.options = {{"max-size", "10m"}, {"max-file", "2"}};
  spec.labels["io.qcs-agent.spec-hash"] = "abc123";

  auto id = runtime_->createContainer(spec);
  ASSERT_TRUE(id.ok()) << id.message();

  json inspected = dockerInspect(*id);
  const json& config = inspected["Config"];
  const json& host = inspected["HostConfig"];
  EXPECT_EQ(config["Cmd"], json(spec.args));
  EXPECT_EQ(config["Entrypoint"], json({"/sensor"}));
  std::vector<std::string> envNames;
  for (const auto& entry : config["Env"])
    envNames.push_back(entry.get<std::string>().substr(0, entry.get<std::string>().find('=')));
  for (const char* name : {"ACTIVATIONID", "POD_URL", "STANDIN_LOG_INTERVAL"}) {
    EXPECT_NE(std::find(envNames.begin(), envNames.end(), name), envNames.end()) << name;
  }
  ASSERT_EQ(host["Mounts"].size(), 2u);
  EXPECT_EQ(host["Mounts"][0]["Type"], "bind");
  EXPECT_EQ(host["Mounts"][0]["Source"], roSource.path());
  EXPECT_EQ(host["Mounts"][0]["Target"], "/var/lib/docker");
  EXPECT_EQ(host["Mounts"][0]["ReadOnly"], true);
  EXPECT_EQ(host["Mounts"][1]["Target"], "/standin");
  EXPECT_FALSE(host["Mounts"][1].value("ReadOnly", false));
  EXPECT_EQ(host["CapAdd"], json(spec.capAdd));
  EXPECT_EQ(host["Privileged"], false);
  EXPECT_EQ(host["NetworkMode"], "host");
  EXPECT_EQ(host["RestartPolicy"]["Name"], "no");
  EXPECT_EQ(host["CpuShares"], 256);
  EXPECT_EQ(host["NanoCpus"], 500000000);
  EXPECT_EQ(host["Memory"], 1LL << 30);
  EXPECT_EQ(host["MemoryReservation"], 512LL << 20);
  EXPECT_EQ(host["LogConfig"]["Type"], "json-file");
  EXPECT_EQ(host["LogConfig"]["Config"]["max-size"], "10m");
  EXPECT_EQ(config["Labels"]["io.qcs-agent.managed"], "true");
  EXPECT_EQ(config["Labels"]["io.qcs-agent.spec-hash"], "abc123");

  auto info = runtime_->inspectContainer(spec.name);
  ASSERT_TRUE(info.ok()) << info.message();
  EXPECT_EQ(info->id, *id);
  EXPECT_EQ(info->name, spec.name);
  EXPECT_EQ(info->image, image_);
  EXPECT_EQ(info->imageId.rfind("sha256:", 0), 0u) << info->imageId;
  EXPECT_EQ(info->state, ContainerState::kCreated);
  EXPECT_EQ(info->labels, spec.labels);
  EXPECT_EQ(info->startedAt, "");
  EXPECT_FALSE(info->startedAtTime.has_value());
  auto imageId = runtime_->imageId(image_);
  ASSERT_TRUE(imageId.ok()) << imageId.message();
  EXPECT_EQ(*imageId, info->imageId);
  EXPECT_TRUE(runtime_->removeContainer(*id, true).ok());
}

TEST_F(DockerRuntimeTest, StartRunsTheSensorAndLogTailShowsArgsAndEnvNames) {
  const ContainerSpec spec = standinSpec(uniqueName("run"));
  const auto before = std::chrono::system_clock::now();
  const std::string id = createAndStart(spec);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(waitForState(id, ContainerState::kRunning));
  auto info = runtime_->inspectContainer(id);
  ASSERT_TRUE(info.ok());
  ASSERT_TRUE(info->startedAtTime.has_value()) << info->startedAt;
  EXPECT_GE(*info->startedAtTime, before - 5s);
  EXPECT_LE(*info->startedAtTime, std::chrono::system_clock::now() + 5s);

  std::vector<std::string> lines;
  ASSERT_TRUE(waitFor(
      [&] {
        auto tail = runtime_->logTail(id, 1000);
        if (tail.ok()) lines = *tail;
        return tail.ok() && anyLineContains(lines, "standin: alive 2");
      },
      kDeadline));
  EXPECT_TRUE(
      anyLineContains(lines, "standin: args: --registry-sensor --perform-sca-scan --storage-driver-type overlay2"));
  EXPECT_TRUE(anyLineContains(lines, "ACTIVATIONID"));
  EXPECT_TRUE(anyLineContains(lines, "POD_URL"));
  EXPECT_FALSE(anyLineContains(lines, kSecretValue)) << "the stand-in must print env names only";
  auto lastTwo = runtime_->logTail(id, 2);
  ASSERT_TRUE(lastTwo.ok());
  EXPECT_EQ(lastTwo->size(), 2u);

  // Starting a running container is fine (304); the stand-in stops at once on TERM.
  EXPECT_TRUE(runtime_->startContainer(id).ok());
  const auto stopAsked = std::chrono::steady_clock::now();
  auto stopped = runtime_->stopContainer(id, 20s);
  ASSERT_TRUE(stopped.ok()) << stopped.message();
  EXPECT_LT(std::chrono::steady_clock::now() - stopAsked, 10s);
  info = runtime_->inspectContainer(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, ContainerState::kExited);
  EXPECT_EQ(info->exitCode, 143);
  EXPECT_FALSE(info->finishedAt.empty());
  EXPECT_TRUE(runtime_->stopContainer(id, 1s).ok()) << "stopping a stopped container is a no-op";
  EXPECT_TRUE(runtime_->removeContainer(id, false).ok());
  EXPECT_EQ(runtime_->inspectContainer(id).code(), ErrorCode::kNotFound);
}

TEST_F(DockerRuntimeTest, ExitCodeIsObservedThroughInspect) {
  const std::string id =
      createAndStart(standinSpec(uniqueName("exit"), {{"STANDIN_MODE", "exit"}, {"STANDIN_EXIT_CODE", "24"}}));
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(waitForState(id, ContainerState::kExited));
  auto info = runtime_->inspectContainer(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->exitCode, 24);
  EXPECT_FALSE(info->oomKilled);
  EXPECT_FALSE(info->finishedAt.empty());
  EXPECT_TRUE(info->startedAtTime.has_value());
  auto tail = runtime_->logTail(id, 10);
  ASSERT_TRUE(tail.ok());
  EXPECT_TRUE(anyLineContains(*tail, "standin: exiting with 24"));
  EXPECT_TRUE(runtime_->removeContainer(id, false).ok());
}

TEST_F(DockerRuntimeTest, ExecInContainerReturnsExitCodesAndTimesOut) {
  const std::string id = createAndStart(standinSpec(uniqueName("exec")));
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(waitForState(id, ContainerState::kRunning));

  auto ok = runtime_->execInContainer(id, {"/bin/sh", "-c", "exit 0"}, 10s);
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(*ok, 0);
  auto three = runtime_->execInContainer(id, {"/bin/sh", "-c", "exit 3"}, 10s);
  ASSERT_TRUE(three.ok()) << three.message();
  EXPECT_EQ(*three, 3);
  auto missing = runtime_->execInContainer(id, {"/no/such/program"}, 10s);
  // Docker refuses to start it (HTTP 400, named in the message); either way the probe fails.
  if (missing.ok()) {
    EXPECT_NE(*missing, 0);
  } else {
    EXPECT_EQ(missing.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(missing.message().find("/no/such/program"), std::string::npos);
  }

  const auto asked = std::chrono::steady_clock::now();
  auto slow = runtime_->execInContainer(id, {"/bin/sh", "-c", "sleep 30"}, 500ms);
  const auto took = std::chrono::steady_clock::now() - asked;
  EXPECT_EQ(slow.code(), ErrorCode::kTimeout) << (slow.ok() ? "finished" : slow.message());
  EXPECT_GE(took, 500ms);
  EXPECT_LT(took, 5s) << "the wait is bounded by the probe's timeout";

  // The stand-in writes a line every 0.2s: its newest line is recent.
  const auto before = std::chrono::system_clock::now();
  std::optional<std::chrono::system_clock::time_point> last;
  ASSERT_TRUE(waitFor(
      [&] {
        auto answer = runtime_->lastOutputTime(id, before);
        if (answer.ok()) last = *answer;
        return answer.ok() && last.has_value();
      },
      kDeadline));
  EXPECT_GE(*last, before);
  EXPECT_LE(*last, std::chrono::system_clock::now() + 1s);
  auto future = runtime_->lastOutputTime(id, std::chrono::system_clock::now() + 1h);
  ASSERT_TRUE(future.ok()) << future.message();
  EXPECT_FALSE(future->has_value());

  ASSERT_TRUE(runtime_->stopContainer(id, 5s).ok());
  EXPECT_EQ(runtime_->execInContainer(id, {"/bin/true"}, 1s).code(), ErrorCode::kConflict);
  EXPECT_TRUE(runtime_->removeContainer(id, true).ok());
  EXPECT_EQ(runtime_->execInContainer(id, {"/bin/true"}, 1s).code(), ErrorCode::kNotFound);
}

TEST_F(DockerRuntimeTest, OomKillIsReportedByInspectAndEvents) {
  const std::string name = uniqueName("oom");
  EventLog events;
  auto watcher = runtime_->watchEvents({{"io.qcs-test", name}}, events.callback());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) == 1; }, kDeadline));

  ContainerSpec spec = standinSpec(name, {{"STANDIN_MODE", "oom"}, {"STANDIN_OOM_SIZE", "256M"}});
  spec.resources.memoryLimitBytes = 16LL << 20;
  const std::string id = createAndStart(spec);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(waitForState(id, ContainerState::kExited));
  auto info = runtime_->inspectContainer(id);
  ASSERT_TRUE(info.ok());
  auto logs = runtime_->logTail(id, 20);
  std::string output = logs.ok() ? ::testing::PrintToString(logs.value()) : logs.message();
  EXPECT_TRUE(info->oomKilled) << "exit code " << info->exitCode << "; output " << output;
  EXPECT_EQ(info->exitCode, 137) << output;

  ASSERT_TRUE(waitFor([&] { return events.find(RuntimeEvent::Kind::kContainerExited, id).has_value(); }, kDeadline));
  // The OOM notice and the exit travel separate paths in dockerd: wait for it rather than expect it first.
  EXPECT_TRUE(waitFor([&] { return events.find(RuntimeEvent::Kind::kContainerOom, id).has_value(); }, kDeadline))
      << "events: started " << events.count(RuntimeEvent::Kind::kContainerStarted) << ", exited "
      << events.count(RuntimeEvent::Kind::kContainerExited) << ", oom "
      << events.count(RuntimeEvent::Kind::kContainerOom);
  EXPECT_EQ(events.find(RuntimeEvent::Kind::kContainerExited, id)->exitCode, 137);
  EXPECT_TRUE(runtime_->removeContainer(id, false).ok());
}

TEST_F(DockerRuntimeTest, WatcherReportsLabelledContainersOnly) {
  const std::string name = uniqueName("events");
  EventLog events;
  auto watcher = runtime_->watchEvents({{"io.qcs-test", name}, {"io.qcs-agent.managed", "true"}}, events.callback());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) == 1; }, kDeadline));

  // First a container without our labels: its whole life happens before the labelled one's.
  ContainerSpec unlabelled = standinSpec(name + "-other", {{"STANDIN_MODE", "exit"}, {"STANDIN_EXIT_CODE", "5"}});
  unlabelled.labels = {{"io.qcs-agent.managed", "true"}};  // one label matches, the other does not
  const std::string otherId = createAndStart(unlabelled);
  ASSERT_FALSE(otherId.empty());
  ASSERT_TRUE(waitForState(otherId, ContainerState::kExited));
  ASSERT_TRUE(runtime_->removeContainer(otherId, true).ok());

  const std::string id =
      createAndStart(standinSpec(name, {{"STANDIN_MODE", "exit"}, {"STANDIN_EXIT_CODE", "3"}, {"STANDIN_AFTER", "1"}}));
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(waitFor([&] { return events.find(RuntimeEvent::Kind::kContainerExited, id).has_value(); }, kDeadline));
  EXPECT_TRUE(events.find(RuntimeEvent::Kind::kContainerStarted, id).has_value());
  EXPECT_EQ(events.find(RuntimeEvent::Kind::kContainerExited, id)->exitCode, 3);
  ASSERT_TRUE(runtime_->removeContainer(id, false).ok());
  ASSERT_TRUE(waitFor([&] { return events.find(RuntimeEvent::Kind::kContainerRemoved, id).has_value(); }, kDeadline));

  // The stream is ordered: had the other container's events passed the filter, they would be here.
  EXPECT_FALSE(events.mentions(otherId));
  EXPECT_EQ(events.count(RuntimeEvent::Kind::kStreamLost), 0);
  // Order of one container's life: started, exited, removed.
  std::vector<RuntimeEvent::Kind> kinds;
  for (const auto& event : events.snapshot()) {
    if (event.containerId == id) kinds.push_back(event.kind);
  }
  EXPECT_EQ(kinds, (std::vector<RuntimeEvent::Kind>{RuntimeEvent::Kind::kContainerStarted,
                                                    RuntimeEvent::Kind::kContainerExited,
                                                    RuntimeEvent::Kind::kContainerRemoved}));
}

TEST_F(DockerRuntimeTest, WatcherSurvivesADockerdRestart) {
  const std::string name = uniqueName("restart");
  EventLog events;
  auto watcher = runtime_->watchEvents({{"io.qcs-test", name}}, events.callback());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) == 1; }, kDeadline));

  dockerd_->stop();
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamLost) >= 1; }, kDeadline));
  auto lost = events.snapshot().back();
  EXPECT_EQ(lost.kind, RuntimeEvent::Kind::kStreamLost);
  EXPECT_FALSE(lost.detail.empty());
  EXPECT_EQ(runtime_->ping().code(), ErrorCode::kUnavailable) << "dockerd is stopped";

  ASSERT_TRUE(dockerd_->restart());
  // Reconnect backoff is capped at 30s; it is far lower after a few seconds of outage.
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) >= 2; }, 45s));
  EXPECT_EQ(events.count(RuntimeEvent::Kind::kStreamLost), 1) << "repeated failed reconnects report once";

  // Events flow on the new stream.
  const std::string id = createAndStart(standinSpec(name));
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(waitFor([&] { return events.find(RuntimeEvent::Kind::kContainerStarted, id).has_value(); }, kDeadline));
  EXPECT_TRUE(runtime_->removeContainer(id, true).ok());
}

TEST_F(DockerRuntimeTest, DestroyingTheWatcherStopsItAtOnce) {
  EventLog events;
  auto watcher = runtime_->watchEvents({{"io.qcs-test", uniqueName("stop")}}, events.callback());
  ASSERT_TRUE(waitFor([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) == 1; }, kDeadline));
  const auto start = std::chrono::steady_clock::now();
  watcher.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_EQ(events.count(RuntimeEvent::Kind::kStreamLost), 0) << "a deliberate stop is not a lost stream";
}

TEST_F(DockerRuntimeTest, NameConflictIsAlreadyExists) {
  const ContainerSpec spec = standinSpec(uniqueName("dup"));
  auto first = runtime_->createContainer(spec);
  ASSERT_TRUE(first.ok()) << first.message();
  auto second = runtime_->createContainer(spec);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(second.message().find(spec.name), std::string::npos) << second.message();
  EXPECT_EQ(second.message().find(kSecretValue), std::string::npos) << "no request body in errors";
  EXPECT_TRUE(runtime_->removeContainer(*first, true).ok());
}

TEST_F(DockerRuntimeTest, MissingObjectsAreNotFound) {
  const std::string missing = "qcs-no-such-container";
  EXPECT_EQ(runtime_->removeContainer(missing, true).code(), ErrorCode::kNotFound);
  EXPECT_EQ(runtime_->inspectContainer(missing).code(), ErrorCode::kNotFound);
  EXPECT_EQ(runtime_->startContainer(missing).code(), ErrorCode::kNotFound);
  EXPECT_EQ(runtime_->stopContainer(missing, 1s).code(), ErrorCode::kNotFound);
  EXPECT_EQ(runtime_->logTail(missing, 10).code(), ErrorCode::kNotFound);

  auto present = runtime_->imagePresent("qcs-no-such-image:1");
  ASSERT_TRUE(present.ok()) << present.message();
  EXPECT_FALSE(*present);
  auto here = runtime_->imagePresent(image_);
  ASSERT_TRUE(here.ok());
  EXPECT_TRUE(*here);
  auto id = runtime_->imageId("qcs-no-such-image:1");
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "");

  ContainerSpec spec = standinSpec(uniqueName("noimage"));
  spec.image = "qcs-no-such-image:1";
  auto created = runtime_->createContainer(spec);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.code(), ErrorCode::kNotFound);
  EXPECT_EQ(created.message().find(kSecretValue), std::string::npos);
}

TEST_F(DockerRuntimeTest, ListFiltersByAllLabelsAndInspectsEach) {
  const std::string name = uniqueName("list");
  ContainerSpec a = standinSpec(name + "-a", {{"STANDIN_MODE", "exit"}, {"STANDIN_EXIT_CODE", "9"}});
  ContainerSpec b = standinSpec(name + "-b");
  ContainerSpec other = standinSpec(name + "-other");
  a.labels["io.qcs-list"] = name;
  a.labels["io.qcs-extra"] = "yes";
  b.labels["io.qcs-list"] = name;
  other.labels["io.qcs-list"] = "someone-else";
  const std::string idA = createAndStart(a);
  auto idB = runtime_->createContainer(b);
  auto idOther = runtime_->createContainer(other);
  ASSERT_TRUE(idB.ok() && idOther.ok());
  ASSERT_TRUE(waitForState(idA, ContainerState::kExited));

  auto both = runtime_->listContainers({{"io.qcs-list", name}});
  ASSERT_TRUE(both.ok()) << both.message();
  ASSERT_EQ(both->size(), 2u);
  std::map<std::string, ContainerInfo> byId;
  for (const auto& info : *both) byId[info.id] = info;
  ASSERT_EQ(byId.count(idA), 1u);
  ASSERT_EQ(byId.count(*idB), 1u);
  EXPECT_EQ(byId[idA].exitCode, 9) << "list fills in what summaries lack";
  EXPECT_EQ(byId[idA].state, ContainerState::kExited);
  EXPECT_EQ(byId[*idB].state, ContainerState::kCreated);
  EXPECT_EQ(byId[*idB].name, b.name);

  auto one = runtime_->listContainers({{"io.qcs-list", name}, {"io.qcs-extra", "yes"}});
  ASSERT_TRUE(one.ok());
  ASSERT_EQ(one->size(), 1u);
  EXPECT_EQ(one->front().id, idA);

  for (const auto& id : {idA, *idB, *idOther}) EXPECT_TRUE(runtime_->removeContainer(id, true).ok());
  auto none = runtime_->listContainers({{"io.qcs-list", name}});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(DockerRuntimeTest, LogTailReadsATtyStreamToo) {
  const std::string name = uniqueName("tty");
  auto id = dockerd_->cli("create -t --network none --name " + name + " -e STANDIN_MODE=exit -e STANDIN_EXIT_CODE=0 " +
                          image_ + " --tty-arg");
  ASSERT_TRUE(id.ok()) << id.message();
  ASSERT_TRUE(runtime_->startContainer(*id).ok());
  ASSERT_TRUE(waitForState(*id, ContainerState::kExited));
  auto tail = runtime_->logTail(*id, 100);
  ASSERT_TRUE(tail.ok()) << tail.message();
  EXPECT_TRUE(anyLineContains(*tail, "standin: args: --tty-arg"));
  for (const auto& line : *tail) EXPECT_EQ(line.find('\r'), std::string::npos) << "CRLF of the TTY is trimmed";
  EXPECT_TRUE(runtime_->removeContainer(*id, true).ok());
}

// ---- Pulls from a real registry with htpasswd auth ---------------------------------------------

class DockerPullTest : public DockerRuntimeTest {
 protected:
  static void SetUpTestSuite() {
    DockerRuntimeTest::SetUpTestSuite();
    if (!dockerd_ || image_.empty()) return;
    registry_ = Registry::start("qcs", "right-password");
    if (!registry_) return;
    auto pushed = registry_->push(*dockerd_, image_, "qcs/standin:1");
    if (!pushed.ok()) {
      pushError_ = pushed.message();
      return;
    }
    remote_ = registry_->address() + "/qcs/standin:1";
  }
  static void TearDownTestSuite() {
    registry_.reset();
    DockerRuntimeTest::TearDownTestSuite();
  }
  void SetUp() override {
    DockerRuntimeTest::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_NE(registry_, nullptr) << "the registry did not start";
    ASSERT_FALSE(remote_.empty()) << "pushing the stand-in failed: " << pushError_;
    // Each test pulls into a daemon that does not hold the image.
    (void)dockerd_->cli("rmi " + remote_);
    auto present = runtime_->imagePresent(remote_);
    ASSERT_TRUE(present.ok() && !*present);
  }
  RegistryCredentials credentials(const std::string& password) const {
    return RegistryCredentials{"qcs", password, "", registry_->address()};
  }

  static std::unique_ptr<Registry> registry_;
  static std::string remote_;
  static std::string pushError_;
};

std::unique_ptr<Registry> DockerPullTest::registry_;
std::string DockerPullTest::remote_;
std::string DockerPullTest::pushError_;

TEST_F(DockerPullTest, PullWithTheRightPasswordSucceeds) {
  std::vector<PullProgress> progress;
  auto pulled = runtime_->pullImage(remote_, credentials("right-password"),
                                    [&](const PullProgress& p) { progress.push_back(p); });
  ASSERT_TRUE(pulled.ok()) << pulled.message();
  auto present = runtime_->imagePresent(remote_);
  ASSERT_TRUE(present.ok());
  EXPECT_TRUE(*present);
  EXPECT_FALSE(progress.empty());
  EXPECT_TRUE(std::any_of(progress.begin(), progress.end(), [](const PullProgress& p) {
    return p.status.find("Downloaded newer image") != std::string::npos ||
           p.status.find("Image is up to date") != std::string::npos;
  }));
  auto id = runtime_->imageId(remote_);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(id->rfind("sha256:", 0), 0u);
}

TEST_F(DockerPullTest, WrongPasswordIsUnauthenticatedWithTheRegistryMessage) {
  auto pulled = runtime_->pullImage(remote_, credentials("wrong-password"), {});
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.code(), ErrorCode::kUnauthenticated) << pulled.message();
  EXPECT_NE(pulled.message().find("pulling " + remote_ + ": "), std::string::npos) << pulled.message();
  EXPECT_NE(pulled.message().find("unauthorized"), std::string::npos) << pulled.message();
  EXPECT_EQ(pulled.message().find("wrong-password"), std::string::npos) << "no credentials in errors";

  auto anonymous = runtime_->pullImage(remote_, std::nullopt, {});
  ASSERT_FALSE(anonymous.ok());
  EXPECT_EQ(anonymous.code(), ErrorCode::kUnauthenticated) << anonymous.message();
}

TEST_F(DockerPullTest, UnknownTagIsNotFound) {
  const std::string missing = registry_->address() + "/qcs/standin:no-such-tag";
  auto pulled = runtime_->pullImage(missing, credentials("right-password"), {});
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.code(), ErrorCode::kNotFound) << pulled.message();
  EXPECT_NE(pulled.message().find("pulling " + missing + ": "), std::string::npos) << pulled.message();
}

// ---- Connecting to sockets that are not (or not yet) a Docker daemon ---------------------------

// A unix socket bound at path; listening (but never accepting) when listen is set.
int makeUnixSocket(const std::string& path, bool listen) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) return -1;
  if (listen && ::listen(fd, 16) != 0) return -1;
  return fd;
}

TEST(DockerConnectTest, MissingSocketSaysSo) {
  TempDir dir;
  const std::string path = dir.file("docker.sock");
  auto connected = connectDocker(path, 1s);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(connected.message(),
            "docker: no socket at " + path + " (is the docker daemon running? is the path right?)");
  std::string detail;
  EXPECT_EQ(probeDocker(path, 1s, detail), ProbeOutcome::kAbsent);
}

TEST(DockerConnectTest, SocketWithoutListenerIsNothingListens) {
  TempDir dir;
  const std::string path = dir.file("docker.sock");
  const int fd = makeUnixSocket(path, false);
  ASSERT_GE(fd, 0);
  auto connected = connectDocker(path, 1s);
  ::close(fd);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(connected.message(), "docker: nothing listens on " + path + " (is the docker daemon running?)");
}

TEST(DockerConnectTest, SocketThatNeverAnswersTimesOut) {
  TempDir dir;
  const std::string path = dir.file("docker.sock");
  const int fd = makeUnixSocket(path, true);
  ASSERT_GE(fd, 0);
  const auto start = std::chrono::steady_clock::now();
  auto connected = connectDocker(path, 500ms);
  const auto took = std::chrono::steady_clock::now() - start;
  std::string detail;
  const ProbeOutcome outcome = probeDocker(path, 300ms, detail);
  ::close(fd);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.code(), ErrorCode::kTimeout);
  EXPECT_NE(connected.message().find("docker: " + path + " did not answer within 500ms"), std::string::npos)
      << connected.message();
  EXPECT_LT(took, 3s);
  EXPECT_EQ(outcome, ProbeOutcome::kNotAnswering);
  EXPECT_NE(detail.find("did not answer within 300ms"), std::string::npos) << detail;
}

TEST(DockerConnectTest, RegularFileIsNotASocket) {
  TempDir dir;
  const std::string path = dir.file("docker.sock");
  ASSERT_TRUE(qcs::testing::writeFile(path, "not a socket"));
  std::string detail;
  EXPECT_EQ(probeDocker(path, 1s, detail), ProbeOutcome::kNotASocket);
  auto connected = connectDocker(path, 1s);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.code(), ErrorCode::kUnavailable) << connected.message();
}

TEST(DockerConnectTest, PermissionDeniedNamesTheUidAndTheGroup) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to drop to another uid";
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);
  const std::string path = dir.file("docker.sock");
  const int fd = makeUnixSocket(path, true);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::chmod(path.c_str(), 0660), 0);
  ASSERT_EQ(::chown(path.c_str(), 0, 0), 0);

  // The client runs as nobody in a child process; the parent reads its message.
  int pipeFds[2];
  ASSERT_EQ(::pipe(pipeFds), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipeFds[0]);
    if (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    auto connected = connectDocker(path, 1s);
    std::string detail;
    const ProbeOutcome outcome = probeDocker(path, 1s, detail);
    std::string report = connected.ok() ? std::string("connected") : connected.message();
    report += "\n" + std::to_string(int(connected.ok() ? ErrorCode::kInternal : connected.code())) + "\n" +
              std::to_string(int(outcome)) + "\n";
    (void)!::write(pipeFds[1], report.data(), report.size());
    ::_exit(0);
  }
  ::close(pipeFds[1]);
  std::string report;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipeFds[0], buffer, sizeof(buffer))) > 0;) report.append(buffer, size_t(n));
  ::close(pipeFds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(fd);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;

  std::istringstream lines(report);
  std::string message, code, outcome;
  std::getline(lines, message);
  std::getline(lines, code);
  std::getline(lines, outcome);
  EXPECT_EQ(message, "docker: permission denied on " + path +
                         " (the agent runs as uid 65534; add it to group root or run as root)");
  EXPECT_EQ(code, std::to_string(int(ErrorCode::kPermissionDenied)));
  EXPECT_EQ(outcome, std::to_string(int(ProbeOutcome::kPermissionDenied)));
}

}  // namespace
}  // namespace qcs::runtime::docker

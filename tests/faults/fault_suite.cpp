#include "faults/fault_suite.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "agent/http_server.h"
#include "common/encoding.h"
#include "faults/fault_report.h"
#include "faults/runtime_target.h"
#include "faults/tcp_gate.h"
#include "harness/aws_emulator.h"
#include "harness/harness.h"

namespace qcs::faults {

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::milliseconds;

constexpr const char* kSensorName = "qcs-fault-sensor";
constexpr const char* kSecretId = "qcs/fault-suite-ids";
constexpr const char* kRegistryUser = "qcs";
constexpr const char* kRegion = "us-east-1";
constexpr const char* kFiller = "qcs-fault-filler";

// The agent's supervision settings: short, so that even an irrecoverable exit (which waits
// backoff.max) recovers within seconds.
constexpr const char* kBackoff = "{initial: 200ms, max: 2s, multiplier: 2, jitter: 0.1, reset_after: 10s}";
constexpr const char* kReconcileInterval = "3s";
constexpr const char* kSecretsRefresh = "2s";
constexpr const char* kStandinLogInterval = "0.2";

constexpr milliseconds kRecoveryDeadline = 60s;
constexpr milliseconds kLeakGrace = 15s;
constexpr milliseconds kTwoAgentsExitDeadline = 15s;

double msBetween(SteadyClock::time_point from, SteadyClock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

std::string utcNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[64];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

// A random version-4 UUID: distinctive values to look for everywhere they must not be.
std::string randomUuid() {
  std::random_device device;
  std::mt19937_64 random((uint64_t(device()) << 32) ^ device());
  std::string hex;
  for (int i = 0; i < 4; ++i) {
    char part[17];
    std::snprintf(part, sizeof(part), "%016llx", static_cast<unsigned long long>(random()));
    hex += part;
  }
  hex[12] = '4';
  hex[16] = "89ab"[random() % 4];
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" + hex.substr(16, 4) + "-" +
         hex.substr(20, 12);
}

std::string firstLine(const std::string& text) {
  auto line = std::string(trim(text));
  auto end = line.find('\n');
  return end == std::string::npos ? line : line.substr(0, end);
}

std::string commandOutput(const std::vector<std::string>& argv) {
  auto result = testing::runCommand(argv, {}, 30s);
  if (!result || result->exitCode != 0) return "unknown";
  return firstLine(result->out.empty() ? result->err : result->out);
}

std::string cgroupVersion() {
  struct statfs fs {};
  if (::statfs("/sys/fs/cgroup", &fs) != 0) return "unknown";
  constexpr long kCgroup2Magic = 0x63677270;
  return fs.f_type == kCgroup2Magic ? "v2 (unified)" : "v1 (legacy/hybrid)";
}

std::string memTotal() {
  std::istringstream in(testing::readFile("/proc/meminfo"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("MemTotal:", 0) == 0) return std::string(trim(line.substr(9)));
  }
  return "unknown";
}

// Fills the filesystem holding dir with one file until the kernel refuses more; its path.
Result<std::string> fillFilesystem(const std::string& dir) {
  const std::string path = dir + "/" + kFiller;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return makeError(ErrorCode::kInternal, "creating " + path + ": " + std::strerror(errno));
  std::string chunk(1 << 20, '\0');
  size_t size = chunk.size();
  for (;;) {
    const ssize_t n = ::write(fd, chunk.data(), size);
    if (n > 0) continue;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ENOSPC && size > 1) {
      size /= 2;  // the last pages: smaller and smaller writes until not one byte fits
      continue;
    }
    break;
  }
  ::fsync(fd);
  ::close(fd);
  return path;
}

uint64_t freeBytes(const std::string& dir) {
  struct statvfs fs {};
  if (::statvfs(dir.c_str(), &fs) != 0) return 0;
  return uint64_t(fs.f_bavail) * fs.f_frsize;
}

// Appends newlines to the file until its end falls on a block boundary (or the filesystem refuses
// even that); false when the file cannot be opened.
bool padToBlockEnd(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  for (int i = 0; i < 65536 && ::fstat(fd, &st) == 0 && st.st_blksize > 0 && st.st_size % st.st_blksize != 0; ++i) {
    if (::write(fd, "\n", 1) != 1) break;
  }
  ::close(fd);
  return true;
}

struct Agent {
  std::unique_ptr<testing::Process> process;
  std::string address;  // of its HTTP endpoints, once it logged it
};

struct Outcome {
  bool recovered = false;
  double ms = 0;
  std::string why;                        // when it did not recover
  std::vector<std::string> observations;  // counted per label in the tally
  std::string detail;                     // for the progress line
};

class Suite {
 public:
  explicit Suite(const SuiteOptions& options) : options_(options), rng_(options.seed) {}
  int run();

 private:
  // ---- set-up
  bool setUpShared();
  std::unique_ptr<RuntimeTarget> startTarget(const std::string& runtime);
  std::string agentYaml() const;

  // ---- the agent
  std::unique_ptr<Agent> spawnAgent(const std::string& role);
  void endAgent(std::unique_ptr<Agent>& agent, int sig);
  std::string address(Agent& agent);
  json status(Agent& agent);
  std::string metrics(Agent& agent);
  bool agentRunsSensor(Agent& agent, const SensorInstance& sensor);

  // ---- waiting
  std::optional<SensorInstance> runningSensor();
  bool steady();
  bool restore(std::string& why);
  // The sensor runs again: a start recorded after afterSeq of another instance than `before`, which
  // the runtime reports running and the agent reports as its running sensor. The time of that start.
  std::optional<SteadyClock::time_point> waitRecovered(const std::string& before, uint64_t afterSeq,
                                                       milliseconds deadline, std::string& why);
  std::optional<SteadyClock::time_point> waitReadopted(const SensorInstance& before, milliseconds deadline,
                                                       std::string& why);
  void writeControl(const std::string& line);

  // ---- the faults
  Outcome inject(const std::string& fault);
  // The shape of the faults whose recovery is "the agent runs the sensor again": notes the running
  // instance and the event sequence, injects (`what` names the injection in a failure), waits for
  // another instance to run, then asks `check` (if any) for a reason the recovery does not count.
  // Time to recovery is from just before the injection.
  Outcome injectAndAwaitRestart(const std::string& what, const std::function<Status()>& injection,
                                const std::function<std::string()>& check = {});
  Outcome sensorSigkill();
  Outcome sensorExit(const std::string& control, int expectedCode, bool oom);
  Outcome containerRemoved();
  Outcome imageRemoved();
  Outcome registryDown();
  Outcome secretSourceDown();
  Outcome daemonOutage(bool removeSocket);
  double measurePullWindow();
  Outcome agentSigkill();
  Outcome twoAgents();
  Outcome diskFull();

  // ---- after each injection
  void checkLeaks(FaultTally& tally, int iteration);
  void checkSecrets(FaultTally& tally, int iteration);

  void runRuntime(const std::string& runtime);
  void writeReport();
  void say(const std::string& line) const;

  SuiteOptions options_;
  std::mt19937_64 rng_;
  testing::TempDir work_{"qcs-faults-"};
  std::unique_ptr<testing::Registry> registry_;
  std::unique_ptr<TcpGate> registryGate_;
  std::unique_ptr<testing::AwsEmulator> aws_;
  std::unique_ptr<TcpGate> secretGate_;
  platform::AwsCredentials awsKey_;
  std::string registryPassword_;
  std::string activationId_ = randomUuid();
  std::string customerId_ = randomUuid();

  // The runtime being run.
  std::unique_ptr<RuntimeTarget> target_;
  std::string configPath_;
  std::unique_ptr<Agent> agent_;
  int agentCounter_ = 0;
  double pullWindowMs_ = 0;  // agent start to sensor start with the image absent
  bool pullWindowMeasured_ = false;

  std::vector<std::string> agentLogs_;
  std::set<std::string> secretFindings_;  // "where|which": each exposure counted once
  std::set<std::string> leaksSeen_;       // each leftover counted once
  std::vector<FaultTally> tallies_;
  std::vector<std::pair<std::string, std::string>> machine_;
  std::vector<std::pair<std::string, std::string>> settings_;
  std::vector<std::string> setupProblems_;
  std::map<std::string, std::map<std::string, int>> observations_;  // runtime/fault -> label -> count
};

void Suite::say(const std::string& line) const { std::cout << line << std::endl; }

// ---- set-up ---------------------------------------------------------------------------------------

bool Suite::setUpShared() {
  registryPassword_ = "pw-" + randomUuid().substr(0, 8);
  registry_ = testing::Registry::start(kRegistryUser, registryPassword_);
  if (!registry_) {
    setupProblems_.push_back("the registry did not start (docker-registry, htpasswd)");
    return false;
  }
  const std::string registryAddress = registry_->address();
  auto registryGate = TcpGate::start(std::stoi(registryAddress.substr(registryAddress.rfind(':') + 1)));
  if (!registryGate) {
    setupProblems_.push_back("the registry's gate: " + registryGate.message());
    return false;
  }
  registryGate_ = std::move(registryGate.value());

  testing::AwsEmulator::Options awsOptions;
  awsOptions.region = kRegion;
  aws_ = testing::AwsEmulator::start(awsOptions);
  if (!aws_) {
    setupProblems_.push_back("the AWS emulator did not start");
    return false;
  }
  aws_->putSecret(kSecretId, json{{"ACTIVATIONID", activationId_}, {"CUSTOMERID", customerId_}}.dump());
  awsKey_ = aws_->addAccessKey();
  const std::string awsEndpoint = aws_->endpoint();
  auto secretGate = TcpGate::start(std::stoi(awsEndpoint.substr(awsEndpoint.rfind(':') + 1)));
  if (!secretGate) {
    setupProblems_.push_back("the Secrets Manager gate: " + secretGate.message());
    return false;
  }
  secretGate_ = std::move(secretGate.value());

  if (!testing::writeFile(work_.file("registry-password"), registryPassword_ + "\n", 0600)) {
    setupProblems_.push_back("cannot write " + work_.file("registry-password"));
    return false;
  }
  ::mkdir(work_.file("control").c_str(), 0755);
  writeControl("run");
  return true;
}

std::unique_ptr<RuntimeTarget> Suite::startTarget(const std::string& runtime) {
  TargetOptions options;
  options.workDir = work_.path();
  options.sensorName = kSensorName;
  options.registryGate = registryGate_->address();
  options.registryUser = kRegistryUser;
  options.registryPassword = registryPassword_;
  options.registry = registry_.get();
  return runtime == "docker" ? startDockerTarget(options) : startContainerdTarget(options);
}

std::string Suite::agentYaml() const {
  auto secret = [&](const char* key) {
    return std::string("{source: aws-secretsmanager, secret_id: ") + kSecretId + ", json_key: " + key +
           ", region: " + kRegion + ", endpoint: \"http://" + secretGate_->address() + "\"}";
  };
  std::ostringstream c;
  c << target_->agentRuntimeYaml() << "sensor:\n  image: " << target_->imageRef()
    << "\n  pull_policy: if-not-present\n  name: " << kSensorName << "\n"
    << "  resources: {cpu_request: 100m, cpu_limit: 500m, memory_request: 16Mi, memory_limit: 64Mi}\n"
    << "  env: {STANDIN_LOG_INTERVAL: \"" << kStandinLogInterval << "\"}\n"
    << "  extra_mounts:\n  - {source: " << work_.file("control") << ", target: /standin, read_only: true}\n"
    << "secrets:\n  activation_id: " << secret("ACTIVATIONID") << "\n  customer_id: " << secret("CUSTOMERID")
    << "\n  refresh_interval: " << kSecretsRefresh << "\n"
    << "registry_auth:\n  kind: basic\n  username: " << kRegistryUser
    << "\n  password: {source: file, path: " << work_.file("registry-password") << "}\n"
    << "supervision:\n  backoff: " << kBackoff << "\n  reconcile_interval: " << kReconcileInterval << "\n"
    << "platform: {detect: none}\n"
    << "logging: {level: info, format: json}\n"
    << "http: {listen: \"127.0.0.1:0\"}\n";
  return c.str();
}

void Suite::writeControl(const std::string& line) {
  // The stand-in reads this at each start: "<mode> [code] [after]".
  if (!testing::writeFile(work_.file("control/control"), line + "\n")) {
    std::cerr << "faults: cannot write the stand-in's control file\n";
  }
}

// ---- the agent ------------------------------------------------------------------------------------

std::unique_ptr<Agent> Suite::spawnAgent(const std::string& role) {
  const std::string log =
      work_.file("agent-" + target_->name() + "-" + std::to_string(++agentCounter_) + "-" + role + ".log");
  // Only the suite's own AWS key: nothing from the caller's environment may reach a real endpoint.
  const std::map<std::string, std::string> env = {
      {"AWS_ACCESS_KEY_ID", awsKey_.accessKeyId},
      {"AWS_SECRET_ACCESS_KEY", awsKey_.secretAccessKey},
      {"AWS_SESSION_TOKEN", ""},
      {"AWS_REGION", kRegion},
      {"AWS_DEFAULT_REGION", kRegion},
      {"AWS_EC2_METADATA_DISABLED", "true"},
      {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""},
      {"AWS_CONTAINER_CREDENTIALS_FULL_URI", ""},
      {"DOCKER_HOST", ""},
  };
  auto spawned = testing::Process::spawn({QCS_AGENT_BINARY, "run", "--config", configPath_}, env, log);
  if (!spawned) {
    std::cerr << "faults: starting qcs-agent: " << spawned.message() << "\n";
    return nullptr;
  }
  agentLogs_.push_back(log);
  auto agent = std::make_unique<Agent>();
  agent->process = std::move(spawned.value());
  return agent;
}

void Suite::endAgent(std::unique_ptr<Agent>& agent, int sig) {
  if (!agent) return;
  agent->process->kill(sig);
  if (!agent->process->wait(sig == SIGKILL ? 10s : 40s)) {
    agent->process->kill(SIGKILL);
    agent->process->wait(10s);
  }
  agent.reset();
}

std::string Suite::address(Agent& agent) {
  if (!agent.address.empty()) return agent.address;
  static const std::string marker = "agent.http: listening on ";
  std::istringstream in(agent.process->output());
  for (std::string line; std::getline(in, line);) {
    auto doc = json::parse(line, nullptr, false);
    if (!doc.is_object() || !doc["msg"].is_string()) continue;
    const std::string msg = doc["msg"];
    if (auto at = msg.find(marker); at != std::string::npos) {
      std::istringstream rest(msg.substr(at + marker.size()));
      rest >> agent.address;
      break;
    }
  }
  return agent.address;
}

json Suite::status(Agent& agent) {
  const std::string listen = address(agent);
  if (listen.empty()) return json();
  auto reply = agent::httpGet(listen, "/status", 3s);
  if (!reply.ok() || reply->status != 200) return json();
  auto doc = json::parse(reply->body, nullptr, false);
  return doc.is_object() ? doc : json();
}

std::string Suite::metrics(Agent& agent) {
  const std::string listen = address(agent);
  if (listen.empty()) return "";
  auto reply = agent::httpGet(listen, "/metrics", 3s);
  return reply.ok() ? reply->body : "";
}

bool Suite::agentRunsSensor(Agent& agent, const SensorInstance& sensor) {
  if (!agent.process->running()) return false;
  json s = status(agent);
  if (!s.is_object() || !s["sensor"].is_object() || !s["runtime"].is_object()) return false;
  return s["runtime"].value("up", false) && s["sensor"].value("state", "") == "running" &&
         s["sensor"].value("containerId", "") == sensor.id;
}

// ---- waiting --------------------------------------------------------------------------------------

std::optional<SensorInstance> Suite::runningSensor() {
  auto s = target_->sensor();
  if (!s || !s->running) return std::nullopt;
  return s;
}

bool Suite::steady() {
  if (!agent_ || !agent_->process->running()) return false;
  auto s = runningSensor();
  return s && target_->monitor().running().size() == 1 && agentRunsSensor(*agent_, *s);
}

bool Suite::restore(std::string& why) {
  writeControl("run");
  (void)registryGate_->setMode(TcpGate::Mode::kOpen);
  (void)secretGate_->setMode(TcpGate::Mode::kOpen);
  ::unlink((target_->smallFilesystem() + "/" + kFiller).c_str());
  if (!target_->daemonRunning() && !target_->startDaemon()) {
    why = "the " + target_->name() + " daemon did not come back";
    return false;
  }
  if (!agent_ || !agent_->process->running()) agent_ = spawnAgent("restore");
  if (!agent_) {
    why = "the agent could not be started";
    return false;
  }
  if (!testing::waitFor([&] { return steady(); }, kRecoveryDeadline)) {
    why = "no steady state (one sensor running, the agent reporting it) within 60s";
    return false;
  }
  return true;
}

std::optional<SteadyClock::time_point> Suite::waitRecovered(const std::string& before, uint64_t afterSeq,
                                                            milliseconds deadline, std::string& why) {
  SensorMonitor& monitor = target_->monitor();
  std::optional<SensorInstance> seen;
  std::optional<SteadyClock::time_point> firstSeen;
  std::optional<SensorEvent> start;
  const bool ok = testing::waitFor(
      [&] {
        auto s = runningSensor();
        if (!s || s->instance == before || s->instance.empty()) return false;
        if (monitor.running().size() != 1) return false;
        if (!agent_ || !agentRunsSensor(*agent_, *s)) return false;
        if (!seen || seen->instance != s->instance) {
          seen = s;
          firstSeen = SteadyClock::now();
        }
        // The start event of exactly this instance (the stream may deliver it a moment later).
        start = monitor.next(
            afterSeq,
            [&](const SensorEvent& e) {
              return e.kind == SensorEvent::Kind::kStart && e.id == s->id && s->instance == e.id + "@" + e.instance;
            },
            0ms);
        return start.has_value() || SteadyClock::now() - *firstSeen > 2s;
      },
      deadline);
  if (!ok) {
    auto s = target_->sensor();
    std::string agentView = "not running";
    if (agent_ && agent_->process->running()) {
      json st = status(*agent_);
      agentView = st.is_object() && st["sensor"].is_object() ? "reports " + st["sensor"].value("state", "?") +
                                                                   " (last error: " + st.value("lastError", "") + ")"
                                                             : "does not answer /status";
    }
    why = "not running again within " + std::to_string(deadline.count() / 1000) + "s: the runtime has " +
          (s ? std::string(s->running ? "it running as " : "it stopped, last ") + s->instance
             : std::string("no sensor container")) +
          ", " + std::to_string(monitor.running().size()) + " running by the event stream, the agent " + agentView;
    return std::nullopt;
  }
  return start ? start->at : *firstSeen;
}

std::optional<SteadyClock::time_point> Suite::waitReadopted(const SensorInstance& before, milliseconds deadline,
                                                            std::string& why) {
  // The agent must have looked at the runtime again since it came back, not just kept its old view.
  json s0 = status(*agent_);
  const uint64_t reconciles = s0.is_object() ? s0.value("reconciles", uint64_t{0}) : 0;
  SteadyClock::time_point at;
  const bool ok = testing::waitFor(
      [&] {
        auto s = runningSensor();
        if (!s || target_->monitor().running().size() != 1) return false;
        json st = status(*agent_);
        if (!st.is_object() || st.value("reconciles", uint64_t{0}) <= reconciles) return false;
        if (!agentRunsSensor(*agent_, *s)) return false;
        at = SteadyClock::now();
        return true;
      },
      deadline);
  if (!ok) {
    why = "the agent did not report the sensor (" + before.instance + ") running after the daemon came back within " +
          std::to_string(deadline.count() / 1000) + "s";
    return std::nullopt;
  }
  return at;
}

// ---- the faults -----------------------------------------------------------------------------------

Outcome Suite::inject(const std::string& fault) {
  if (fault == "sensor-sigkill") return sensorSigkill();
  if (fault == "exit-24") return sensorExit("exit 24", 24, false);
  if (fault == "exit-1") return sensorExit("exit 1", 1, false);
  if (fault == "oom") return sensorExit("oom", 137, true);
  if (fault == "container-removed") return containerRemoved();
  if (fault == "image-removed") return imageRemoved();
  if (fault == "registry-down") return registryDown();
  if (fault == "secret-source-down") return secretSourceDown();
  if (fault == "daemon-restart") return daemonOutage(false);
  if (fault == "socket-gone") return daemonOutage(true);
  if (fault == "agent-sigkill") return agentSigkill();
  if (fault == "two-agents") return twoAgents();
  if (fault == "disk-full") return diskFull();
  Outcome unknown;
  unknown.why = "unknown fault " + fault;
  return unknown;
}

Outcome Suite::injectAndAwaitRestart(const std::string& what, const std::function<Status()>& injection,
                                     const std::function<std::string()>& check) {
  Outcome out;
  auto before = runningSensor();
  const uint64_t seq = target_->monitor().lastSeq();
  const auto t0 = SteadyClock::now();
  if (Status injected = injection(); !injected) {
    out.why = what + " failed: " + injected.message();
    return out;
  }
  auto at = waitRecovered(before ? before->instance : "", seq, kRecoveryDeadline, out.why);
  if (!at) return out;
  if (check) {
    out.why = check();
    if (!out.why.empty()) return out;
  }
  out.recovered = true;
  out.ms = msBetween(t0, *at);
  return out;
}

Outcome Suite::sensorSigkill() {
  return injectAndAwaitRestart("the kill", [&] { return target_->killSensor(); });
}

Outcome Suite::sensorExit(const std::string& control, int expectedCode, bool oom) {
  Outcome out;
  SensorMonitor& monitor = target_->monitor();
  const uint64_t seq0 = monitor.lastSeq();
  // The running stand-in reads the control file as its shell starts, before its first line of
  // output: wait for output written from now on, so that this run cannot see the new mode (it would
  // exit by itself and the kill below could miss it).
  const int64_t stamp0 = target_->sensorOutputStamp();
  (void)testing::waitFor([&] { return target_->sensorOutputStamp() != stamp0; }, 5s);
  writeControl(control);
  // The kill only makes the sensor start again, so that it reads the control file: the fault is the
  // exit of that next start.
  if (auto killed = target_->killSensor(); !killed) {
    writeControl("run");
    out.why = "the triggering kill failed: " + killed.message();
    return out;
  }
  auto started = monitor.next(
      seq0, [](const SensorEvent& e) { return e.kind == SensorEvent::Kind::kStart; }, 30s);
  if (!started) {
    writeControl("run");
    out.why = "the agent did not start the sensor again after the triggering kill within 30s";
    return out;
  }
  const std::string id = started->id;
  auto ended = monitor.next(
      started->seq,
      [&](const SensorEvent& e) {
        if (e.id != id) return false;
        if (oom) return e.kind == SensorEvent::Kind::kOom || (e.kind == SensorEvent::Kind::kExit && e.exitCode == 137);
        return e.kind == SensorEvent::Kind::kExit;
      },
      30s);
  if (!ended) {
    writeControl("run");
    out.why = "the sensor in mode '" + control + "' did not end within 30s";
    return out;
  }
  const auto t0 = ended->at;
  if (!oom && ended->exitCode != expectedCode) {
    writeControl("run");
    out.why = "the sensor exited " + std::to_string(ended->exitCode) + ", not " + std::to_string(expectedCode);
    return out;
  }
  if (oom) {
    // Whether the runtime itself reported the OOM kill (an oom event), besides the exit code.
    auto notice = monitor.next(
        started->seq, [&](const SensorEvent& e) { return e.kind == SensorEvent::Kind::kOom && e.id == id; }, 5s);
    out.observations.push_back(notice ? "runtime reported the OOM kill" : "no OOM event from the runtime (exit 137)");
  }
  writeControl("run");
  // Only a start after the control file said "run" again runs in run mode.
  const uint64_t resetSeq = monitor.lastSeq();
  auto at = waitRecovered("", resetSeq, kRecoveryDeadline, out.why);
  if (!at) return out;
  if (agent_) {
    json st = status(*agent_);
    if (st.is_object() && st["sensor"].is_object()) {
      const auto& sensor = st["sensor"];
      if (oom) {
        out.observations.push_back(sensor.value("oomKills", 0) > 0 ? "agent counted OOM kills"
                                                                   : "agent counted no OOM kill");
      }
    }
  }
  out.recovered = true;
  out.ms = msBetween(t0, *at);
  return out;
}

Outcome Suite::containerRemoved() {
  return injectAndAwaitRestart("removing the container", [&] { return target_->removeSensor(); });
}

Outcome Suite::imageRemoved() {
  json st = agent_ ? status(*agent_) : json();
  const uint64_t pulls = st.is_object() ? st["pulls"].value("succeeded", uint64_t{0}) : 0;
  // The container goes too: a killed sensor whose container remains restarts in place from the
  // image layers that container still holds, without any pull.
  return injectAndAwaitRestart(
      "removing the container and its image",
      [&] {
        Status removed = target_->removeSensor();
        return removed ? target_->removeImage() : removed;
      },
      [&]() -> std::string {
        auto present = target_->imagePresent();
        if (!present || !present.value()) return "the sensor runs but its image is not on the node";
        json after = status(*agent_);
        if (after.is_object() && after["pulls"].value("succeeded", uint64_t{0}) <= pulls) {
          return "the sensor runs again but the agent reports no new pull";
        }
        return "";
      });
}

Outcome Suite::registryDown() {
  Outcome out;
  auto before = runningSensor();
  json st = status(*agent_);
  const uint64_t failedPulls = st.is_object() ? st["pulls"].value("failed", uint64_t{0}) : 0;
  if (auto down = registryGate_->setMode(TcpGate::Mode::kRefusing); !down) {
    out.why = "taking the registry down failed: " + down.message();
    return out;
  }
  const uint64_t seq = target_->monitor().lastSeq();
  const auto t0 = SteadyClock::now();
  Status removed = target_->removeSensor();
  if (removed) removed = target_->removeImage();
  if (!removed) {
    (void)registryGate_->setMode(TcpGate::Mode::kOpen);
    out.why = "removing the sensor and its image failed: " + removed.message();
    return out;
  }
  // The registry stays down until the agent has tried it and failed: then the outage was real.
  const bool tried = testing::waitFor(
      [&] {
        json s = status(*agent_);
        return s.is_object() && s["pulls"].value("failed", uint64_t{0}) > failedPulls;
      },
      30s);
  out.observations.push_back(tried ? "pull failed while the registry was down"
                                   : "no pull attempt seen during the outage");
  if (auto up = registryGate_->setMode(TcpGate::Mode::kOpen); !up) {
    out.why = "bringing the registry back failed: " + up.message();
    return out;
  }
  auto at = waitRecovered(before ? before->instance : "", seq, kRecoveryDeadline, out.why);
  if (!at) return out;
  out.recovered = true;
  out.ms = msBetween(t0, *at);
  return out;
}

Outcome Suite::secretSourceDown() {
  Outcome out;
  const uint64_t dropped = secretGate_->dropped();
  if (auto down = secretGate_->setMode(TcpGate::Mode::kDropping); !down) {
    out.why = "taking Secrets Manager down failed: " + down.message();
    return out;
  }
  // Give the agent a refresh to fail on (refresh_interval 2s). After a failed refresh it keeps the
  // cached IDs for a minute without asking again, so later injections may see no attempt at all.
  const bool tried = testing::waitFor([&] { return secretGate_->dropped() > dropped; }, 5s);
  out.observations.push_back(tried
                                 ? "a secret refresh failed before the kill"
                                 : "no secret refresh during the outage (agent within its retry-after-failure minute)");
  auto before = runningSensor();
  const uint64_t seq = target_->monitor().lastSeq();
  const auto t0 = SteadyClock::now();
  if (auto killed = target_->killSensor(); !killed) {
    (void)secretGate_->setMode(TcpGate::Mode::kOpen);
    out.why = "the kill failed: " + killed.message();
    return out;
  }
  auto at = waitRecovered(before ? before->instance : "", seq, kRecoveryDeadline, out.why);
  const uint64_t attempts = secretGate_->dropped() - dropped;
  if (auto up = secretGate_->setMode(TcpGate::Mode::kOpen); !up) {
    out.why = "bringing Secrets Manager back failed: " + up.message();
    return out;
  }
  if (!at) {
    out.why += " (Secrets Manager down; the agent tried it " + std::to_string(attempts) + " times)";
    return out;
  }
  // The sensor must have come back with the IDs it had: the cached values, not nothing.
  const std::string env = target_->sensorEnvironment();
  if (env.find(activationId_) == std::string::npos || env.find(customerId_) == std::string::npos) {
    out.why = "the sensor came back without its IDs in its environment";
    return out;
  }
  if (tried && agent_) {
    const bool warned = agent_->process->output().find("could not be read anew") != std::string::npos;
    out.observations.push_back(warned ? "agent warned that it keeps the IDs of an earlier read"
                                      : "no warning from the agent about the IDs it keeps");
  }
  out.recovered = true;
  out.ms = msBetween(t0, *at);
  return out;
}

Outcome Suite::daemonOutage(bool removeSocket) {
  Outcome out;
  auto before = runningSensor();
  if (!before) {
    out.why = "no running sensor before the fault";
    return out;
  }
  const uint64_t seq = target_->monitor().lastSeq();
  const auto t0 = SteadyClock::now();
  target_->stopDaemon();
  if (removeSocket) {
    ::unlink(target_->socketPath().c_str());
    // Gone until the agent has noticed: a socket that vanishes and comes back unseen tests nothing.
    const bool noticed = testing::waitFor(
        [&] {
          json s = status(*agent_);
          return s.is_object() && s["runtime"].is_object() && !s["runtime"].value("up", true);
        },
        30s);
    out.observations.push_back(noticed ? "agent reported the runtime down" : "agent did not report the runtime down");
  }
  if (!target_->startDaemon()) {
    out.why = "the " + target_->name() + " daemon did not start again";
    return out;
  }
  std::optional<SteadyClock::time_point> at;
  if (target_->sensorSurvivesDaemonStop()) {
    at = waitReadopted(*before, kRecoveryDeadline, out.why);
    if (at) {
      auto now = runningSensor();
      out.observations.push_back(now && now->instance == before->instance ? "sensor kept running (re-adopted)"
                                                                          : "sensor restarted");
    }
  } else {
    at = waitRecovered(before->instance, seq, kRecoveryDeadline, out.why);
  }
  if (!at) return out;
  if (!agent_->process->running()) {
    out.why = "the agent exited during the outage";
    return out;
  }
  out.recovered = true;
  out.ms = msBetween(t0, *at);
  return out;
}

double Suite::measurePullWindow() {
  endAgent(agent_, SIGKILL);
  Status removed = target_->removeSensor();
  if (removed) removed = target_->removeImage();
  const uint64_t seq = target_->monitor().lastSeq();
  const auto spawned = SteadyClock::now();
  agent_ = spawnAgent("calibration");
  std::string why;
  auto at = removed && agent_ ? waitRecovered("", seq, kRecoveryDeadline, why) : std::nullopt;
  return at ? msBetween(spawned, *at) : 0;
}

Outcome Suite::agentSigkill() {
  Outcome out;
  if (!pullWindowMeasured_) {
    // How long an agent takes from its start to the sensor's start when it has to pull, create and
    // start, measured now (the first start of the run is slower: cold daemon, cold registry).
    pullWindowMeasured_ = true;
    if (const double window = measurePullWindow(); window > 0) pullWindowMs_ = window;
    settings_.emplace_back(target_->name() + ": agent start to sensor start, image absent (agent-sigkill window)",
                           std::to_string(static_cast<long long>(pullWindowMs_)) + " ms");
    if (!steady()) {
      std::string problem;
      if (!restore(problem)) {
        out.why = "measuring the agent's pull/create/start time left no steady state: " + problem;
        return out;
      }
    }
  }
  endAgent(agent_, SIGKILL);
  // The image goes too, so that the new agent's work spans pull, create and start.
  Status removed = target_->removeSensor();
  if (removed) removed = target_->removeImage();
  if (!removed) {
    agent_ = spawnAgent("agent");
    out.why = "removing the sensor and its image failed: " + removed.message();
    return out;
  }
  const uint64_t seq = target_->monitor().lastSeq();
  std::uniform_real_distribution<double> pick(0.0, pullWindowMs_);
  const auto delay = std::chrono::microseconds(static_cast<int64_t>(pick(rng_) * 1000.0));
  auto victim = spawnAgent("killed");
  if (!victim) {
    out.why = "the agent could not be started";
    return out;
  }
  // The fault schedule itself: the seeded random point of the agent's work at which it dies.
  std::this_thread::sleep_for(delay);
  victim->process->kill(SIGKILL);
  victim->process->wait(10s);
  const auto t0 = SteadyClock::now();
  auto image = target_->imagePresent();
  auto sensor = target_->sensor();
  const char* phase = sensor && sensor->running ? "killed after the start"
                      : sensor                  ? "killed between create and start"
                      : image && image.value()  ? "killed after the pull, before create"
                                                : "killed before or during the pull";
  out.observations.push_back(phase);
  out.detail = "killed " + std::to_string(delay.count() / 1000) + " ms after its start: " + phase;
  victim.reset();
  agent_ = spawnAgent("agent");
  if (!agent_) {
    out.why = "the agent could not be started again";
    return out;
  }
  auto at = waitRecovered("", seq, kRecoveryDeadline, out.why);
  if (!at) return out;
  out.recovered = true;
  // The agent killed after the start leaves a running sensor that the new one adopts: recovered at once.
  out.ms = std::max(0.0, msBetween(t0, *at));
  return out;
}

Outcome Suite::twoAgents() {
  Outcome out;
  endAgent(agent_, SIGKILL);
  // Both agents find no sensor: each would create one.
  if (auto removed = target_->removeSensor(); !removed) {
    agent_ = spawnAgent("agent");
    out.why = "removing the sensor failed: " + removed.message();
    return out;
  }
  const uint64_t seq = target_->monitor().lastSeq();
  const auto t0 = SteadyClock::now();
  auto first = spawnAgent("twin-a");
  auto second = spawnAgent("twin-b");
  if (!first || !second) {
    agent_ = first ? std::move(first) : std::move(second);
    out.why = "the agents could not be started";
    return out;
  }
  SteadyClock::time_point exitedAt{};
  const bool oneExited = testing::waitFor(
      [&] {
        const bool a = first->process->running();
        const bool b = second->process->running();
        if (a != b) exitedAt = SteadyClock::now();
        return a != b || (!a && !b);
      },
      kTwoAgentsExitDeadline);
  const bool firstRuns = first->process->running();
  const bool secondRuns = second->process->running();
  if (!oneExited || (firstRuns && secondRuns)) {
    endAgent(second, SIGTERM);
    agent_ = std::move(first);
    out.why = "both agents kept running for " + std::to_string(kTwoAgentsExitDeadline.count() / 1000) +
              "s: the second did not refuse to supervise the same sensor";
    return out;
  }
  if (!firstRuns && !secondRuns) {
    out.why = "both agents exited";
    return out;
  }
  std::unique_ptr<Agent>& loser = firstRuns ? second : first;
  std::unique_ptr<Agent>& winner = firstRuns ? first : second;
  const int code = loser->process->wait(0ms).value_or(-1);
  const std::string said = loser->process->output();
  agent_ = std::move(winner);
  if (code == 0) {
    out.why = "the losing agent exited 0; it must exit non-zero";
    return out;
  }
  if (said.find("already supervises") == std::string::npos) {
    out.why = "the losing agent exited " + std::to_string(code) + " without saying the sensor is already supervised";
    return out;
  }
  out.observations.push_back("loser exited " + std::to_string(code));
  auto at = waitRecovered("", seq, kRecoveryDeadline, out.why);
  if (!at) return out;
  out.recovered = true;
  out.ms = msBetween(t0, std::max(*at, exitedAt));
  return out;
}

Outcome Suite::diskFull() {
  Outcome out;
  const std::string dir = target_->smallFilesystem();
  auto before = runningSensor();
  if (!before) {
    out.why = "no running sensor before the fault";
    return out;
  }
  auto filled = fillFilesystem(dir);
  if (!filled) {
    out.why = "filling " + dir + " failed: " + filled.message();
    return out;
  }
  const std::string filler = filled.value();
  if (target_->sensorOutputIsPlainFile()) {
    // The file's last block may still have room: fill it too, so that the sensor's very next line
    // needs a block the filesystem no longer has (a growing log gets there by itself soon enough).
    if (!padToBlockEnd(target_->sensorOutputPath())) out.observations.push_back("could not pad the sensor log");
  }
  out.observations.push_back(freeBytes(dir) < 4096 ? "filesystem full" : "filesystem not quite full");
  // The sensor must keep running and stay supervised: wait for the agent's next reconcile.
  json st = status(*agent_);
  const uint64_t reconciles = st.is_object() ? st.value("reconciles", uint64_t{0}) : 0;
  const bool looked = testing::waitFor(
      [&] {
        json s = status(*agent_);
        return s.is_object() && s.value("reconciles", uint64_t{0}) > reconciles;
      },
      20s);
  auto still = runningSensor();
  if (!looked || !still || still->instance != before->instance || !agentRunsSensor(*agent_, *still)) {
    ::unlink(filler.c_str());
    out.why = !looked ? "the agent did not reconcile within 20s of the disk filling"
                      : "the sensor did not keep running (supervised) once the disk was full";
    return out;
  }
  // SIGKILL recovery while the disk is full.
  const uint64_t seq = target_->monitor().lastSeq();
  const auto t0 = SteadyClock::now();
  if (auto killed = target_->killSensor(); !killed) {
    ::unlink(filler.c_str());
    out.why = "the kill failed: " + killed.message();
    return out;
  }
  std::optional<SteadyClock::time_point> at;
  int64_t stamp = 0;
  if (target_->startNeedsSpaceThere()) {
    // dockerd writes the container's state into the full data-root to start it: it cannot until
    // there is room. The agent must keep trying and succeed as soon as there is.
    const bool refused = testing::waitFor(
        [&] {
          json s = status(*agent_);
          return s.is_object() && s["sensor"].is_object() && s["sensor"].value("state", "") != "running" &&
                 !s.value("lastError", "").empty();
        },
        20s);
    out.observations.push_back(refused ? "the daemon could not start the sensor while full; the agent retried"
                                       : "no failed start seen while full");
    stamp = target_->sensorOutputStamp();
    ::unlink(filler.c_str());
    at = waitRecovered(still->instance, seq, kRecoveryDeadline, out.why);
    if (!at) return out;
  } else {
    at = waitRecovered(still->instance, seq, kRecoveryDeadline, out.why);
    stamp = target_->sensorOutputStamp();
    ::unlink(filler.c_str());
    if (!at) {
      out.why = "while the disk was full: " + out.why;
      return out;
    }
  }
  // Space freed: the sensor's output must be recorded again (not stuck behind the full disk).
  const bool flowing = testing::waitFor([&] { return target_->sensorOutputStamp() > stamp; }, 10s);
  if (!flowing) {
    out.why = "the sensor runs, but its output is no longer recorded (" + target_->sensorOutputPath() +
              " unchanged for 10s after the space was freed)";
    return out;
  }
  auto after = runningSensor();
  if (!after || !agentRunsSensor(*agent_, *after)) {
    out.why = "the sensor is not running (supervised) after the space was freed";
    return out;
  }
  out.recovered = true;
  out.ms = msBetween(t0, *at);
  return out;
}

// ---- after each injection -------------------------------------------------------------------------

void Suite::checkLeaks(FaultTally& tally, int iteration) {
  std::vector<std::string> fresh;
  // containerd collects garbage in the background: what is still there after the grace counts.
  // Each leftover is counted once, at the injection after which it first stayed.
  testing::waitFor(
      [&] {
        fresh.clear();
        for (auto& leak : target_->leaks()) {
          if (!leaksSeen_.count(leak)) fresh.push_back(std::move(leak));
        }
        return fresh.empty();
      },
      kLeakGrace);
  if (fresh.empty()) return;
  tally.leaks += static_cast<int>(fresh.size());
  std::string text;
  for (const auto& leak : fresh) {
    leaksSeen_.insert(leak);
    text += (text.empty() ? "" : "; ") + leak;
  }
  tally.notes.push_back("#" + std::to_string(iteration) + ": left over " + std::to_string(kLeakGrace.count() / 1000) +
                        "s after recovery: " + text);
}

void Suite::checkSecrets(FaultTally& tally, int iteration) {
  std::vector<std::pair<std::string, std::string>> surfaces = target_->secretSurfaces();
  for (const auto& log : agentLogs_) surfaces.emplace_back("agent log " + log, testing::readFile(log));
  if (agent_ && agent_->process->running()) {
    surfaces.emplace_back("agent /status", status(*agent_).dump());
    surfaces.emplace_back("agent /metrics", metrics(*agent_));
    const std::string proc = "/proc/" + std::to_string(agent_->process->pid());
    surfaces.emplace_back("agent argv", testing::readFile(proc + "/cmdline"));
    surfaces.emplace_back("agent environment", testing::readFile(proc + "/environ"));
  }
  for (const auto& [where, text] : surfaces) {
    for (const auto& [which, value] :
         {std::pair{"ACTIVATIONID", activationId_}, std::pair{"CUSTOMERID", customerId_}}) {
      if (text.find(value) == std::string::npos) continue;
      if (!secretFindings_.insert(where + "|" + which).second) continue;  // counted when first seen
      ++tally.secrets;
      tally.notes.push_back("#" + std::to_string(iteration) + ": the " + std::string(which) + " value appears in " +
                            where);
    }
  }
}

// ---- the run --------------------------------------------------------------------------------------

void Suite::runRuntime(const std::string& runtime) {
  say("== " + runtime + ": starting the daemon and putting the stand-in image into the registry");
  target_ = startTarget(runtime);
  if (!target_) {
    setupProblems_.push_back(runtime + ": the daemon or the stand-in image could not be set up (see stderr)");
    return;
  }
  machine_.emplace_back(runtime, target_->daemonVersion());
  configPath_ = work_.file("agent-" + runtime + ".yaml");
  if (!testing::writeFile(configPath_, agentYaml(), 0600)) {
    setupProblems_.push_back(runtime + ": cannot write " + configPath_);
    target_.reset();
    return;
  }
  writeControl("run");

  // The first start pulls the image: how long pull, create and start take sets the window in which
  // the agent-sigkill fault kills an agent.
  const uint64_t seq = target_->monitor().lastSeq();
  const auto spawned = SteadyClock::now();
  agent_ = spawnAgent("agent");
  std::string why;
  auto first = agent_ ? waitRecovered("", seq, 120s, why) : std::nullopt;
  if (!first) {
    setupProblems_.push_back(runtime + ": the agent's first start did not bring the sensor up: " + why +
                             (agent_ ? "; agent log " + agent_->process->logPath() : ""));
    endAgent(agent_, SIGKILL);
    target_.reset();
    return;
  }
  pullWindowMs_ = msBetween(spawned, *first);
  pullWindowMeasured_ = false;
  settings_.emplace_back(runtime + ": the agent's first start to the sensor's start (pulling the image)",
                         std::to_string(static_cast<long long>(pullWindowMs_)) + " ms");
  // The positive control of the secrets scan: the IDs are where they belong.
  const std::string env = target_->sensorEnvironment();
  if (env.find(activationId_) == std::string::npos || env.find(customerId_) == std::string::npos) {
    setupProblems_.push_back(runtime + ": the sensor's environment lacks the IDs from Secrets Manager");
  }

  for (const auto& fault : options_.faults) {
    FaultTally tally;
    tally.runtime = runtime;
    tally.fault = fault;
    for (int i = 1; i <= options_.iterations; ++i) {
      if (!steady()) {
        std::string problem;
        if (!restore(problem)) {
          tally.notes.push_back("#" + std::to_string(i) + ": not injected: " + problem);
          ++tally.injected;  // counted as a failed injection: the previous fault left the system broken
          continue;
        }
      }
      const uint64_t duplicatesBefore = target_->monitor().duplicates();
      const auto begun = SteadyClock::now();
      Outcome outcome = inject(fault);
      ++tally.injected;
      for (const auto& label : outcome.observations) ++observations_[runtime + " / " + fault][label];
      if (outcome.recovered) {
        ++tally.recovered;
        tally.recoveryMs.push_back(outcome.ms);
      } else {
        tally.notes.push_back("#" + std::to_string(i) + ": " + outcome.why);
        std::string problem;
        if (!restore(problem)) tally.notes.push_back("#" + std::to_string(i) + ": restoring failed: " + problem);
      }
      checkLeaks(tally, i);
      const uint64_t duplicates = target_->monitor().duplicates() - duplicatesBefore;
      tally.duplicates += static_cast<int>(duplicates);
      for (const auto& note : target_->monitor().takeDuplicateNotes()) {
        tally.notes.push_back("#" + std::to_string(i) + ": duplicate: " + note);
      }
      checkSecrets(tally, i);
      std::ostringstream line;
      line << "[" << runtime << "] " << fault << " #" << i << ": ";
      if (outcome.recovered) {
        line << "recovered in " << std::llround(outcome.ms) << " ms";
      } else {
        line << "NOT RECOVERED: " << outcome.why;
      }
      line << " (" << std::llround(msBetween(begun, SteadyClock::now())) << " ms in all)";
      if (!outcome.detail.empty()) line << "; " << outcome.detail;
      say(line.str());
    }
    tallies_.push_back(std::move(tally));
    writeReport();  // a report so far, in case the run is cut short
  }

  endAgent(agent_, SIGTERM);
  target_.reset();
}

void Suite::writeReport() {
  ReportInputs inputs;
  inputs.title = "qcs-agent fault-injection report";
  inputs.generatedAt = utcNow();
  inputs.machine = machine_;
  inputs.settings = settings_;
  inputs.remarks = {
      "Injections follow each other faster than supervision.backoff.reset_after (10s), so the agent's restart "
      "backoff soon sits at its maximum (2s): most times to recovery are that wait plus the start itself; the "
      "first injections of a run show the short path (backoff 200ms, 400ms, ...). Recoveries that need no "
      "restart wait (agent-sigkill, two-agents) show the agent's own speed.",
      "Each injection starts from a steady state: one sensor running, the agent reporting it running. A fault "
      "counts as recovered when a new start of the sensor (new container id, StartedAt or task pid, as the "
      "fault implies) is seen on the runtime's event stream, the runtime reports it running and the agent's "
      "/status reports that container as its running sensor. Time to recovery runs from the injection to that "
      "start.",
      "exit-24, exit-1, oom: the stand-in's control file is set to the mode and the sensor killed so that it "
      "starts again in that mode; the injection is that run's exit (OOM: the runtime's OOM event or exit 137). "
      "The control file is set back to run at once; recovery is the first start after that.",
      "image-removed and registry-down remove the container as well as the image (docker rmi -f / ctr images rm "
      "--sync): with the container left in place a killed sensor restarts from the layers the container still "
      "holds, without any pull. Recovery also requires the image back on the node and a successful pull in the "
      "agent's /status.",
      "registry-down and secret-source-down put a loopback TCP gate in front of the service: the registry's "
      "gate refuses connections (as a stopped server) until the agent's /status shows a failed pull; the "
      "Secrets Manager gate resets every connection, the suite waits up to 5s for one of the agent's refreshes "
      "(refresh_interval 2s) to fail - after a failure the agent keeps its cached IDs a minute without asking "
      "- then kills the sensor. The agent must start it again, with the same IDs, while the source is down.",
      "daemon-restart and socket-gone stop the private daemon (socket-gone also deletes the socket file and "
      "waits for the agent to report the runtime down) and start it again on the same socket. dockerd stops "
      "its containers, so recovery is a new start; containerd's shims keep the task, so recovery is the agent "
      "reporting the sensor running again after a reconcile that followed the daemon's return.",
      "agent-sigkill: the agent is SIGKILLed while the node has neither the sensor's container nor its image, at "
      "a point drawn (seeded) uniformly from zero to the time an agent takes from its start to the sensor's "
      "start in that situation (measured once per runtime, right before the first injection); a new agent "
      "is started at once. Time runs from the kill; where the first agent died is listed under Observations.",
      "two-agents: with the sensor removed, two agents are started back to back for the same sensor; exactly "
      "one must keep running, the other must exit non-zero within 15s with a message containing \"already "
      "supervises\"; then the sensor must run once.",
      "disk-full fills the filesystem of the sensor's log to the last byte (on containerd the log file's last "
      "block too, with newlines, so that the sensor's next line needs a block there is no room for). "
      "containerd: the agent's containerd_log_dir is a 2 MiB tmpfs; the sensor must keep running through an "
      "agent reconcile, be restarted after a SIGKILL while the disk is still full, and its output must be "
      "recorded again (the log file modified) within 10s of the space being freed. Docker: the json-file log "
      "belongs to dockerd and lives in its data-root, so the whole data-root is a 128 MiB tmpfs; filling it "
      "fills dockerd's own disk, and dockerd cannot start any container then (it writes the container's "
      "hostconfig.json there first). So on Docker the sensor must keep running through the fill, the SIGKILLed "
      "sensor's failed start must be retried by the agent, and recovery (timed from the kill) comes once "
      "the space is freed - which the suite does as soon as the agent reports the failed start.",
      "Duplicates: the runtime's event stream is watched for the whole run (resynced from a listing after "
      "every reconnect, and checked against one every 2s); two sensor containers running at once count as one "
      "duplicate. Leaks are checked after "
      "every injection, allowing 15s for garbage collection: Docker, any container besides the sensor; "
      "containerd, any container, task, lease, content ingest, image or snapshot besides the sensor's own "
      "and its rootfs chain. Secrets: two random UUIDs served by the Secrets Manager emulator, searched for in "
      "every agent log, /status, /metrics, the agent's argv and environment, container metadata other than "
      "the environment, and the sensor's output; each exposure is counted once.",
  };
  if (!setupProblems_.empty()) {
    for (const auto& problem : setupProblems_) inputs.remarks.push_back("**Set-up problem:** " + problem);
  }
  for (const auto& [key, counts] : observations_) {
    std::string text;
    for (const auto& [label, count] : counts) text += (text.empty() ? "" : ", ") + label + " x" + std::to_string(count);
    inputs.observations.push_back(key + ": " + text + ".");
  }
  std::string report = renderReport(inputs, tallies_);
  if (!setupProblems_.empty()) report += "\nThe run is incomplete: see the set-up problems above.\n";
  if (!testing::writeFile(options_.reportPath, report)) {
    std::cerr << "faults: cannot write the report to " << options_.reportPath << "\n";
  }
}

int Suite::run() {
  struct utsname uts {};
  ::uname(&uts);
  machine_ = {
      {"nproc", std::to_string(::sysconf(_SC_NPROCESSORS_ONLN))},
      {"memory", memTotal()},
      {"kernel", std::string(uts.sysname) + " " + uts.release + " " + uts.machine},
      {"cgroup", cgroupVersion()},
      {"load average at start", firstLine(testing::readFile("/proc/loadavg"))},
      {"qcs-agent", commandOutput({QCS_AGENT_BINARY, "version"})},
      {"source revision", commandOutput({"/usr/bin/git", "-C", QCS_SOURCE_DIR, "describe", "--always", "--dirty"})},
      {"registry", commandOutput({"/usr/bin/docker-registry", "--version"})},
  };
  std::string faults;
  for (const auto& f : options_.faults) faults += (faults.empty() ? "" : ", ") + f;
  std::string runtimes;
  for (const auto& r : options_.runtimes) runtimes += (runtimes.empty() ? "" : ", ") + r;
  settings_ = {
      {"runtimes", runtimes},
      {"iterations per fault", std::to_string(options_.iterations)},
      {"faults", faults},
      {"seed", std::to_string(options_.seed)},
      {"supervision.backoff", kBackoff},
      {"supervision.reconcile_interval", kReconcileInterval},
      {"secrets",
       "aws-secretsmanager (loopback emulator behind a gate), refresh_interval " + std::string(kSecretsRefresh)},
      {"registry_auth", "basic, against docker-registry with htpasswd (behind a gate)"},
      {"sensor",
       "the stand-in (tests/fixtures/standin), pull_policy if-not-present, memory_limit 64Mi, "
       "STANDIN_LOG_INTERVAL " +
           std::string(kStandinLogInterval) + "s"},
      {"recovery deadline", std::to_string(kRecoveryDeadline.count() / 1000) + " s per injection"},
  };
  if (!setUpShared()) {
    writeReport();
    for (const auto& problem : setupProblems_) std::cerr << "faults: " << problem << "\n";
    return 2;
  }
  for (const auto& runtime : options_.runtimes) runRuntime(runtime);
  writeReport();
  say("report: " + options_.reportPath);
  if (!setupProblems_.empty()) {
    for (const auto& problem : setupProblems_) std::cerr << "faults: " << problem << "\n";
    return 2;
  }
  return suitePassed(tallies_) ? 0 : 1;
}

}  // namespace

int runFaultSuite(const SuiteOptions& options) {
  Suite suite(options);
  return suite.run();
}

}  // namespace qcs::faults

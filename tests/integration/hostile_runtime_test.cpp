// The hostile-peer test (issue 7): the real qcs-agent binary against a runtime socket that answers
// garbage, truncated or huge JSON, JSON of the wrong shape, the wrong content type, stalls, absurd
// API versions and broken event streams. Throughout, the agent must stay up (its process alive,
// /livez 200), say so (/readyz not 200, /status and /metrics showing the runtime down or erroring),
// keep its memory bounded and back off instead of spinning. Then the real runtime comes back at the
// same path and the agent, never restarted, runs the sensor there.
//
// The agent's endpoint is a symlink in the test's directory: first to the hostile socket, then to
// the private dockerd's (or containerd's) socket, which the harness always puts in its own
// directory. connect() follows the link, so for the agent it is one path throughout.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "agent/http_server.h"
#include "harness/agent_process.h"
#include "harness/harness.h"
#include "harness/hostile_socket.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using Behaviour = HostileSocket::Behaviour;
using Clock = std::chrono::steady_clock;

constexpr const char* kSensorName = "qcs-hostile-sensor";
// The agent's own footprint is some 25 MiB; a peer feeding it 256 MiB must not show in its memory.
constexpr long kMaxResidentKiB = 64 * 1024;
// Under a sanitizer the agent's memory says nothing about the agent (shadow memory, ASan keeping
// freed blocks in quarantine): the memory bound is checked in the normal builds only.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif
// "No busy loop": over a window of hostility the agent uses less than a fifth of a core (a backing-off
// agent uses about 1%; one that keeps parsing what a peer streams at it, some 30%).
constexpr double kMaxCpuShare = 0.2;
constexpr auto kHostileWindow = 3s;

// ---- Reading the agent process from outside -------------------------------------------------------

// A "VmHWM:  1234 kB" style field of /proc/<pid>/status, in KiB; -1 when absent.
long procStatusKiB(pid_t pid, const std::string& field) {
  std::istringstream in(readFile("/proc/" + std::to_string(pid) + "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  }
  return -1;
}

// User plus system CPU time the process used so far.
double cpuSeconds(pid_t pid) {
  const std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 2));
  std::vector<std::string> tokens;
  for (std::string token; fields >> token;) tokens.push_back(token);
  // After the command: state is field 3, utime 14 and stime 15.
  if (tokens.size() < 13) return 0;
  const double ticks = double(std::stoull(tokens[11]) + std::stoull(tokens[12]));
  return ticks / double(::sysconf(_SC_CLK_TCK));
}

// The address the agent logged when its listener was bound; "" until then.
std::string agentAddress(Process& agent) {
  static const std::regex listening(R"(agent\.http: listening on (127\.0\.0\.1:[0-9]+))");
  for (const auto& message : agentMessages(agent)) {
    std::smatch match;
    if (std::regex_search(message, match, listening)) return match[1];
  }
  return "";
}

// The sum of every sample of a metric family in Prometheus text (0 when there is none).
double metricSum(const std::string& text, const std::string& name) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0 && line.rfind(name + " ", 0) != 0) continue;
    sum += std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
  }
  return sum;
}

// The largest sample of a metric family (-1 when there is none).
double metricMax(const std::string& text, const std::string& name) {
  double max = -1;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0 && line.rfind(name + " ", 0) != 0) continue;
    max = std::max(max, std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr));
  }
  return max;
}

std::string uniqueNamespace() {
  std::random_device random;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", random());
  return std::string("qcs-hostile-") + suffix;
}

// ---- The fixture --------------------------------------------------------------------------------

class HostileRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kE2eCustomerId) + "\n", 0600));
    ::mkdir(dir_.file("control").c_str(), 0755);
    ASSERT_TRUE(writeFile(dir_.file("control/control"), "run\n"));
  }

  void TearDown() override {
    agent_.reset();
    hostile_.reset();
    dockerd_.reset();
    containerd_.reset();
  }

  // The real runtime, started first at its own path; the agent only finds it once the endpoint
  // symlink points there.
  void startDockerd() {
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << image.message();
  }

  void startContainerd() {
    containerd_ = Containerd::start();
    ASSERT_NE(containerd_, nullptr) << "containerd did not start";
    auto image = importStandinImage(*containerd_, "docker.io/library/qcs-standin:test", ns_);
    ASSERT_TRUE(image.ok()) << image.message();
  }

  void startHostile(const HostileSocket::Script& script) {
    hostile_ = HostileSocket::start(dir_.file("hostile.sock"), script);
    ASSERT_NE(hostile_, nullptr);
    pointEndpointAt(hostile_->socketPath());
  }

  // Re-points the endpoint symlink in one step (rename over it), as a daemon restart would swap
  // the socket under the same path.
  void pointEndpointAt(const std::string& target) {
    const std::string staged = endpoint_ + ".new";
    ::unlink(staged.c_str());
    ASSERT_EQ(::symlink(target.c_str(), staged.c_str()), 0) << std::strerror(errno);
    ASSERT_EQ(::rename(staged.c_str(), endpoint_.c_str()), 0) << std::strerror(errno);
  }

  void startAgent(const std::string& kind) {
    E2eConfig c;
    c.runtime = "runtime:\n  kind: " + kind + "\n  endpoint: " + endpoint_ + "\n";
    if (kind == "containerd") {
      c.runtime += "  containerd_namespace: " + ns_ + "\n  containerd_log_dir: " + dir_.file("logs") + "\n";
    }
    c.sensorName = kSensorName;
    c.controlDir = dir_.file("control");
    c.customerIdFile = dir_.file("customer-id");
    agent_ = startAgentProcess(dir_, e2eConfigYaml(c), "agent",
                               {{"QCS_E2E_ACTIVATION_ID", kE2eActivationId}, {"DOCKER_HOST", ""}}, agents_);
    ASSERT_NE(agent_, nullptr);
    pid_ = agent_->pid();
    ASSERT_TRUE(waitFor([&] { return !agent_->running() || !agentAddress(*agent_).empty(); }, 20s)) << agent_->output();
    ASSERT_TRUE(agent_->running()) << agent_->output();
    address_ = agentAddress(*agent_);
  }

  agent::HttpReply get(const std::string& path, std::chrono::milliseconds timeout = 5s) {
    auto reply = agent::httpGet(address_, path, timeout);
    if (!reply.ok()) return agent::HttpReply{0, "", reply.message()};
    return std::move(reply).value();
  }
  json status() {
    auto reply = get("/status");
    auto doc = reply.status == 200 ? json::parse(reply.body, nullptr, false) : json();
    return doc.is_object() ? doc : json::object();
  }
  std::string metrics() { return get("/metrics").body; }

  // Polls until cond holds (true) or the deadline passes (false). On every poll the agent must be
  // alive, /livez 200 and its memory within bounds; the first time one is not, the failure is
  // recorded and polling stops (an agent that hoards what a peer streams is stopped early, before
  // it takes the machine's memory).
  bool observe(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
    const bool held = waitFor(
        [&] {
          if (!observeFailure_.empty()) return true;
          if (!agent_->running()) {
            observeFailure_ = "the agent exited: " + agent_->output().substr(0, 4000);
            return true;
          }
          if (const long resident = procStatusKiB(pid_, "VmRSS"); !kSanitized && resident > kMaxResidentKiB) {
            observeFailure_ = "the agent's resident memory grew to " + std::to_string(resident) + " KiB";
            return true;
          }
          auto livez = get("/livez", 3s);
          if (livez.status != 200) {
            observeFailure_ = "/livez answered " + std::to_string(livez.status) + ": " + livez.body;
            return true;
          }
          return cond();
        },
        deadline);
    return held && observeFailure_.empty();
  }

  // The agent's peak resident memory so far, in KiB.
  long peakResidentKiB() { return procStatusKiB(pid_, "VmHWM"); }
  void expectMemoryBounded() {
    if (kSanitized) return;
    EXPECT_LT(peakResidentKiB(), kMaxResidentKiB) << "peak RSS " << peakResidentKiB() << " KiB";
  }

  TempDir dir_;
  const std::string endpoint_ = dir_.file("runtime.sock");
  const std::string ns_ = uniqueNamespace();
  std::unique_ptr<Dockerd> dockerd_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<HostileSocket> hostile_;
  std::unique_ptr<Process> agent_;
  pid_t pid_ = 0;
  std::string address_;
  std::string observeFailure_;
  int agents_ = 0;
};

// ---- The Docker cases, one behaviour each -------------------------------------------------------

enum class Expect {
  kRuntimeDown,   // the runtime never counts as up: /status runtime.up false, qcs_runtime_up 0
  kCallsFail,     // the handshake passes, then every call fails: qcs_runtime_errors_total grows
  kConnectedIdle  // the peer is "a Docker" that has nothing: up, but the sensor never runs
};

struct HostileCase {
  std::string name;
  HostileSocket::Script script;
  Expect expect;
  std::string asked;  // the request the hostile answers went to (seen at least twice)
};

std::ostream& operator<<(std::ostream& out, const HostileCase& c) { return out << c.name; }

HostileSocket::Script callsOnly(Behaviour behaviour) {
  HostileSocket::Script script;
  script.calls = behaviour;
  return script;
}

HostileSocket::Script eventsOnly(Behaviour behaviour) {
  HostileSocket::Script script;
  script.events = behaviour;
  return script;
}

HostileSocket::Script withApiVersion(const std::string& version) {
  HostileSocket::Script script;
  script.apiVersion = version;
  return script;
}

class HostileDockerTest : public HostileRuntimeTest, public ::testing::WithParamInterface<HostileCase> {};

TEST_P(HostileDockerTest, AgentStaysUpReportsItAndRecoversWhenDockerIsBack) {
  const HostileCase& param = GetParam();
  ASSERT_NO_FATAL_FAILURE(startDockerd());
  ASSERT_NO_FATAL_FAILURE(startHostile(param.script));
  const auto started = Clock::now();
  ASSERT_NO_FATAL_FAILURE(startAgent("docker"));

  // 1. It notices and says so.
  const bool reported = observe(
      [&] {
        if (hostile_->requestsTo(param.asked) < 2) return false;
        json s = status();
        if (!s.contains("runtime") || !s.contains("sensor")) return false;
        switch (param.expect) {
          case Expect::kRuntimeDown: return s["runtime"]["up"] == false && !s.value("lastError", "").empty();
          case Expect::kCallsFail:
            return s["runtime"]["up"] == true && metricSum(metrics(), "qcs_runtime_errors_total") >= 2;
          case Expect::kConnectedIdle: return s["runtime"]["up"] == true && s.value("reconciles", 0) >= 1;
        }
        return false;
      },
      40s);
  ASSERT_TRUE(observeFailure_.empty()) << observeFailure_;
  ASSERT_TRUE(reported) << "status: " << status().dump(2) << "\npeer saw " << hostile_->requestCount() << " requests, "
                        << hostile_->requestsTo(param.asked) << " of them to " << param.asked << "\n"
                        << agent_->output().substr(0, 6000);

  // 2. A window of hostility: still alive, not ready, reporting, not spinning, memory bounded.
  const double errorsBefore = metricSum(metrics(), "qcs_runtime_errors_total");
  const double cpuBefore = cpuSeconds(pid_);
  const size_t requestsBefore = hostile_->requestCount();
  const size_t eventsBefore = hostile_->requestsTo("/events");
  const size_t bytesBefore = hostile_->bytesSent();
  const auto windowStart = Clock::now();
  const bool windowDone = observe(
      [&] {
        return Clock::now() - windowStart >= kHostileWindow && hostile_->requestsTo(param.asked) >= 3 &&
               (param.expect != Expect::kCallsFail || metricSum(metrics(), "qcs_runtime_errors_total") > errorsBefore);
      },
      40s);
  ASSERT_TRUE(observeFailure_.empty()) << observeFailure_;
  EXPECT_TRUE(windowDone) << "status: " << status().dump(2);
  const double window = std::chrono::duration<double>(Clock::now() - windowStart).count();
  const double cpu = cpuSeconds(pid_) - cpuBefore;
  EXPECT_LT(cpu / window, kMaxCpuShare) << cpu << "s of CPU in " << window << "s";
  // Backing off: a handful of requests a second at most (events re-dialled included).
  const double requestRate = double(hostile_->requestCount() - requestsBefore) / window;
  EXPECT_LT(requestRate, 10.0) << hostile_->requestCount() - requestsBefore << " requests in " << window << "s";
  EXPECT_LE(double(hostile_->requestsTo("/events") - eventsBefore), 2 + window)
      << "the event stream is re-dialled too eagerly";
  // Nonsense is not read for ever: each answer is cut at the agent's limit for it (8 MiB at most,
  // plus what the socket buffers hold), so the peer gets to send little per request.
  const size_t requests = std::max<size_t>(1, hostile_->requestCount() - requestsBefore);
  const double bytesPerRequest = double(hostile_->bytesSent() - bytesBefore) / double(requests);
  EXPECT_LT(bytesPerRequest, 16.0 * (1 << 20)) << "the agent kept reading what the peer sent";

  EXPECT_NE(get("/readyz").status, 200);
  const json s = status();
  const std::string text = metrics();
  EXPECT_EQ(metricMax(text, "qcs_sensor_up"), 0);
  if (param.expect == Expect::kRuntimeDown) {
    EXPECT_EQ(s["runtime"]["up"], false) << s.dump(2);
    EXPECT_EQ(metricMax(text, "qcs_runtime_up"), 0) << text;
    EXPECT_FALSE(s.value("lastError", "").empty());
  } else {
    EXPECT_EQ(s["runtime"]["up"], true) << s.dump(2);
  }
  if (param.expect == Expect::kCallsFail) {
    EXPECT_GT(metricSum(text, "qcs_runtime_errors_total"), errorsBefore);
    EXPECT_FALSE(s.value("lastError", "").empty());
  }
  EXPECT_NE(s["sensor"].value("state", ""), "running");
  expectMemoryBounded();

  // 3. The real runtime is back at the same path: the same agent process runs the sensor there.
  hostile_.reset();
  pointEndpointAt(dockerd_->socketPath());
  const bool recovered = observe(
      [&] {
        SensorView view(*agent_);
        auto inspected = dockerd_->cli(std::string("inspect --format '{{.State.Running}}' ") + kSensorName);
        return view.state() == "running" && inspected.ok() && *inspected == "true";
      },
      60s);
  ASSERT_TRUE(observeFailure_.empty()) << observeFailure_;
  ASSERT_TRUE(recovered) << "status: " << status().dump(2) << "\n" << agent_->output().substr(0, 20000);
  EXPECT_TRUE(observe([&] { return get("/readyz").status == 200; }, 20s)) << get("/readyz").body;
  EXPECT_EQ(agent_->pid(), pid_);
  EXPECT_TRUE(agent_->running());
  const json after = status();
  EXPECT_EQ(after["runtime"]["up"], true);
  EXPECT_EQ(after["runtime"]["endpoint"], endpoint_);
  EXPECT_EQ(metricMax(metrics(), "qcs_runtime_up"), 1);
  expectMemoryBounded();
  std::cerr << "[ info ] " << param.name << ": peak RSS " << peakResidentKiB() << " KiB; in " << window
            << "s of hostility " << cpu << "s CPU, " << requestRate << " requests/s, " << bytesPerRequest / 1024
            << " KiB/request; " << std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count()
            << "s in all\n";
}

INSTANTIATE_TEST_SUITE_P(
    Behaviours, HostileDockerTest,
    ::testing::Values(
        HostileCase{"Garbage", HostileSocket::everything(Behaviour::kGarbage), Expect::kRuntimeDown, "/_ping"},
        HostileCase{"TruncatedJson", HostileSocket::everything(Behaviour::kTruncatedJson), Expect::kRuntimeDown,
                    "/_ping"},
        HostileCase{"TruncatedJsonCalls", callsOnly(Behaviour::kTruncatedJson), Expect::kCallsFail, "/containers/json"},
        HostileCase{"HugeJsonPing", HostileSocket::everything(Behaviour::kHugeJson), Expect::kRuntimeDown, "/_ping"},
        HostileCase{"HugeJsonCalls", callsOnly(Behaviour::kHugeJson), Expect::kCallsFail, "/containers/json"},
        HostileCase{"DeepJsonCalls", callsOnly(Behaviour::kDeepJson), Expect::kCallsFail, "/containers/json"},
        HostileCase{"WrongShapePing", HostileSocket::everything(Behaviour::kWrongShape), Expect::kRuntimeDown,
                    "/_ping"},
        HostileCase{"WrongShapeCalls",
                    HostileSocket::Script{Behaviour::kDocker, Behaviour::kWrongShape, Behaviour::kWrongShape, "1.41"},
                    Expect::kCallsFail, "/containers/json"},
        HostileCase{"WrongContentType", HostileSocket::everything(Behaviour::kWrongContentType), Expect::kRuntimeDown,
                    "/_ping"},
        HostileCase{"StallBeforeHeaders", HostileSocket::everything(Behaviour::kStallBeforeHeaders),
                    Expect::kRuntimeDown, "/_ping"},
        HostileCase{"StallMidBodyCalls", callsOnly(Behaviour::kStallMidBody), Expect::kCallsFail, "/containers/json"},
        HostileCase{"AncientApiVersion", withApiVersion("0.1"), Expect::kRuntimeDown, "/_ping"},
        HostileCase{"FutureApiVersion", withApiVersion("99.99"), Expect::kConnectedIdle, "/containers/json"},
        HostileCase{"EventsGarbageLines", eventsOnly(Behaviour::kEventsGarbageLines), Expect::kConnectedIdle,
                    "/events"},
        HostileCase{"EventsEndlessLine", eventsOnly(Behaviour::kEventsEndlessLine), Expect::kConnectedIdle, "/events"},
        HostileCase{"EventsHugeFields", eventsOnly(Behaviour::kEventsHugeFields), Expect::kConnectedIdle, "/events"}),
    [](const ::testing::TestParamInfo<HostileCase>& param) { return param.param.name; });

// ---- Stalls: the endpoints and shutdown stay prompt ------------------------------------------------

class HostileStallTest : public HostileRuntimeTest, public ::testing::WithParamInterface<HostileCase> {};

TEST_P(HostileStallTest, EndpointsAnswerAndSigtermEndsTheAgentWhileThePeerStalls) {
  const HostileCase& param = GetParam();
  ASSERT_NO_FATAL_FAILURE(startHostile(param.script));
  ASSERT_NO_FATAL_FAILURE(startAgent("docker"));
  // The peer holds at least one request unanswered right now.
  ASSERT_TRUE(observe([&] { return hostile_->requestsTo(param.asked) >= 2; }, 30s)) << observeFailure_;

  for (const char* path : {"/livez", "/readyz", "/status", "/metrics"}) {
    const auto asked = Clock::now();
    const auto reply = get(path, 5s);
    const auto took = Clock::now() - asked;
    EXPECT_NE(reply.status, 0) << path << ": " << reply.body;
    EXPECT_LT(took, 1s) << path << " took " << std::chrono::duration<double>(took).count() << "s";
  }
  EXPECT_EQ(get("/livez").status, 200);
  EXPECT_EQ(get("/readyz").status, 503);

  // Wait until a stalled request is in flight again, then stop the agent.
  const size_t seen = hostile_->requestCount();
  ASSERT_TRUE(observe([&] { return hostile_->requestCount() > seen; }, 30s)) << observeFailure_;
  const auto signalled = Clock::now();
  ASSERT_TRUE(agent_->kill(SIGTERM));
  const auto exitCode = agent_->wait(15s);
  const auto took = Clock::now() - signalled;
  ASSERT_TRUE(exitCode.has_value()) << "the agent ignored SIGTERM for 15s while the peer stalled";
  EXPECT_EQ(*exitCode, 0) << agent_->output().substr(0, 4000);
  EXPECT_LT(took, 5s) << "SIGTERM took " << std::chrono::duration<double>(took).count() << "s";
  std::cerr << "[ info ] " << param.name << ": SIGTERM to exit " << std::chrono::duration<double>(took).count()
            << "s\n";
}

INSTANTIATE_TEST_SUITE_P(Stalls, HostileStallTest,
                         ::testing::Values(HostileCase{"BeforeHeaders",
                                                       HostileSocket::everything(Behaviour::kStallBeforeHeaders),
                                                       Expect::kRuntimeDown, "/_ping"},
                                           HostileCase{"MidBodyOfACall", callsOnly(Behaviour::kStallMidBody),
                                                       Expect::kCallsFail, "/containers/json"}),
                         [](const ::testing::TestParamInfo<HostileCase>& param) { return param.param.name; });

// ---- containerd: gRPC over HTTP/2 gets nonsense --------------------------------------------------

class HostileContainerdTest : public HostileRuntimeTest, public ::testing::WithParamInterface<HostileCase> {};

TEST_P(HostileContainerdTest, AgentStaysUpReportsItAndRecoversWhenContainerdIsBack) {
  const HostileCase& param = GetParam();
  ASSERT_NO_FATAL_FAILURE(startContainerd());
  ASSERT_NO_FATAL_FAILURE(startHostile(param.script));
  ASSERT_NO_FATAL_FAILURE(startAgent("containerd"));

  // gRPC opens with the HTTP/2 preface ("PRI * HTTP/2.0"), which the peer answers as told.
  const bool reported = observe(
      [&] {
        json s = status();
        return hostile_->requestsTo(param.asked) >= 2 && s.contains("runtime") && s["runtime"]["up"] == false &&
               !s.value("lastError", "").empty();
      },
      40s);
  ASSERT_TRUE(observeFailure_.empty()) << observeFailure_;
  ASSERT_TRUE(reported) << status().dump(2) << "\npeer saw " << hostile_->requestCount() << " requests";

  const double cpuBefore = cpuSeconds(pid_);
  const size_t requestsBefore = hostile_->requestCount();
  const auto windowStart = Clock::now();
  EXPECT_TRUE(observe([&] { return Clock::now() - windowStart >= kHostileWindow; }, 30s));
  ASSERT_TRUE(observeFailure_.empty()) << observeFailure_;
  const double window = std::chrono::duration<double>(Clock::now() - windowStart).count();
  EXPECT_LT((cpuSeconds(pid_) - cpuBefore) / window, kMaxCpuShare);
  EXPECT_LT(double(hostile_->requestCount() - requestsBefore) / window, 10.0);
  EXPECT_EQ(get("/readyz").status, 503);
  EXPECT_EQ(metricMax(metrics(), "qcs_runtime_up"), 0);
  expectMemoryBounded();

  hostile_.reset();
  pointEndpointAt(containerd_->socketPath());
  const bool recovered = observe(
      [&] {
        auto tasks = containerd_->cli("-n " + ns_ + " tasks ls");
        return SensorView(*agent_).state() == "running" && tasks.ok() &&
               tasks->find(std::string(kSensorName)) != std::string::npos &&
               tasks->find("RUNNING") != std::string::npos;
      },
      60s);
  ASSERT_TRUE(observeFailure_.empty()) << observeFailure_;
  ASSERT_TRUE(recovered) << status().dump(2) << "\n" << agent_->output().substr(0, 20000);
  EXPECT_TRUE(observe([&] { return get("/readyz").status == 200; }, 20s)) << get("/readyz").body;
  EXPECT_EQ(agent_->pid(), pid_);
  EXPECT_EQ(status()["runtime"]["kind"], "containerd");
}

INSTANTIATE_TEST_SUITE_P(Behaviours, HostileContainerdTest,
                         ::testing::Values(HostileCase{"Garbage", HostileSocket::everything(Behaviour::kGarbage),
                                                       Expect::kRuntimeDown, "PRI"},
                                           HostileCase{"Stall",
                                                       HostileSocket::everything(Behaviour::kStallBeforeHeaders),
                                                       Expect::kRuntimeDown, "PRI"}),
                         [](const ::testing::TestParamInfo<HostileCase>& param) { return param.param.name; });

}  // namespace
}  // namespace qcs::testing

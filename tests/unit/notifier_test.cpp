// The systemd notifier against a NOTIFY_SOCKET this test owns, and the supervisor loop's watchdog
// pings: they flow while the loop turns and stop when it is stuck.
#include "agent/notifier.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "agent/sensor_spec.h"
#include "fake_runtime.h"
#include "platform/registry_auth.h"

namespace qcs::agent {
namespace {

using namespace std::chrono_literals;
using testing::FakeRuntime;
using testing::ForwardingRuntime;

// A datagram socket standing in for systemd's notify socket; NOTIFY_SOCKET points at it while it lives.
class NotifySocket {
 public:
  NotifySocket() {
    char dir[] = "/tmp/qcs-notify-XXXXXX";
    dir_ = mkdtemp(dir);
    path_ = dir_ + "/notify.sock";
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    bound_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::close(fd_);
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  bool bound() const { return bound_; }

  // The next message, or "" when none arrives within the deadline.
  std::string next(std::chrono::milliseconds deadline = 5s) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(deadline.count())) <= 0) return "";
    char buffer[4096];
    ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<size_t>(n)) : "";
  }
  // Waits until a message satisfying pred arrives; false when the deadline passes first.
  bool waitFor(const std::function<bool(const std::string&)>& pred, std::chrono::milliseconds deadline = 5s) {
    auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
      std::string message = next(std::max(left, 1ms));
      if (!message.empty() && pred(message)) return true;
    }
    return false;
  }
  // Discards what is queued now.
  void drain() {
    while (!next(0ms).empty()) {
    }
  }

 private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

TEST(Notifier, SendsReadyStatusWatchdogAndStopping) {
  NotifySocket socket;
  ASSERT_TRUE(socket.bound());
  auto notifier = makeSystemdNotifier();
  notifier->ready();
  EXPECT_EQ(socket.next(), "READY=1");
  notifier->status("sensor running (abc) on docker");
  EXPECT_EQ(socket.next(), "STATUS=sensor running (abc) on docker");
  notifier->watchdog();
  EXPECT_EQ(socket.next(), "WATCHDOG=1");
  notifier->stopping();
  EXPECT_EQ(socket.next(), "STOPPING=1");
}

TEST(Notifier, WatchdogIntervalComesFromWatchdogUsec) {
  ::unsetenv("WATCHDOG_USEC");
  EXPECT_FALSE(watchdogInterval().has_value());
  NotifySocket socket;
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  ASSERT_TRUE(watchdogInterval().has_value());
  EXPECT_EQ(*watchdogInterval(), 30s);
}

TEST(Notifier, WithoutNotifySocketItIsANoOp) {
  ::unsetenv("NOTIFY_SOCKET");
  auto notifier = makeSystemdNotifier();
  notifier->ready();
  notifier->status("x");
  notifier->watchdog();
  notifier->stopping();
  SUCCEED();
}

TEST(StatusLine, SaysWhatTheAgentIsDoing) {
  SupervisorStatus s;
  s.runtimeKind = "docker";
  s.runtimeUp = true;
  s.state = SensorState::kRunning;
  s.containerId = "abc123def4567890";
  EXPECT_EQ(statusLine(s), "sensor running (abc123def456) on docker");
  s.state = SensorState::kBackoff;
  s.backoffSeconds = 4;
  EXPECT_EQ(statusLine(s), "sensor backoff on docker; retrying in 4s");
  s.runtimeUp = false;
  s.state = SensorState::kRuntimeDown;
  EXPECT_EQ(statusLine(s), "sensor runtime-down; docker unreachable");
}

// A runtime whose listContainers can be made to hang until released: a wedged supervisor loop.
class LatchRuntime final : public testing::ForwardingRuntime {
 public:
  explicit LatchRuntime(FakeRuntime& inner) : ForwardingRuntime(inner) {}

  void arm() {
    std::lock_guard lock(mu_);
    armed_ = true;
  }
  bool waitUntilStuck(std::chrono::milliseconds deadline) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, deadline, [&] { return stuck_; });
  }
  void release() {
    std::lock_guard lock(mu_);
    armed_ = false;
    cv_.notify_all();
  }

  Result<std::vector<runtime::ContainerInfo>> listContainers(const std::map<std::string, std::string>& l) override {
    {
      std::unique_lock lock(mu_);
      if (armed_) {
        stuck_ = true;
        cv_.notify_all();
        cv_.wait(lock, [&] { return !armed_; });
        stuck_ = false;
      }
    }
    return ForwardingRuntime::listContainers(l);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool armed_ = false;
  bool stuck_ = false;
};

class OneRuntimeConnector final : public RuntimeConnector {
 public:
  explicit OneRuntimeConnector(std::unique_ptr<runtime::ContainerRuntime> runtime) : runtime_(std::move(runtime)) {}
  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    if (!runtime_) return makeError(ErrorCode::kUnavailable, "already handed out");
    return std::move(runtime_);
  }

 private:
  std::unique_ptr<runtime::ContainerRuntime> runtime_;
};

class FixedSpec final : public DesiredSpecSource {
 public:
  Result<runtime::ContainerSpec> desiredSpec(const runtime::RuntimeInfo&) override {
    runtime::ContainerSpec spec;
    spec.name = "qualys-container-sensor";
    spec.image = "qualys/sensor:1";
    spec.labels = {{kLabelManaged, "true"}, {kLabelSpecHash, "h1"}};
    return spec;
  }
};

class HalfRandom final : public Random {
 public:
  double uniform() override { return 0.5; }
};

TEST(SupervisorWatchdog, PingsFromTheLoopAndStopsWhenTheLoopIsStuck) {
  NotifySocket socket;
  ASSERT_TRUE(socket.bound());
  ::setenv("WATCHDOG_USEC", "100000", 1);  // 100ms: the loop must wake every 50ms
  auto interval = watchdogInterval();
  ASSERT_TRUE(interval.has_value());

  SystemClock clock;
  FakeRuntime fake(clock);
  fake.images.insert("qualys/sensor:1");
  auto latchOwned = std::make_unique<LatchRuntime>(fake);
  LatchRuntime& latch = *latchOwned;
  OneRuntimeConnector connector(std::move(latchOwned));
  FixedSpec spec;
  HalfRandom random;
  auto auth = platform::makeNoAuth();
  SupervisorOptions options;
  options.reconcileInterval = 1h;  // nothing is due: only the heartbeat wakes the loop
  options.heartbeatInterval = std::chrono::duration_cast<std::chrono::milliseconds>(*interval / 2);
  Supervisor supervisor(connector, spec, *auth, clock, random, options);

  auto notifier = makeSystemdNotifier();
  LoopNotifier loopNotifier(*notifier, /*watchdogEnabled=*/true);
  supervisor.setHeartbeat([&] { loopNotifier.onLoop(supervisor.status()); });
  std::thread loop([&] { supervisor.run(); });

  EXPECT_TRUE(socket.waitFor([](const std::string& m) { return m.rfind("STATUS=sensor running (", 0) == 0; }));
  EXPECT_TRUE(socket.waitFor([](const std::string& m) { return m == "READY=1"; }));
  // Pings keep coming while nothing else happens.
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(socket.waitFor([](const std::string& m) { return m == "WATCHDOG=1"; }, 2s)) << i;
  }

  // Wedge the loop inside a runtime call: the pings stop.
  latch.arm();
  supervisor.post({runtime::RuntimeEvent::Kind::kContainerExited, "x", 0, ""});
  ASSERT_TRUE(latch.waitUntilStuck(5s));
  socket.drain();  // pings sent before the loop got stuck
  EXPECT_FALSE(socket.waitFor([](const std::string& m) { return m == "WATCHDOG=1"; }, 10 * options.heartbeatInterval))
      << "a stuck loop must not ping the watchdog";

  // Unwedged, it pings again.
  latch.release();
  EXPECT_TRUE(socket.waitFor([](const std::string& m) { return m == "WATCHDOG=1"; }, 5s));

  supervisor.requestStop();
  loop.join();
  notifier->stopping();
  EXPECT_TRUE(socket.waitFor([](const std::string& m) { return m == "STOPPING=1"; }));
}

}  // namespace
}  // namespace qcs::agent

#include "agent/notifier.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>

namespace qcs::agent {

namespace {

class SystemdNotifier final : public Notifier {
 public:
  void ready() override { send("READY=1"); }
  void status(const std::string& text) override { send("STATUS=" + text); }
  void watchdog() override { send("WATCHDOG=1"); }
  void stopping() override { send("STOPPING=1"); }

 private:
  // unset_environment=0: the variables stay for later calls (and for the tests that set them).
  static void send(const std::string& message) { sd_notify(0, message.c_str()); }
};

class NoopNotifier final : public Notifier {
 public:
  void ready() override {}
  void status(const std::string&) override {}
  void watchdog() override {}
  void stopping() override {}
};

}  // namespace

std::unique_ptr<Notifier> makeSystemdNotifier() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket == nullptr || *socket == '\0') return makeNoopNotifier();
  return std::make_unique<SystemdNotifier>();
}

std::unique_ptr<Notifier> makeNoopNotifier() { return std::make_unique<NoopNotifier>(); }

std::optional<std::chrono::microseconds> watchdogInterval() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
  return std::chrono::microseconds(usec);
}

std::string statusLine(const SupervisorStatus& s) {
  const std::string runtime = s.runtimeKind.empty() ? "the runtime" : s.runtimeKind;
  std::string line = std::string("sensor ") + sensorStateName(s.state);
  if (!s.containerId.empty() && s.state == SensorState::kRunning) line += " (" + s.containerId.substr(0, 12) + ")";
  if (!s.runtimeUp) return line + "; " + runtime + " unreachable";
  line += " on " + runtime;
  if (s.state == SensorState::kBackoff || s.state == SensorState::kFailed) {
    char delay[32];
    std::snprintf(delay, sizeof delay, "%.0fs", s.backoffSeconds);
    line += "; retrying in " + std::string(delay);
  }
  return line;
}

void LoopNotifier::onLoop(const SupervisorStatus& status) {
  std::string line = statusLine(status);
  if (line != lastStatus_) {
    notifier_.status(line);
    lastStatus_ = std::move(line);
  }
  if (!readySent_ && status.firstReconcileDone) {
    notifier_.ready();
    readySent_ = true;
  }
  if (watchdog_) notifier_.watchdog();
}

}  // namespace qcs::agent

// Notifier: tells the service manager what the agent is doing (systemd's sd_notify protocol).
//
// Contract:
// - makeSystemdNotifier() returns the sd_notify implementation when NOTIFY_SOCKET is set and a
//   no-op one otherwise, so the agent behaves the same outside systemd.
// - Calls never block for long and never fail the caller: the service manager may be gone.
// - watchdog() must only be called from the supervisor loop (through LoopNotifier), so that a
//   wedged loop stops the pings and systemd restarts the agent.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "agent/supervisor.h"

namespace qcs::agent {

class Notifier {
 public:
  virtual ~Notifier() = default;
  virtual void ready() = 0;                          // READY=1
  virtual void status(const std::string& text) = 0;  // STATUS=<text>
  virtual void watchdog() = 0;                       // WATCHDOG=1
  virtual void stopping() = 0;                       // STOPPING=1
};

std::unique_ptr<Notifier> makeSystemdNotifier();
std::unique_ptr<Notifier> makeNoopNotifier();

// The watchdog interval systemd asks for (WATCHDOG_USEC for this process), or nullopt when the
// watchdog is off.
std::optional<std::chrono::microseconds> watchdogInterval();

// One line for STATUS=: "sensor running (abc123def456) on docker".
std::string statusLine(const SupervisorStatus& status);

// Runs on the supervisor loop after every step (Supervisor::setHeartbeat): sends READY=1 once the
// HTTP listener is bound (the caller constructs it after binding) and the first reconcile ran,
// STATUS= when the line changes, and WATCHDOG=1 when the watchdog is on.
class LoopNotifier {
 public:
  LoopNotifier(Notifier& notifier, bool watchdogEnabled) : notifier_(notifier), watchdog_(watchdogEnabled) {}
  void onLoop(const SupervisorStatus& status);

 private:
  Notifier& notifier_;
  bool watchdog_;
  bool readySent_ = false;
  std::string lastStatus_;
};

}  // namespace qcs::agent

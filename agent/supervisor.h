// Supervisor: keeps exactly one sensor container running with the desired spec.
//
// It is driven by runtime events (posted from the event watcher's thread) and by timers (the
// periodic reconcile, restart backoff, runtime reconnect). All decisions happen in step(), on one
// thread, against the ContainerRuntime interface and an injected Clock, so the unit tests drive
// it with a fake runtime and simulated time. run() is the production loop around step(): it
// sleeps on a condition variable until the next deadline, the next event or the next heartbeat
// (SupervisorOptions::heartbeatInterval); it never polls the runtime.
//
// What it does on each reconcile (SPEC "Supervision"):
// - the sensor is running with the desired spec hash: adopt it (no restart, no duplicate);
// - it runs with another spec hash: replace it (reason drift);
// - it exited: restart it in place after the backoff delay (reason exit or oom; exit 24 is
//   recoverable, other codes 1..127 irrecoverable and wait the maximum each time);
// - it is missing: pull per policy, create and start (reason missing if it existed before);
// - other containers carrying the managed label are stray copies: remove them;
// - a container with the sensor's name that the agent did not create is never touched: the
//   supervisor reports the conflict and waits for the operator.
//
// Health probes (HealthProbeOptions, off by default): while the sensor runs and its startup grace
// has passed, every period the supervisor runs an exec probe in the container and/or checks that
// the sensor wrote output recently. failureThreshold failures in a row stop the sensor and start
// it again after the restart backoff, counted as reason unhealthy (the exit the stop causes is
// not counted again as an exit). Probes run on the loop's thread, scheduled like any deadline.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/backoff.h"
#include "common/clock.h"
#include "common/random.h"
#include "common/result.h"
#include "platform/registry_auth.h"
#include "runtime/container_runtime.h"

namespace qcs::agent {

enum class SensorState {
  kPending,      // not reconciled yet
  kPulling,      // pulling the image
  kStarting,     // creating/starting the container
  kRunning,      // running with the desired spec
  kBackoff,      // exited or failed to start; waiting to retry
  kFailed,       // exited irrecoverably; waiting the maximum delay to retry
  kBlocked,      // cannot proceed without the operator (name conflict, secrets unreadable)
  kRuntimeDown,  // the runtime is unreachable
  kStopped,      // the agent stopped it on shutdown (on_stop: stop)
};
const char* sensorStateName(SensorState state);
inline constexpr SensorState kAllSensorStates[] = {
    SensorState::kPending, SensorState::kPulling,     SensorState::kStarting,
    SensorState::kRunning, SensorState::kBackoff,     SensorState::kFailed,
    SensorState::kBlocked, SensorState::kRuntimeDown, SensorState::kStopped};

enum class RestartReason { kExit, kOom, kMissing, kDrift, kUnhealthy, kRuntime };
const char* restartReasonName(RestartReason reason);

struct SupervisorStatus {
  std::string runtimeKind;
  std::string runtimeEndpoint;
  std::string runtimeVersion;
  bool runtimeUp = false;
  SensorState state = SensorState::kPending;
  std::string containerId;
  std::string image;
  std::string imageId;
  std::string specHash;
  std::map<RestartReason, uint64_t> restarts;
  std::optional<int> lastExitCode;
  bool lastExitOom = false;
  std::optional<WallTime> sensorStartedAt;
  uint64_t oomKills = 0;
  double backoffSeconds = 0;  // the delay currently being waited, 0 when none
  uint64_t pullsSucceeded = 0;
  uint64_t pullsFailed = 0;
  double lastPullSeconds = 0;
  uint64_t strayRemoved = 0;
  uint64_t reconciles = 0;
  // The runtime's event stream (the watcher redials it by itself): whether it is connected now, how
  // many times it was lost, and the runtime's word on the last loss. While it is down, exits are
  // only noticed by the periodic reconcile.
  bool eventStreamConnected = false;
  uint64_t eventStreamLosses = 0;
  std::string lastEventStreamLoss;
  bool firstReconcileDone = false;
  std::string lastError;  // never holds a secret
  // Liveness: when the loop last completed a step (or made progress inside a long one, e.g. a pull).
  std::optional<SteadyTime> lastHeartbeat;
  // The sensor's last resource sample (SupervisorOptions::statsInterval) and the container it
  // came from; a new container starts its CPU time from zero again.
  std::string statsContainerId;
  double sensorCpuSeconds = 0;
  int64_t sensorMemoryBytes = 0;
  // Health probes: whether any is configured, the failures in a row of the current container, and
  // the last probe's result ("ok", or why it failed; "" before the first probe).
  bool healthProbes = false;
  int probeFailures = 0;
  std::string lastProbeResult;
  std::optional<WallTime> lastProbeAt;
};

// Opens the runtime; called again while it fails. Detection lives behind it.
class RuntimeConnector {
 public:
  virtual ~RuntimeConnector() = default;
  virtual Result<std::unique_ptr<runtime::ContainerRuntime>> connect() = 0;
};

// The spec the sensor should run with; re-evaluated on every reconcile so that changed secrets
// are noticed. The spec's labels carry its hash.
class DesiredSpecSource {
 public:
  virtual ~DesiredSpecSource() = default;
  virtual Result<runtime::ContainerSpec> desiredSpec(const runtime::RuntimeInfo& runtime) = 0;
};

struct HealthProbeOptions {
  std::vector<std::string> execCommand;           // empty = no exec probe
  std::chrono::milliseconds quietAfter{0};        // 0 = no output probe
  std::chrono::milliseconds startupGrace{60000};  // from the container's start
  std::chrono::milliseconds period{30000};
  std::chrono::milliseconds timeout{10000};  // of the exec probe
  int failureThreshold = 3;
  bool enabled() const { return !execCommand.empty() || quietAfter.count() > 0; }
};

struct SupervisorOptions {
  std::string sensorName = "qualys-container-sensor";
  std::string pullPolicy = "if-not-present";
  BackoffPolicy backoff;
  std::chrono::milliseconds reconcileInterval{30000};
  bool stopSensorOnShutdown = false;
  std::chrono::seconds stopTimeout{30};
  int crashLogLines = 30;
  std::chrono::milliseconds reconnectInitial{500};
  std::chrono::milliseconds reconnectMax{30000};
  // How often the running sensor's CPU and memory are sampled (0 = never).
  std::chrono::milliseconds statsInterval{0};
  // run() wakes at least this often to record a heartbeat, even when nothing is due (0 = only
  // when something is due). The systemd watchdog needs it at most WatchdogSec/2.
  std::chrono::milliseconds heartbeatInterval{0};
  HealthProbeOptions health;
};

class Supervisor {
 public:
  Supervisor(RuntimeConnector& connector, DesiredSpecSource& specSource, platform::RegistryAuthProvider& registryAuth,
             Clock& clock, Random& random, SupervisorOptions options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Thread-safe: queue a runtime event and wake the loop.
  void post(const runtime::RuntimeEvent& event);
  // Thread-safe: make run() return after the current step.
  void requestStop();

  // Does whatever is due now and returns when the next thing is due.
  SteadyTime step();
  // The production loop: step(), sleep until the deadline or an event, until requestStop().
  void run();
  // Ends supervision: stops the event watcher and, with on_stop: stop, the sensor.
  void shutdown();

  SupervisorStatus status() const;

  // Called on the loop's own thread after every step and during long steps that make progress
  // (image pulls), at most once a second in the latter case. A wedged loop stops calling it, which
  // is what the systemd watchdog relies on. Set before run().
  void setHeartbeat(std::function<void()> heartbeat);

 private:
  bool ensureRuntime(SteadyTime now);
  void markRuntimeDown(const Error& error, SteadyTime now);
  void reconcile(SteadyTime now);
  void handleExisting(const runtime::ContainerInfo& sensor, const runtime::ContainerSpec& desired, SteadyTime now);
  void handleExit(const runtime::ContainerInfo& sensor, SteadyTime now);
  void noteOom(const std::string& id, SteadyTime now);
  void handleMissing(const runtime::ContainerSpec& desired, SteadyTime now);
  Status ensureImage(const std::string& image);
  void onStarted(const std::string& id, SteadyTime now);
  void scheduleRetry(const Error& error, SteadyTime now);
  void copyCrashLog(const std::string& id);
  void setState(SensorState state);
  void setError(const std::string& message, const std::string& retryNote = "");
  bool handleRuntimeError(const Error& error, SteadyTime now);
  SteadyTime nextDeadline() const;
  void beat(bool fromLongStep);
  bool samplingStats() const;
  void sampleStats(SteadyTime now);
  void scheduleProbes(const std::string& id, std::optional<WallTime> startedAt, SteadyTime now);
  void stopProbing();
  bool probing() const;
  void runProbes(SteadyTime now);
  void restartUnhealthy(const std::string& why, SteadyTime now);

  template <typename Fn>
  void updateStatus(Fn&& fn) {
    std::lock_guard lock(mu_);
    fn(status_);
  }

  RuntimeConnector& connector_;
  DesiredSpecSource& specSource_;
  platform::RegistryAuthProvider& registryAuth_;
  Clock& clock_;
  SupervisorOptions options_;
  RestartBackoff backoff_;

  std::unique_ptr<runtime::ContainerRuntime> runtime_;
  std::unique_ptr<runtime::EventWatcher> watcher_;

  // Supervisor-thread state.
  bool runtimeUp_ = false;
  bool runtimeWasDown_ = false;  // the next exit found is blamed on the runtime, not the sensor
  int reconnectFailures_ = 0;
  SteadyTime reconnectAt_{};
  SteadyTime nextReconcileAt_{};
  std::optional<SteadyTime> restartAt_;
  bool reconcileRequested_ = true;
  std::string currentId_;
  std::string lastHandledExit_;
  std::optional<RestartReason> pendingReason_;
  static constexpr std::chrono::seconds kOomWindow{10};
  std::map<std::string, SteadyTime> oomSeen_;  // container id -> when the runtime reported an OOM
  struct HandledExit {
    std::string id;
    SteadyTime handledAt{};
    bool countedOom = false;
  } lastExit_;
  std::string lastLoggedError_;
  SteadyTime nextStatsAt_{};
  SteadyTime lastProgressBeat_{};
  std::function<void()> heartbeat_;
  // Health probes of the container probedId_ (empty: none being probed).
  std::string probedId_;
  std::optional<WallTime> probedStartedAt_;
  std::optional<SteadyTime> nextProbeAt_;
  int probeFailures_ = 0;
  std::string stoppedAsUnhealthy_;  // the container the probes stopped: its exit is not an exit

  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::deque<runtime::RuntimeEvent> events_;
  bool stopRequested_ = false;
  SupervisorStatus status_;
};

}  // namespace qcs::agent

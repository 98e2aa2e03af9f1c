#include "agent/supervisor.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "agent/sensor_spec.h"
#include "runtime/image_reference.h"

namespace qcs::agent {

using runtime::ContainerInfo;
using runtime::ContainerSpec;
using runtime::ContainerState;
using runtime::RuntimeEvent;

const char* sensorStateName(SensorState state) {
  switch (state) {
    case SensorState::kPending: return "pending";
    case SensorState::kPulling: return "pulling";
    case SensorState::kStarting: return "starting";
    case SensorState::kRunning: return "running";
    case SensorState::kBackoff: return "backoff";
    case SensorState::kFailed: return "failed";
    case SensorState::kBlocked: return "blocked";
    case SensorState::kRuntimeDown: return "runtime-down";
    case SensorState::kStopped: return "stopped";
  }
  return "unknown";
}

const char* restartReasonName(RestartReason reason) {
  switch (reason) {
    case RestartReason::kExit: return "exit";
    case RestartReason::kOom: return "oom";
    case RestartReason::kMissing: return "missing";
    case RestartReason::kDrift: return "drift";
    case RestartReason::kUnhealthy: return "unhealthy";
    case RestartReason::kRuntime: return "runtime";
  }
  return "unknown";
}

namespace {

std::string shortId(const std::string& id) { return id.substr(0, 12); }

double seconds(std::chrono::milliseconds d) { return static_cast<double>(d.count()) / 1000.0; }

// The sensor's own convention: 24 = recoverable, will retry; other codes from the sensor itself
// (1..127) mean it needs a configuration change. Codes above 128 are deaths by signal (a kill, a
// crash), which a restart may well cure.
bool isIrrecoverableExit(int exitCode) { return exitCode >= 1 && exitCode <= 127 && exitCode != 24; }

}  // namespace

Supervisor::Supervisor(RuntimeConnector& connector, DesiredSpecSource& specSource,
                       platform::RegistryAuthProvider& registryAuth, Clock& clock, Random& random,
                       SupervisorOptions options)
    : connector_(connector),
      specSource_(specSource),
      registryAuth_(registryAuth),
      clock_(clock),
      options_(std::move(options)),
      backoff_(options_.backoff, random) {
  auto now = clock_.now();
  reconnectAt_ = now;
  nextReconcileAt_ = now;
  status_.healthProbes = options_.health.enabled();
}

Supervisor::~Supervisor() { watcher_.reset(); }

void Supervisor::post(const RuntimeEvent& event) {
  {
    std::lock_guard lock(mu_);
    events_.push_back(event);
  }
  wake_.notify_one();
}

void Supervisor::requestStop() {
  {
    std::lock_guard lock(mu_);
    stopRequested_ = true;
  }
  wake_.notify_one();
}

SupervisorStatus Supervisor::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

void Supervisor::setHeartbeat(std::function<void()> heartbeat) { heartbeat_ = std::move(heartbeat); }

void Supervisor::beat(bool fromLongStep) {
  auto now = clock_.now();
  if (fromLongStep) {
    if (now - lastProgressBeat_ < std::chrono::seconds(1)) return;
    lastProgressBeat_ = now;
  }
  updateStatus([&](SupervisorStatus& s) { s.lastHeartbeat = now; });
  if (heartbeat_) heartbeat_();
}

bool Supervisor::samplingStats() const {
  return options_.statsInterval.count() > 0 && runtimeUp_ && !currentId_.empty() &&
         status().state == SensorState::kRunning;
}

void Supervisor::sampleStats(SteadyTime now) {
  nextStatsAt_ = now + options_.statsInterval;
  auto stats = runtime_->containerStats(currentId_);
  if (!stats) {
    // Usage figures are nice to have: a failure here never changes what the supervisor does.
    spdlog::debug("cannot read the sensor's resource usage: {}", stats.message());
    return;
  }
  updateStatus([&](SupervisorStatus& s) {
    s.statsContainerId = currentId_;
    s.sensorCpuSeconds = stats->cpuSeconds;
    s.sensorMemoryBytes = stats->memoryBytes;
  });
}

void Supervisor::setState(SensorState state) {
  SensorState before;
  {
    std::lock_guard lock(mu_);
    before = status_.state;
    status_.state = state;
  }
  if (before != state) spdlog::debug("sensor state {} -> {}", sensorStateName(before), sensorStateName(state));
}

void Supervisor::setError(const std::string& message, const std::string& retryNote) {
  updateStatus([&](SupervisorStatus& s) { s.lastError = message; });
  // The same problem found again on every retry is logged once, not on every attempt.
  if (message != lastLoggedError_) {
    spdlog::error("{}{}", message, retryNote.empty() ? "" : " (" + retryNote + ")");
    lastLoggedError_ = message;
  } else if (!retryNote.empty()) {
    spdlog::debug("still failing: {} ({})", message, retryNote);
  }
}

SteadyTime Supervisor::step() {
  std::deque<RuntimeEvent> events;
  {
    std::lock_guard lock(mu_);
    events.swap(events_);
  }
  for (const auto& event : events) {
    switch (event.kind) {
      case RuntimeEvent::Kind::kStreamLost:
        spdlog::warn("runtime event stream lost: {}", event.detail);
        updateStatus([&](SupervisorStatus& s) {
          s.eventStreamConnected = false;
          ++s.eventStreamLosses;
          s.lastEventStreamLoss = event.detail;
        });
        reconcileRequested_ = true;
        break;
      case RuntimeEvent::Kind::kStreamConnected:
        spdlog::debug("runtime event stream connected");
        updateStatus([](SupervisorStatus& s) { s.eventStreamConnected = true; });
        reconcileRequested_ = true;
        if (!runtimeUp_) reconnectAt_ = clock_.now();
        break;
      case RuntimeEvent::Kind::kContainerOom:
        noteOom(event.containerId, clock_.now());
        reconcileRequested_ = true;
        break;
      case RuntimeEvent::Kind::kContainerExited:
      case RuntimeEvent::Kind::kContainerRemoved:
      case RuntimeEvent::Kind::kContainerStarted: reconcileRequested_ = true; break;
    }
  }

  auto now = clock_.now();
  if (!runtimeUp_) {
    if (now >= reconnectAt_ && ensureRuntime(now)) reconcileRequested_ = true;
  }
  if (runtimeUp_) {
    bool due = reconcileRequested_ || now >= nextReconcileAt_ || (restartAt_ && now >= *restartAt_);
    if (due) reconcile(now);
  }
  if (samplingStats() && now >= nextStatsAt_) sampleStats(now);
  if (probing() && now >= *nextProbeAt_) runProbes(clock_.now());
  updateStatus([&](SupervisorStatus& s) { s.lastHeartbeat = clock_.now(); });
  return nextDeadline();
}

SteadyTime Supervisor::nextDeadline() const {
  if (!runtimeUp_) return reconnectAt_;
  SteadyTime next = nextReconcileAt_;
  if (restartAt_) next = std::min(next, *restartAt_);
  if (probing()) next = std::min(next, *nextProbeAt_);
  if (samplingStats()) next = std::min(next, nextStatsAt_);
  return next;
}

void Supervisor::run() {
  for (;;) {
    SteadyTime deadline = step();
    if (heartbeat_) heartbeat_();
    if (options_.heartbeatInterval.count() > 0) {
      deadline = std::min(deadline, clock_.now() + options_.heartbeatInterval);
    }
    std::unique_lock lock(mu_);
    if (stopRequested_) break;
    // Sleeps until the next deadline or a posted event: no polling.
    wake_.wait_until(lock, deadline, [&] { return stopRequested_ || !events_.empty(); });
    if (stopRequested_) break;
  }
}

void Supervisor::shutdown() {
  watcher_.reset();
  if (options_.stopSensorOnShutdown && runtime_ && !currentId_.empty()) {
    spdlog::info("stopping sensor {} (supervision.on_stop: stop)", shortId(currentId_));
    if (auto st = runtime_->stopContainer(currentId_, options_.stopTimeout); !st && st.code() != ErrorCode::kNotFound) {
      spdlog::error("stopping the sensor failed: {}", st.message());
    } else {
      setState(SensorState::kStopped);
    }
  } else if (!currentId_.empty()) {
    spdlog::info("leaving sensor {} running (supervision.on_stop: leave)", shortId(currentId_));
  }
}

bool Supervisor::ensureRuntime(SteadyTime now) {
  if (!runtime_) {
    auto connected = connector_.connect();
    if (!connected) {
      markRuntimeDown(connected.error(), now);
      return false;
    }
    runtime_ = std::move(connected.value());
    watcher_ = runtime_->watchEvents({{kLabelManaged, "true"}}, [this](const RuntimeEvent& e) { post(e); });
  } else if (auto ping = runtime_->ping(); !ping) {
    markRuntimeDown(ping.error(), now);
    return false;
  }
  const auto& info = runtime_->info();
  if (reconnectFailures_ > 0 || status().state == SensorState::kRuntimeDown) {
    spdlog::info("{} runtime is back at {}", info.kind, info.endpoint);
  } else {
    spdlog::info("using {} {} at {} (API {})", info.kind, info.version, info.endpoint, info.apiVersion);
  }
  runtimeUp_ = true;
  reconnectFailures_ = 0;
  updateStatus([&](SupervisorStatus& s) {
    s.runtimeUp = true;
    s.runtimeKind = info.kind;
    s.runtimeEndpoint = info.endpoint;
    s.runtimeVersion = info.version;
  });
  return true;
}

void Supervisor::markRuntimeDown(const Error& error, SteadyTime now) {
  bool wasUp = runtimeUp_;
  runtimeUp_ = false;
  if (wasUp || runtime_) runtimeWasDown_ = true;
  auto delay = std::min<std::chrono::milliseconds>(
      options_.reconnectMax, options_.reconnectInitial * (1LL << std::min(reconnectFailures_, 16)));
  ++reconnectFailures_;
  reconnectAt_ = now + delay;
  updateStatus([&](SupervisorStatus& s) { s.runtimeUp = false; });
  setState(SensorState::kRuntimeDown);
  setError("runtime unavailable: " + error.message, "retrying in " + std::to_string(delay.count()) + "ms");
}

bool Supervisor::handleRuntimeError(const Error& error, SteadyTime now) {
  // "Unavailable" may be the registry behind a pull rather than the runtime: only a failed ping
  // says the runtime itself is gone.
  if (error.code == ErrorCode::kUnavailable || error.code == ErrorCode::kTimeout) {
    if (auto ping = runtime_->ping(); !ping) {
      markRuntimeDown(ping.error(), now);
      return true;
    }
  }
  scheduleRetry(error, now);
  return false;
}

void Supervisor::scheduleRetry(const Error& error, SteadyTime now) {
  auto delay = backoff_.nextDelay(false);
  restartAt_ = now + delay;
  updateStatus([&](SupervisorStatus& s) { s.backoffSeconds = seconds(delay); });
  setState(SensorState::kBackoff);
  setError(error.message, "retrying in " + std::to_string(delay.count()) + "ms");
}

void Supervisor::reconcile(SteadyTime now) {
  reconcileRequested_ = false;
  nextReconcileAt_ = now + options_.reconcileInterval;
  updateStatus([](SupervisorStatus& s) { ++s.reconciles; });

  auto desired = specSource_.desiredSpec(runtime_->info());
  if (!desired) {
    // Keep whatever runs: a secret that cannot be read now is no reason to stop the sensor.
    if (currentId_.empty()) setState(SensorState::kBlocked);
    setError("cannot build the sensor spec: " + desired.message());
    updateStatus([](SupervisorStatus& s) { s.firstReconcileDone = true; });
    return;
  }
  const std::string& desiredHash = desired->labels[kLabelSpecHash];
  updateStatus([&](SupervisorStatus& s) {
    s.specHash = desiredHash;
    s.image = desired->image;
  });

  auto managed = runtime_->listContainers({{kLabelManaged, "true"}});
  if (!managed) {
    handleRuntimeError(managed.error(), now);
    return;
  }
  std::optional<ContainerInfo> sensor;
  for (const auto& c : managed.value()) {
    if (c.name == options_.sensorName && !sensor) {
      sensor = c;
      continue;
    }
    spdlog::warn("removing stray copy of the sensor: container {} ({}) carries {}=true", c.name, shortId(c.id),
                 kLabelManaged);
    auto removed = runtime_->removeContainer(c.id, /*force=*/true);
    if (!removed && removed.code() != ErrorCode::kNotFound) {
      if (handleRuntimeError(removed.error(), now)) return;
    } else {
      updateStatus([](SupervisorStatus& s) { ++s.strayRemoved; });
    }
  }

  if (!sensor) {
    auto byName = runtime_->inspectContainer(options_.sensorName);
    if (byName) {
      setState(SensorState::kBlocked);
      setError("a container named " + options_.sensorName + " (" + shortId(byName->id) +
               ") exists that qcs-agent did not create; remove it (docker rm -f " + options_.sensorName +
               ") or set sensor.name to another name");
      updateStatus([](SupervisorStatus& s) { s.firstReconcileDone = true; });
      return;
    }
    if (byName.code() != ErrorCode::kNotFound) {
      handleRuntimeError(byName.error(), now);
      return;
    }
  }

  if (sensor) {
    auto label = sensor->labels.find(kLabelSpecHash);
    std::string hash = label == sensor->labels.end() ? "" : label->second;
    if (hash != desiredHash) {
      spdlog::info("sensor {} runs spec {} but the desired spec is {}: replacing it", shortId(sensor->id),
                   hash.substr(0, 12), desiredHash.substr(0, 12));
      auto removed = runtime_->removeContainer(sensor->id, /*force=*/true);
      if (!removed && removed.code() != ErrorCode::kNotFound) {
        handleRuntimeError(removed.error(), now);
        return;
      }
      // A first reconcile replacing an old sensor is a drift too: the sensor existed.
      if (pendingReason_ != RestartReason::kUnhealthy) pendingReason_ = RestartReason::kDrift;
      restartAt_.reset();
      stopProbing();
      currentId_.clear();
      sensor.reset();
    }
  }

  if (sensor) {
    handleExisting(*sensor, desired.value(), now);
  } else {
    handleMissing(desired.value(), now);
  }
  if (runtimeUp_) runtimeWasDown_ = false;
  updateStatus([](SupervisorStatus& s) { s.firstReconcileDone = true; });
}

void Supervisor::handleExisting(const ContainerInfo& sensor, const ContainerSpec& desired, SteadyTime now) {
  (void)desired;
  switch (sensor.state) {
    case ContainerState::kRunning:
    case ContainerState::kPaused:
    case ContainerState::kRestarting: {
      if (currentId_ != sensor.id) {
        if (currentId_.empty() && !pendingReason_) {
          spdlog::info("adopted running sensor {} (spec {})", shortId(sensor.id),
                       sensor.labels.count(kLabelSpecHash) ? sensor.labels.at(kLabelSpecHash).substr(0, 12) : "");
        }
        currentId_ = sensor.id;
      }
      if (probedId_ != sensor.id) scheduleProbes(sensor.id, sensor.startedAtTime, now);
      restartAt_.reset();
      lastLoggedError_.clear();
      if (sensor.startedAtTime && clock_.wallNow() - *sensor.startedAtTime >= options_.backoff.resetAfter) {
        backoff_.reset();
      }
      updateStatus([&](SupervisorStatus& s) {
        s.containerId = sensor.id;
        s.imageId = sensor.imageId;
        s.sensorStartedAt = sensor.startedAtTime;
        s.backoffSeconds = 0;
        s.lastError.clear();
      });
      setState(SensorState::kRunning);
      return;
    }
    case ContainerState::kRemoving:
      reconcileRequested_ = false;  // the destroy event will bring us back
      return;
    case ContainerState::kCreated:
    case ContainerState::kExited:
    case ContainerState::kDead:
    case ContainerState::kUnknown: break;
  }

  currentId_ = sensor.id;
  updateStatus([&](SupervisorStatus& s) { s.containerId = sensor.id; });
  bool neverStarted = sensor.state == ContainerState::kCreated;
  std::string exitKey = sensor.id + "|" + sensor.finishedAt;
  stopProbing();
  if (!neverStarted && exitKey != lastHandledExit_ && sensor.id == stoppedAsUnhealthy_) {
    // The exit the health probes caused: already counted as an unhealthy restart.
    lastHandledExit_ = exitKey;
    stoppedAsUnhealthy_.clear();
    if (!restartAt_) restartAt_ = now;
  } else if (!neverStarted && exitKey != lastHandledExit_) {
    lastHandledExit_ = exitKey;
    handleExit(sensor, now);
  } else if (!restartAt_) {
    restartAt_ = now;
  }
  if (restartAt_ && now < *restartAt_) return;

  spdlog::info("starting sensor {} again (in place; spec unchanged)", shortId(sensor.id));
  setState(SensorState::kStarting);
  if (auto started = runtime_->startContainer(sensor.id); !started) {
    if (started.code() == ErrorCode::kNotFound) {
      // Gone between the look and the start: look again, but after a backoff step, so that a
      // runtime that keeps saying "not found" for a container it lists cannot spin the loop.
      scheduleRetry(started.error(), now);
      reconcileRequested_ = true;
      return;
    }
    if (!handleRuntimeError(started.error(), now)) {
      spdlog::warn("start failed; the next attempt re-creates the container");
    }
    return;
  }
  onStarted(sensor.id, now);
}

// The runtime's OOM notice and the exit travel separate paths and may arrive in either order. A
// notice close to an exit (before or after it) makes that exit an OOM kill; an older one was
// about another process of the container that the kernel killed while the sensor kept running.
void Supervisor::noteOom(const std::string& id, SteadyTime now) {
  if (!lastExit_.countedOom && lastExit_.id == id && now - lastExit_.handledAt <= kOomWindow) {
    lastExit_.countedOom = true;
    updateStatus([](SupervisorStatus& s) {
      ++s.oomKills;
      s.lastExitOom = true;
    });
    if (pendingReason_ == RestartReason::kExit) pendingReason_ = RestartReason::kOom;
    spdlog::warn("sensor {} was OOM-killed (the runtime's OOM notice came after the exit)", shortId(id));
    return;
  }
  oomSeen_[id] = now;
}

void Supervisor::handleExit(const ContainerInfo& sensor, SteadyTime now) {
  auto seen = oomSeen_.find(sensor.id);
  bool oom = sensor.oomKilled || (seen != oomSeen_.end() && now - seen->second <= kOomWindow);
  if (seen != oomSeen_.end()) oomSeen_.erase(seen);
  lastExit_ = {sensor.id, now, oom};
  RestartReason reason = runtimeWasDown_ ? RestartReason::kRuntime : oom ? RestartReason::kOom : RestartReason::kExit;
  bool irrecoverable = reason == RestartReason::kExit && isIrrecoverableExit(sensor.exitCode);
  if (sensor.startedAtTime && clock_.wallNow() - *sensor.startedAtTime >= options_.backoff.resetAfter) {
    backoff_.reset();
  }
  auto delay = reason == RestartReason::kRuntime ? std::chrono::milliseconds(0) : backoff_.nextDelay(irrecoverable);
  restartAt_ = now + delay;
  pendingReason_ = reason;
  updateStatus([&](SupervisorStatus& s) {
    s.lastExitCode = sensor.exitCode;
    s.lastExitOom = oom;
    if (oom) ++s.oomKills;
    s.backoffSeconds = seconds(delay);
    s.sensorStartedAt.reset();
  });
  setState(irrecoverable ? SensorState::kFailed : SensorState::kBackoff);

  if (reason == RestartReason::kRuntime) {
    spdlog::warn("sensor {} stopped while the runtime was down (exit code {}); starting it again now",
                 shortId(sensor.id), sensor.exitCode);
  } else if (oom) {
    spdlog::warn("sensor {} was OOM-killed (exit code {}, memory limit reached); restart {} in {:.1f}s",
                 shortId(sensor.id), sensor.exitCode, backoff_.failures(), seconds(delay));
  } else if (irrecoverable) {
    spdlog::error(
        "sensor {} exited with code {}: the sensor reports an irrecoverable error that needs a "
        "configuration change (check its output below); retrying in {:.0f}s",
        shortId(sensor.id), sensor.exitCode, seconds(delay));
  } else {
    spdlog::warn("sensor {} exited with code {}{}; restart {} in {:.1f}s", shortId(sensor.id), sensor.exitCode,
                 sensor.exitCode == 24 ? " (recoverable, the sensor will retry)" : "", backoff_.failures(),
                 seconds(delay));
  }
  if (reason != RestartReason::kRuntime) copyCrashLog(sensor.id);
}

void Supervisor::copyCrashLog(const std::string& id) {
  if (options_.crashLogLines <= 0) return;
  auto lines = runtime_->logTail(id, options_.crashLogLines);
  if (!lines) {
    spdlog::warn("cannot read the sensor's last output: {}", lines.message());
    return;
  }
  spdlog::warn("last {} lines of sensor {} output:", lines->size(), shortId(id));
  for (const auto& line : lines.value()) spdlog::warn("sensor| {}", line);
}

void Supervisor::handleMissing(const ContainerSpec& desired, SteadyTime now) {
  stopProbing();
  if (!currentId_.empty()) {
    spdlog::warn("sensor container {} is gone; creating it again", shortId(currentId_));
    currentId_.clear();
    if (pendingReason_ != RestartReason::kUnhealthy) pendingReason_ = RestartReason::kMissing;
    auto delay = backoff_.nextDelay(false);
    restartAt_ = now + delay;
    updateStatus([&](SupervisorStatus& s) {
      s.containerId.clear();
      s.backoffSeconds = seconds(delay);
    });
    setState(SensorState::kBackoff);
  }
  if (restartAt_ && now < *restartAt_) return;

  if (auto image = ensureImage(desired.image); !image) {
    handleRuntimeError(image.error(), now);
    return;
  }
  setState(SensorState::kStarting);
  auto created = runtime_->createContainer(desired);
  if (!created) {
    if (created.code() == ErrorCode::kAlreadyExists) {
      // Someone created it between our list and our create: look again.
      reconcileRequested_ = true;
      return;
    }
    handleRuntimeError(withContext(created.error(), "creating the sensor container"), now);
    return;
  }
  currentId_ = created.value();
  spdlog::info("created sensor container {} ({})", shortId(currentId_), desired.image);
  if (auto started = runtime_->startContainer(currentId_); !started) {
    handleRuntimeError(withContext(started.error(), "starting the sensor container"), now);
    return;
  }
  onStarted(currentId_, now);
}

void Supervisor::onStarted(const std::string& id, SteadyTime now) {
  if (pendingReason_) {
    updateStatus([&](SupervisorStatus& s) { ++s.restarts[*pendingReason_]; });
    spdlog::info("sensor {} started (restart reason: {})", shortId(id), restartReasonName(*pendingReason_));
  } else {
    spdlog::info("sensor {} started", shortId(id));
  }
  pendingReason_.reset();
  restartAt_.reset();
  lastLoggedError_.clear();
  stoppedAsUnhealthy_.clear();
  auto info = runtime_->inspectContainer(id);
  scheduleProbes(id, info ? info->startedAtTime : std::nullopt, now);
  updateStatus([&](SupervisorStatus& s) {
    s.containerId = id;
    s.backoffSeconds = 0;
    s.lastError.clear();
    if (info) {
      s.imageId = info->imageId;
      s.sensorStartedAt = info->startedAtTime;
    }
  });
  setState(SensorState::kRunning);
}

// ---- Health probes -------------------------------------------------------------------------------

void Supervisor::scheduleProbes(const std::string& id, std::optional<WallTime> startedAt, SteadyTime now) {
  probedId_ = id;
  probedStartedAt_ = startedAt;
  probeFailures_ = 0;
  updateStatus([](SupervisorStatus& s) {
    s.probeFailures = 0;
    s.lastProbeResult.clear();
    s.lastProbeAt.reset();
  });
  if (!options_.health.enabled()) {
    nextProbeAt_.reset();
    return;
  }
  // The grace counts from the container's start: an adopted sensor that has run a while is probed now.
  auto grace = std::chrono::duration_cast<std::chrono::milliseconds>(options_.health.startupGrace);
  if (startedAt) {
    auto ranFor = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.wallNow() - *startedAt);
    grace = std::max(std::chrono::milliseconds(0), grace - std::max(std::chrono::milliseconds(0), ranFor));
  }
  nextProbeAt_ = now + grace;
}

void Supervisor::stopProbing() {
  probedId_.clear();
  probedStartedAt_.reset();
  nextProbeAt_.reset();
  probeFailures_ = 0;
}

bool Supervisor::probing() const {
  return nextProbeAt_.has_value() && runtimeUp_ && !probedId_.empty() && probedId_ == currentId_ &&
         status().state == SensorState::kRunning;
}

void Supervisor::runProbes(SteadyTime now) {
  const HealthProbeOptions& health = options_.health;
  nextProbeAt_ = now + health.period;
  std::string failure;  // empty: healthy

  if (!health.execCommand.empty()) {
    auto exec = runtime_->execInContainer(probedId_, health.execCommand, health.timeout);
    if (exec.ok()) {
      if (exec.value() != 0) failure = fmt::format("exec probe exited with code {}", exec.value());
    } else if (exec.code() == ErrorCode::kNotFound || exec.code() == ErrorCode::kConflict) {
      // The container is gone or no longer running: the reconcile deals with that, not the probe.
      reconcileRequested_ = true;
      return;
    } else if (exec.code() == ErrorCode::kUnavailable || exec.code() == ErrorCode::kTimeout) {
      if (auto ping = runtime_->ping(); !ping) {
        markRuntimeDown(ping.error(), now);
        return;
      }
      failure = exec.code() == ErrorCode::kTimeout
                    ? fmt::format("exec probe did not finish within {}ms", health.timeout.count())
                    : "exec probe failed: " + exec.message();
    } else {
      failure = "exec probe failed: " + exec.message();
    }
  }

  if (failure.empty() && health.quietAfter.count() > 0) {
    const WallTime wallNow = clock_.wallNow();
    auto last = runtime_->lastOutputTime(probedId_, wallNow - health.quietAfter);
    if (!last.ok()) {
      if (last.code() == ErrorCode::kNotFound) {
        reconcileRequested_ = true;
        return;
      }
      // Not knowing is not the sensor's fault: the probe is skipped, not failed.
      spdlog::warn("cannot read when the sensor last wrote output: {}", last.message());
      return;
    }
    if (!last.value()) {
      // Output from before this start does not count; a start less than quietAfter ago is not quiet yet.
      auto quietSince = probedStartedAt_;
      if (!quietSince || wallNow - *quietSince > health.quietAfter) {
        failure = fmt::format("no output for longer than {}ms (quiet_after)", health.quietAfter.count());
      }
    }
  }

  const WallTime probedAt = clock_.wallNow();
  if (failure.empty()) {
    if (probeFailures_ > 0) spdlog::info("sensor {} health probe passes again", shortId(probedId_));
    probeFailures_ = 0;
    updateStatus([&](SupervisorStatus& s) {
      s.probeFailures = 0;
      s.lastProbeResult = "ok";
      s.lastProbeAt = probedAt;
    });
    return;
  }
  ++probeFailures_;
  updateStatus([&](SupervisorStatus& s) {
    s.probeFailures = probeFailures_;
    s.lastProbeResult = failure;
    s.lastProbeAt = probedAt;
  });
  spdlog::warn("sensor {} health probe failed ({} of {}): {}", shortId(probedId_), probeFailures_,
               health.failureThreshold, failure);
  if (probeFailures_ >= health.failureThreshold) restartUnhealthy(failure, now);
}

void Supervisor::restartUnhealthy(const std::string& why, SteadyTime now) {
  const std::string id = probedId_;
  spdlog::error("sensor {} is unhealthy: {} ({} probes failed in a row); restarting it", shortId(id), why,
                probeFailures_);
  copyCrashLog(id);
  if (probedStartedAt_ && clock_.wallNow() - *probedStartedAt_ >= options_.backoff.resetAfter) backoff_.reset();
  stoppedAsUnhealthy_ = id;
  if (auto stopped = runtime_->stopContainer(id, options_.stopTimeout);
      !stopped && stopped.code() != ErrorCode::kNotFound) {
    stoppedAsUnhealthy_.clear();
    // Probing goes on; the next failure tries again.
    nextProbeAt_ = clock_.now() + options_.health.period;
    handleRuntimeError(withContext(stopped.error(), "stopping the unhealthy sensor"), now);
    return;
  }
  stopProbing();
  auto delay = backoff_.nextDelay(false);
  restartAt_ = now + delay;
  pendingReason_ = RestartReason::kUnhealthy;
  reconcileRequested_ = true;
  updateStatus([&](SupervisorStatus& s) {
    s.backoffSeconds = seconds(delay);
    s.sensorStartedAt.reset();
  });
  setState(SensorState::kBackoff);
  spdlog::warn("sensor {} stopped as unhealthy; restart {} in {:.1f}s", shortId(id), backoff_.failures(),
               seconds(delay));
}

Status Supervisor::ensureImage(const std::string& image) {
  const std::string& policy = options_.pullPolicy;
  if (policy != "always") {
    auto present = runtime_->imagePresent(image);
    if (!present) return present.error();
    if (present.value()) return okStatus();
    if (policy == "never") {
      return makeError(ErrorCode::kNotFound, "image " + image +
                                                 " is not on the node and sensor.pull_policy is never "
                                                 "(load the image, or set pull_policy: if-not-present)");
    }
  }
  auto ref = runtime::parseImageReference(image);
  if (!ref) return ref.error();
  auto credentials = registryAuth_.credentialsFor(ref.value());
  if (!credentials) return withContext(credentials.error(), "registry credentials for " + ref->registry);

  setState(SensorState::kPulling);
  spdlog::info("pulling {} ({} credentials)", image, credentials.value() ? registryAuth_.kind() : "no");
  auto started = clock_.now();
  std::string lastStatus;
  auto pulled = runtime_->pullImage(image, credentials.value(), [&](const runtime::PullProgress& p) {
    beat(/*fromLongStep=*/true);  // a long pull that makes progress is not a wedged loop
    // Layer progress is debug detail; the overall status lines are worth an info line.
    if (p.layer.empty() && p.status != lastStatus) {
      spdlog::info("pull {}: {}", image, p.status);
      lastStatus = p.status;
    } else {
      spdlog::debug("pull {}: {} {}", image, p.layer, p.status);
    }
  });
  double took = std::chrono::duration<double>(clock_.now() - started).count();
  updateStatus([&](SupervisorStatus& s) {
    s.lastPullSeconds = took;
    ++(pulled ? s.pullsSucceeded : s.pullsFailed);
  });
  if (!pulled) {
    if (policy == "always") {
      auto present = runtime_->imagePresent(image);
      if (present && present.value()) {
        spdlog::warn("pull of {} failed ({}); using the copy already on the node", image, pulled.message());
        return okStatus();
      }
    }
    return pulled.error();
  }
  spdlog::info("pulled {} in {:.1f}s", image, took);
  return okStatus();
}

}  // namespace qcs::agent

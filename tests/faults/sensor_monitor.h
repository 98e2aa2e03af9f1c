// SensorMonitor: watches the sensor containers of one runtime for the whole run, from the runtime's
// own event stream (Docker /events, containerd Events.Subscribe), independently of the agent.
//
// Contract:
// - Every start, exit, OOM and removal of a sensor container is recorded with the time the monitor
//   saw it and a sequence number; callers wait for "the next event after seq that matches".
// - "Running" is the set of sensor containers that started and have not exited since. Whenever two or
//   more are running at once, that is one duplicate (counted once per overlap, with a note).
// - When the stream breaks (the daemon restarts), the monitor reconnects on its own and resyncs from
//   a listing of what runs: a container running with another start than the one it knew counts as a
//   start (synthesized), one it thought running but is not counts as an exit.
// - While connected it still compares its view with a listing every ~2s and repairs it (events can
//   arrive out of order: dockerd may report a run's "die" only after the next run's "start" when it
//   could not write the container's state); a repair adds no start event, so start times stay the
//   stream's own.
// - Thread-safe. The watcher thread stops when the monitor is destroyed (within about a second).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"

namespace qcs::faults {

using SteadyClock = std::chrono::steady_clock;

struct SensorEvent {
  enum class Kind { kStart, kExit, kOom, kGone };
  Kind kind = Kind::kStart;
  std::string id;
  std::string instance;  // kStart: which start (Docker: StartedAt; containerd: the task's pid)
  int exitCode = 0;      // kExit
  SteadyClock::time_point at;
  uint64_t seq = 0;
  bool synthesized = false;  // inferred from a listing, not seen on the stream
};
const char* sensorEventKindName(SensorEvent::Kind kind);

class SensorMonitor {
 public:
  // What runs now: container id -> instance (as in SensorEvent::instance).
  using Listing = std::map<std::string, std::string>;

  virtual ~SensorMonitor();
  SensorMonitor(const SensorMonitor&) = delete;
  SensorMonitor& operator=(const SensorMonitor&) = delete;

  uint64_t lastSeq() const;
  // The first event after afterSeq that matches, waiting up to timeout for it.
  std::optional<SensorEvent> next(uint64_t afterSeq, const std::function<bool(const SensorEvent&)>& match,
                                  std::chrono::milliseconds timeout) const;
  // Whether id exited or went away after afterSeq.
  bool endedSince(const std::string& id, uint64_t afterSeq) const;
  Listing running() const;
  uint64_t duplicates() const;
  // Notes about duplicates found since the last call.
  std::vector<std::string> takeDuplicateNotes();
  // Whether the event stream is connected now.
  bool connected() const;

 protected:
  SensorMonitor() = default;
  void record(SensorEvent::Kind kind, const std::string& id, const std::string& instance = {}, int exitCode = 0);
  void resync(const Listing& truth);
  // The periodic repair; skipped (false) when an event arrived after seqBefore, as the listing may
  // then be older than what the monitor knows.
  bool repair(const Listing& truth, uint64_t seqBefore);
  void setConnected(bool connected);
  // Sleeps up to d, or until the monitor is being destroyed; false then.
  bool pause(std::chrono::milliseconds d);
  bool stopping() const;
  // Derived classes start their watcher with this and call stopWatcher() first in their destructor.
  void startWatcher(std::function<void()> loop);
  void stopWatcher();

 private:
  void appendLocked(SensorEvent event);
  void dropLocked(const std::string& id);
  void checkDuplicatesLocked();

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;
  std::deque<SensorEvent> events_;
  uint64_t seq_ = 0;
  Listing running_;
  uint64_t duplicates_ = 0;
  bool overlapping_ = false;
  std::vector<std::string> duplicateNotes_;
  bool connected_ = false;
  bool stopping_ = false;
  std::thread watcher_;
};

// Docker: /events of containers labelled io.qcs-agent.managed=true, read in one-second windows
// (since/until) so that nothing is lost between them; resyncs from /containers/json.
std::unique_ptr<SensorMonitor> startDockerMonitor(const std::string& socketPath);

// containerd: Events.Subscribe in the namespace (task start/exit/OOM, container delete); resyncs
// from listRunning (the namespace's running tasks).
std::unique_ptr<SensorMonitor> startContainerdMonitor(const std::string& socketPath, const std::string& nameSpace,
                                                      std::function<Result<SensorMonitor::Listing>()> listRunning);

}  // namespace qcs::faults

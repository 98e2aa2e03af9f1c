// ContainerRuntime: what the supervisor needs from a container engine, and nothing more.
//
// Contract:
// - Every call is synchronous, bounded by the implementation's own timeouts, and safe to call
//   from the supervisor thread while an EventWatcher runs on another thread.
// - Failures come back as Result errors whose message names the runtime, the endpoint and what
//   to do; kUnavailable/kTimeout mean "the runtime is gone or not answering" (retry later),
//   kNotFound means the object does not exist.
// - Implementations never log secret values: ContainerSpec env entries marked secret are sent to
//   the runtime and nowhere else.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace qcs::runtime {

struct EnvVar {
  std::string name;
  std::string value;
  bool secret = false;  // value must never leave the runtime call (logs, render, status)
};

struct Mount {
  std::string source;  // path on the host, as the runtime daemon sees it
  std::string target;  // path inside the container
  bool readOnly = false;
};

struct Resources {
  int64_t cpuRequestMilli = 0;     // 250 == 250m == a quarter of a core
  int64_t cpuLimitMilli = 0;       // 0 = no limit
  int64_t memoryRequestBytes = 0;  // 0 = none
  int64_t memoryLimitBytes = 0;    // 0 = no limit
};

struct LogConfig {
  std::string driver;  // empty = runtime default
  std::map<std::string, std::string> options;
};

// The complete, runtime-neutral description of the sensor container. The spec hash is computed
// over exactly this structure, so anything that changes what runs must live here.
struct ContainerSpec {
  std::string name;
  std::string image;
  std::vector<std::string> args;
  std::vector<EnvVar> env;
  std::vector<Mount> mounts;
  std::vector<std::string> capAdd;
  bool privileged = false;
  bool hostNetwork = true;
  Resources resources;
  std::map<std::string, std::string> labels;
  LogConfig log;
};

enum class ContainerState { kCreated, kRunning, kPaused, kRestarting, kExited, kDead, kRemoving, kUnknown };
const char* containerStateName(ContainerState state);

struct ContainerInfo {
  std::string id;
  std::string name;     // without Docker's leading '/'
  std::string image;    // the reference it was created from
  std::string imageId;  // content id / digest of the image
  std::map<std::string, std::string> labels;
  ContainerState state = ContainerState::kUnknown;
  int exitCode = 0;
  bool oomKilled = false;
  std::string startedAt;   // RFC 3339 as the runtime reports it ("" if never)
  std::string finishedAt;  // RFC 3339 as the runtime reports it ("" if never)
  std::optional<std::chrono::system_clock::time_point> startedAtTime;
};

// A point-in-time resource usage sample of one container.
struct ContainerStats {
  double cpuSeconds = 0;    // cumulative CPU time of all its processes since start
  int64_t memoryBytes = 0;  // working set: usage minus reclaimable page cache (as `docker stats`)
};

struct RegistryCredentials {
  std::string username;
  std::string password;       // secret
  std::string identityToken;  // secret (Docker's "identitytoken" / refresh token)
  std::string serverAddress;
};

struct PullProgress {
  std::string status;  // "Downloading", "Pull complete", ...
  std::string layer;   // layer id, if the line is about one
};
using PullProgressFn = std::function<void(const PullProgress&)>;

struct RuntimeInfo {
  std::string kind;        // "docker" | "containerd"
  std::string endpoint;    // the socket path in use
  std::string version;     // the daemon's version
  std::string apiVersion;  // the API version negotiated (Docker)
};

struct RuntimeEvent {
  enum class Kind {
    kContainerStarted,
    kContainerExited,   // die / task exit
    kContainerOom,      // the kernel OOM-killed a process of the container
    kContainerRemoved,  // destroy / container delete
    kStreamConnected,   // the event stream is (re)established: reconcile fully now
    kStreamLost,        // the event stream broke: the runtime may be gone
  };
  Kind kind;
  std::string containerId;
  std::optional<int> exitCode;
  std::string detail;  // e.g. why the stream was lost
};
using RuntimeEventFn = std::function<void(const RuntimeEvent&)>;

// What ContainerRuntime::removeLeftovers did: what it removed (named as the runtime names them) and
// what failed (each error names the object and carries the runtime's message).
struct LeftoverCleanup {
  std::vector<std::string> removed;
  std::vector<Error> failures;
};

// A background subscription to the runtime's event stream. It reconnects by itself (with its own
// capped backoff) and reports connection changes as kStreamConnected/kStreamLost events. The
// callback runs on the watcher's thread. Destroying the watcher stops it promptly.
class EventWatcher {
 public:
  virtual ~EventWatcher() = default;
};

class ContainerRuntime {
 public:
  virtual ~ContainerRuntime() = default;

  virtual const RuntimeInfo& info() const = 0;

  // A real round trip to the daemon (Docker /_ping, containerd Version).
  virtual Status ping() = 0;

  // Every container (running or not) carrying all the given labels.
  virtual Result<std::vector<ContainerInfo>> listContainers(const std::map<std::string, std::string>& labels) = 0;
  // The container with this name or id; kNotFound if there is none.
  virtual Result<ContainerInfo> inspectContainer(const std::string& nameOrId) = 0;

  // Whether the image is present locally.
  virtual Result<bool> imagePresent(const std::string& reference) = 0;
  // Pulls the image; credentials may be empty (anonymous). Errors carry the registry's message.
  virtual Status pullImage(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
                           const PullProgressFn& progress) = 0;
  // The local image id/digest for a reference ("" if unknown).
  virtual Result<std::string> imageId(const std::string& reference) = 0;

  // Creates the container (not started) and returns its id.
  virtual Result<std::string> createContainer(const ContainerSpec& spec) = 0;
  virtual Status startContainer(const std::string& id) = 0;
  virtual Status stopContainer(const std::string& id, std::chrono::seconds grace) = 0;
  // Removes the container, killing it first when force is set. kNotFound if already gone.
  virtual Status removeContainer(const std::string& id, bool force) = 0;

  // The last `lines` lines of the container's stdout and stderr, oldest first.
  virtual Result<std::vector<std::string>> logTail(const std::string& id, int lines) = 0;

  // One resource usage sample of a running container; kNotFound if it does not exist.
  virtual Result<ContainerStats> containerStats(const std::string& id) = 0;

  // Runs `command` inside the running container (a health probe) and returns its exit code.
  // kTimeout when it has not finished within `timeout` (it is left to end on its own);
  // kNotFound when the container does not exist, kConflict when it is not running.
  virtual Result<int> execInContainer(const std::string& id, const std::vector<std::string>& command,
                                      std::chrono::milliseconds timeout) = 0;

  // When the container last wrote a line to stdout or stderr, looking no further back than
  // `since`; nullopt when it wrote nothing since then.
  virtual Result<std::optional<std::chrono::system_clock::time_point>> lastOutputTime(
      const std::string& id, std::chrono::system_clock::time_point since) = 0;

  // Removes what an earlier agent process left in the runtime when it was killed mid-way and that
  // nothing else releases soon: containerd's agent leases made before this connection (they keep
  // half-written content and snapshots from collection); Docker has nothing of the kind. Call it
  // once per connection, and only while holding the instance lock (agent/instance_lock.h): the lock
  // is what makes such a leftover a dead agent's. Failures are for the caller to log; none makes the
  // runtime unusable. Pure so that every decorator forwards it: a decorator that dropped it would
  // silently turn the cleanup off.
  virtual LeftoverCleanup removeLeftovers() = 0;

  // Subscribes to container events for containers carrying all the given labels.
  virtual std::unique_ptr<EventWatcher> watchEvents(const std::map<std::string, std::string>& labels,
                                                    RuntimeEventFn onEvent) = 0;
};

}  // namespace qcs::runtime

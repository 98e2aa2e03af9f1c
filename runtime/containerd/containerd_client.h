// ContainerdClient: a small gRPC client for containerd's API on its unix socket — the foundation of
// the containerd runtime.
//
// Contract:
// - Every call carries a deadline (the timeout given to the constructor) and the
//   `containerd-namespace` header of the client's namespace (SPEC: `qualys` by default).
// - grpc::Status becomes a Result error a person can act on: a missing socket, a permission
//   problem and a socket nobody answers on are told apart; DEADLINE_EXCEEDED is kTimeout,
//   UNAVAILABLE is kUnavailable, PERMISSION_DENIED (or EACCES on connect) is kPermissionDenied.
// - The generated gRPC types stay inside the .cpp: callers see plain structs only.
// - Thread-safe: calls may come from any thread; each subscription runs on its own thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/result.h"
#include "runtime/detect.h"

namespace grpc {
class Channel;
}

namespace qcs::runtime::containerd {

inline constexpr const char* kNamespaceHeader = "containerd-namespace";

struct VersionInfo {
  std::string version;   // "1.6.20~ds1"
  std::string revision;  // the build's revision, as containerd reports it
};

// A task or container event from containerd's /tasks/{start,exit,oom} and /containers/delete topics.
struct TaskEvent {
  enum class Kind { kStart, kExit, kOom, kContainerDelete };
  Kind kind = Kind::kExit;
  std::string nameSpace;                     // the containerd namespace it happened in
  std::string containerId;                   // the container whose task it is
  std::string processId;                     // exit: the process (== containerId for the task's init process)
  uint32_t pid = 0;                          // start, exit
  uint32_t exitStatus = 0;                   // exit: the exit code (128+signal when killed)
  std::chrono::system_clock::time_point at;  // when it happened (exit: exited_at; otherwise the envelope's time)
};

using TaskEventFn = std::function<void(const TaskEvent&)>;
// Called once when a subscription's stream ends for any reason but its own destruction.
using SubscriptionEndFn = std::function<void(const Error&)>;

// A running Events.Subscribe stream. Destroying it cancels the call and joins its thread promptly.
class TaskEventSubscription {
 public:
  virtual ~TaskEventSubscription() = default;
  // False once the stream has ended (the end callback has then been called).
  virtual bool active() const = 0;
};

class ContainerdClient {
 public:
  // socketPath is a filesystem path (no unix:// prefix); nameSpace the containerd namespace every
  // call is made in; callTimeout the deadline of each unary call.
  ContainerdClient(std::string socketPath, std::string nameSpace, std::chrono::milliseconds callTimeout);
  ~ContainerdClient();
  ContainerdClient(const ContainerdClient&) = delete;
  ContainerdClient& operator=(const ContainerdClient&) = delete;

  const std::string& socketPath() const { return socketPath_; }
  const std::string& nameSpace() const { return nameSpace_; }
  std::chrono::milliseconds callTimeout() const { return callTimeout_; }
  // The gRPC channel to the socket, for the runtime's other services (pull, containers, tasks).
  // It reconnects by itself after containerd restarts.
  std::shared_ptr<grpc::Channel> channel() const;

  // Version service: the daemon's version and revision.
  Result<VersionInfo> version();
  // Containers service: the ids of the containers in the client's namespace, sorted.
  Result<std::vector<std::string>> listContainerIds();

  // Events service: subscribes to task starts, exits and OOM kills, and container deletions, in
  // the client's namespace. onEvent and
  // onEnd run on the subscription's thread; they must not destroy the subscription. Returns once
  // the request is sent (or after the call timeout, if the socket does not take it). containerd
  // sends no acknowledgement, so events of the next few milliseconds may still be missed: callers
  // reconcile after subscribing (SPEC "Supervision").
  std::unique_ptr<TaskEventSubscription> subscribeTaskEvents(TaskEventFn onEvent, SubscriptionEndFn onEnd);

 private:
  struct Channel;

  std::string socketPath_;
  std::string nameSpace_;
  std::chrono::milliseconds callTimeout_;
  std::shared_ptr<Channel> channel_;
};

// Detection's prober for containerd candidates: a real Version call. kAnswered with
// detail = "containerd <version>" when it answers; kPermissionDenied, kNotAnswering (absent daemon,
// refused, timed out) or kBadAnswer (something else answers there, e.g. Docker's HTTP API) otherwise,
// with detail saying why.
ProbeOutcome probeContainerd(const std::string& socketPath, std::chrono::milliseconds timeout, std::string& detail);

}  // namespace qcs::runtime::containerd

// ContainerdRuntime: ContainerRuntime over containerd's gRPC API on its unix socket (EKS, AKS and
// GKE nodes), with the same behaviour the supervisor gets from Docker.
//
// Contract (beyond ContainerRuntime's):
// - Everything happens in one containerd namespace (SPEC: `qualys`). The container id is the
//   sensor's name, so `ctr -n qualys containers info qualys-container-sensor` shows it; its rootfs
//   is a snapshot (key = the id) of the image's top layer in the configured snapshotter.
// - Images are pulled by the agent itself (containerd 1.6 has no server-side pull without CRI):
//   see image_store.h.
// - A container's task writes stdout and stderr through the shim straight into
//   <logDir>/<id>.log on the host (never into a FIFO nobody reads); the file is capped by
//   copy-and-truncate when a task starts and on every stats sample.
// - "Start" of a container whose task has ended deletes the old task and creates a new one
//   (restart in place); remove kills the task, deletes it, the container and its snapshot.
// - OOM kills are read from the container's memory cgroup (oom_kill) while the ended task still
//   holds it, so an OOM is reported even when containerd's /tasks/oom event never came.
// - Leases (short-lived, named kAgentLeasePrefix...) guard a pull or create while it runs; those an
//   agent killed mid-way left are deleted by the next agent at connect: removeLeftovers().
// - Paths: socketPath and everything under hostRoot are the agent's view; logDir and the mounts in
//   the OCI spec are host paths (what the shim sees).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "runtime/container_runtime.h"
#include "runtime/containerd/sensor_log.h"

namespace qcs::runtime::containerd {

struct ContainerdRuntimeOptions {
  std::string socketPath;  // the agent's view, e.g. /host/run/containerd/containerd.sock
  std::string nameSpace = "qualys";
  std::string snapshotter = "overlayfs";
  std::string hostRoot = "/";                 // where the host's filesystem is seen by the agent
  std::string logDir = "/var/log/qcs-agent";  // on the host
  SensorLogLimits logLimits;
  std::string runtimeName = "io.containerd.runc.v2";
  std::chrono::milliseconds timeout{std::chrono::seconds(10)};  // each ordinary call
  std::string registryCaBundle;                                 // for pulls; "" = the system's
};

// Calls Version and returns a ready runtime (or the error saying why containerd did not answer).
Result<std::unique_ptr<ContainerRuntime>> connectContainerd(const ContainerdRuntimeOptions& options);

// ---- Pure helpers, exposed for tests -------------------------------------------------------------

// "file:///var/log/qcs-agent/<id>.log": the URI the shim opens for the task's stdout and stderr.
std::string taskLogUri(const std::string& logDir, const std::string& containerId);
// Whether a memory cgroup's oom_control (v1) or memory.events (v2) text counts an OOM kill.
bool cgroupReportsOomKill(std::string_view text);
// The start time of a process from /proc/<pid>/stat's text and the boot time (seconds since the
// epoch, /proc/stat btime); nullopt when the text does not parse.
std::optional<std::chrono::system_clock::time_point> processStartTime(std::string_view statText, int64_t bootTime,
                                                                      long ticksPerSecond);

}  // namespace qcs::runtime::containerd

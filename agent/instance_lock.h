// One agent per supervised sensor. Two agents supervising the same sensor on the same runtime
// would fight (each replaces the other's container as a stray copy), so the agent holds a lock for
// (runtime socket, containerd namespace, sensor name) from its first connection to the runtime on.
//
// The lock is an abstract unix socket (Linux): the kernel releases it when the holder dies, even by
// SIGKILL, so a restarted agent never waits for a stale lock file, and it needs no writable path
// (the systemd unit is ProtectSystem=strict). Abstract names live in the network namespace: the
// systemd unit and the DaemonSet (hostNetwork) share the host's, so they exclude each other.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/file_descriptor.h"
#include "common/result.h"

namespace qcs::agent {

// The lock's name for a sensor. The endpoint is made comparable across the host and a pod: the
// host_root prefix is dropped and /var/run/ is read as /run/ (the standard symlink), so an agent
// on the host and one in a pod that see the same socket agree. Names that do not fit an abstract
// socket address (107 bytes) are hashed.
std::string instanceLockName(std::string_view runtimeKind, std::string_view endpoint, std::string_view hostRoot,
                             std::string_view containerdNamespace, std::string_view sensorName);

class InstanceLock {
 public:
  // Takes the lock. kConflict when another process holds it; the message names the holder's pid
  // when the kernel tells it, the sensor and the runtime, and what to do.
  static Result<std::unique_ptr<InstanceLock>> acquire(const std::string& name, std::string_view what);
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

  const std::string& name() const { return name_; }

 private:
  InstanceLock(FileDescriptor fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  FileDescriptor fd_;  // the bound, listening socket: the lock is held while it is open
  std::string name_;
};

}  // namespace qcs::agent

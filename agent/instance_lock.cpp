#include "agent/instance_lock.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

namespace qcs::agent {
namespace {

constexpr std::string_view kPrefix = "qcs-agent:";
// sun_path holds 108 bytes; the leading NUL of an abstract name takes one.
constexpr size_t kMaxName = sizeof(sockaddr_un::sun_path) - 1;

// FNV-1a: stable across builds and versions, so an old and a new agent compute the same name.
uint64_t fnv1a(std::string_view text) {
  uint64_t hash = 14695981039346656037ULL;
  for (unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ULL;
  }
  return hash;
}

std::string comparableEndpoint(std::string_view endpoint, std::string_view hostRoot) {
  std::string path(endpoint);
  std::string root(hostRoot);
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  if (root.size() > 1 && path.compare(0, root.size(), root) == 0 &&
      (path.size() == root.size() || path[root.size()] == '/')) {
    path.erase(0, root.size());
  }
  // Collapse repeated slashes so "/run//docker.sock" and "/run/docker.sock" agree.
  std::string collapsed;
  for (char c : path) {
    if (c == '/' && !collapsed.empty() && collapsed.back() == '/') continue;
    collapsed += c;
  }
  if (collapsed.rfind("/var/run/", 0) == 0) collapsed.erase(0, 4);
  return collapsed;
}

struct Address {
  sockaddr_un addr{};
  socklen_t length = 0;
};

Address abstractAddress(const std::string& name) {
  Address a;
  a.addr.sun_family = AF_UNIX;
  a.addr.sun_path[0] = '\0';
  std::memcpy(a.addr.sun_path + 1, name.data(), name.size());
  a.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

// The holder's pid: a connect to a listening socket is answered by the kernel itself (no accept
// needed), and SO_PEERCRED then names the process that listened.
std::optional<pid_t> holderPid(const Address& address) {
  const FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return std::nullopt;
  std::optional<pid_t> pid;
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address.addr), address.length) == 0) {
    ucred cred{};
    socklen_t size = sizeof(cred);
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &size) == 0 && cred.pid > 0) pid = cred.pid;
  }
  return pid;
}

}  // namespace

std::string instanceLockName(std::string_view runtimeKind, std::string_view endpoint, std::string_view hostRoot,
                             std::string_view containerdNamespace, std::string_view sensorName) {
  std::string name(kPrefix);
  name.append(runtimeKind).append(":").append(comparableEndpoint(endpoint, hostRoot)).append(":");
  if (runtimeKind == "containerd") name.append(containerdNamespace);
  name.append(":").append(sensorName);
  if (name.size() <= kMaxName) return name;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(fnv1a(name)));
  return std::string(kPrefix) + "fnv1a:" + hex;
}

Result<std::unique_ptr<InstanceLock>> InstanceLock::acquire(const std::string& name, std::string_view what) {
  if (name.empty() || name.size() > kMaxName) {
    return makeError(ErrorCode::kInternal, "instance lock name of " + std::to_string(name.size()) + " bytes");
  }
  FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return makeError(ErrorCode::kInternal,
                     std::string("cannot create the instance lock socket: ") + std::strerror(errno));
  }
  const Address address = abstractAddress(name);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address.addr), address.length) != 0) {
    const int error = errno;
    if (error != EADDRINUSE) {
      return makeError(ErrorCode::kInternal, "cannot take the instance lock @" + name + ": " + std::strerror(error));
    }
    const auto pid = holderPid(address);
    return makeError(ErrorCode::kConflict,
                     "another qcs-agent" + (pid ? " (pid " + std::to_string(*pid) + ")" : std::string()) +
                         " already supervises " + std::string(what) +
                         "; run one agent per node (stop the other one: `systemctl stop qcs-agent`, or remove "
                         "the DaemonSet from this node), or give this one another sensor.name");
  }
  // Listening lets a second agent learn this one's pid through SO_PEERCRED.
  if (::listen(fd.get(), 4) != 0) {
    const int error = errno;
    return makeError(ErrorCode::kInternal, "cannot listen on the instance lock @" + name + ": " + std::strerror(error));
  }
  return std::unique_ptr<InstanceLock>(new InstanceLock(std::move(fd), name));
}

}  // namespace qcs::agent

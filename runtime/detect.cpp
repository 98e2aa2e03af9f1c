#include "runtime/detect.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include "common/file_descriptor.h"
#include "runtime/containerd/containerd_client.h"
#include "runtime/docker/docker_runtime.h"

namespace qcs::runtime {

namespace {

constexpr std::string_view kUnixScheme = "unix://";

// RAII for the probe's socket.
std::string fileKind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a socket";
}

// stat() and connect() without speaking any protocol. nullopt: the socket accepts connections.
std::optional<ProbeOutcome> checkSocket(const std::string& path, std::string& detail) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    detail = std::strerror(err);
    return (err == EACCES || err == EPERM) ? ProbeOutcome::kPermissionDenied : ProbeOutcome::kAbsent;
  }
  if (!S_ISSOCK(st.st_mode)) {
    detail = "the path is " + fileKind(st.st_mode) + ", not a unix socket";
    return ProbeOutcome::kNotASocket;
  }
  sockaddr_un address{};
  if (path.size() >= sizeof(address.sun_path)) {
    detail = "the path is longer than a unix socket path may be (" + std::to_string(sizeof(address.sun_path) - 1) +
             " bytes)";
    return ProbeOutcome::kNotAnswering;
  }
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    detail = std::string("socket(): ") + std::strerror(errno);
    return ProbeOutcome::kNotAnswering;
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) return std::nullopt;
  const int err = errno;
  switch (err) {
    case EACCES:
    case EPERM:
      detail = std::string("connect(): ") + std::strerror(err) + " (the agent runs as uid " +
               std::to_string(::geteuid()) + ")";
      return ProbeOutcome::kPermissionDenied;
    case ECONNREFUSED:
      detail = "nothing listens on the socket (connection refused)";
      return ProbeOutcome::kNotAnswering;
    case EAGAIN:
      detail = "the socket's listen queue is full (the daemon is stuck or overloaded)";
      return ProbeOutcome::kNotAnswering;
    default: detail = std::string("connect(): ") + std::strerror(err); return ProbeOutcome::kNotAnswering;
  }
}

std::string withHostRoot(const std::string& hostRoot, const std::string& path) {
  std::string root = hostRoot;
  while (!root.empty() && root.back() == '/') root.pop_back();
  return root + path;
}

std::string baseName(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

class Detector {
 public:
  Detector(const DetectOptions& options, const ProbeFn& probe) : options_(options), probe_(probe) {}

  // Tries one candidate unless it was tried already; true when it answered.
  // `asOtherKind`: the path was tried already as the other runtime and is tried again as `kind`.
  bool tryCandidate(const std::string& kind, const std::string& hostPath, const std::string& origin,
                    bool asOtherKind = false) {
    Candidate candidate;
    candidate.kind = kind;
    candidate.hostPath = hostPath;
    candidate.path = withHostRoot(options_.hostRoot, hostPath);
    candidate.origin = origin;
    if (!seen_.insert(candidate.path).second && !asOtherKind) return false;
    if (auto early = checkSocket(candidate.path, candidate.detail)) {
      candidate.outcome = *early;
    } else if (probe_) {
      candidate.outcome = probe_(kind, candidate.path, options_.timeout, candidate.detail);
    } else {
      candidate.outcome = ProbeOutcome::kUnsupported;
      candidate.detail = "no prober configured";
    }
    detection_.tried.push_back(candidate);
    if (candidate.outcome != ProbeOutcome::kAnswered) return false;
    detection_.chosen = std::move(candidate);
    return true;
  }

  // Lists a candidate that is reported but never opened.
  void skip(const std::string& kind, const std::string& value, const std::string& origin, const std::string& why) {
    Candidate candidate;
    candidate.kind = kind;
    candidate.path = value;
    candidate.hostPath = value;
    candidate.origin = origin;
    candidate.outcome = ProbeOutcome::kUnsupported;
    candidate.detail = why;
    detection_.tried.push_back(std::move(candidate));
  }

  Detection take() { return std::move(detection_); }
  ProbeOutcome lastOutcome() const {
    return detection_.tried.empty() ? ProbeOutcome::kAbsent : detection_.tried.back().outcome;
  }

 private:
  const DetectOptions& options_;
  const ProbeFn& probe_;
  std::set<std::string> seen_;
  Detection detection_;
};

}  // namespace

const char* probeOutcomeName(ProbeOutcome outcome) {
  switch (outcome) {
    case ProbeOutcome::kAbsent: return "absent";
    case ProbeOutcome::kNotASocket: return "not a socket";
    case ProbeOutcome::kPermissionDenied: return "permission denied";
    case ProbeOutcome::kNotAnswering: return "not answering";
    case ProbeOutcome::kBadAnswer: return "bad answer";
    case ProbeOutcome::kUnsupported: return "unsupported";
    case ProbeOutcome::kAnswered: return "answered";
  }
  return "unknown";
}

const std::vector<std::pair<std::string, std::string>>& standardSocketPaths() {
  static const std::vector<std::pair<std::string, std::string>> paths = {
      {"docker", "/run/docker.sock"},
      {"docker", "/var/run/docker.sock"},
      {"containerd", "/run/containerd/containerd.sock"},
      {"containerd", "/var/run/containerd/containerd.sock"},
      {"containerd", "/run/k3s/containerd/containerd.sock"},
      {"containerd", "/run/host-containerd/containerd.sock"},
      {"containerd", "/var/snap/microk8s/common/run/containerd.sock"},
      {"containerd", "/run/k0s/containerd.sock"},
  };
  return paths;
}

Detection detectRuntime(const DetectOptions& options, const ProbeFn& probe) {
  Detector detector(options, probe);
  const bool wantDocker = options.kind != "containerd";
  const bool wantContainerd = options.kind != "docker";

  if (!options.endpoint.empty()) {
    std::string path = options.endpoint;
    if (path.rfind(kUnixScheme, 0) == 0) path = path.substr(kUnixScheme.size());
    std::string kind = options.kind;
    const bool kindAuto = kind != "docker" && kind != "containerd";
    if (kindAuto) kind = baseName(path).find("containerd") != std::string::npos ? "containerd" : "docker";
    if (path.empty() || path.front() != '/') {
      detector.skip(kind, options.endpoint, "runtime.endpoint",
                    "skipped: only unix:// URLs and absolute socket paths are supported");
      return detector.take();
    }
    if (detector.tryCandidate(kind, path, "runtime.endpoint") || !kindAuto) return detector.take();
    // With kind auto the socket's name is only a guess: a socket that connects but does not
    // speak the guessed protocol is asked as the other runtime.
    const ProbeOutcome outcome = detector.lastOutcome();
    if (outcome == ProbeOutcome::kNotAnswering || outcome == ProbeOutcome::kBadAnswer) {
      detector.tryCandidate(kind == "docker" ? "containerd" : "docker", path, "runtime.endpoint", true);
    }
    return detector.take();
  }

  if (wantDocker && options.dockerHost && !options.dockerHost->empty()) {
    const std::string& value = *options.dockerHost;
    if (value.rfind(kUnixScheme, 0) == 0 && value.size() > kUnixScheme.size() && value[kUnixScheme.size()] == '/') {
      if (detector.tryCandidate("docker", value.substr(kUnixScheme.size()), "DOCKER_HOST")) return detector.take();
    } else {
      detector.skip("docker", value, "DOCKER_HOST", "skipped: the agent only uses unix:// sockets");
    }
  }

  for (const auto& [kind, path] : standardSocketPaths()) {
    if ((kind == "docker" && !wantDocker) || (kind == "containerd" && !wantContainerd)) continue;
    if (detector.tryCandidate(kind, path, "standard path")) break;
  }
  return detector.take();
}

std::string describeDetection(const Detection& detection) {
  if (detection.tried.empty()) return "no runtime candidate was tried";
  std::string out;
  for (const auto& candidate : detection.tried) {
    if (!out.empty()) out += '\n';
    out += candidate.kind + " " + candidate.path + " (" + candidate.origin;
    if (candidate.hostPath != candidate.path) out += ", " + candidate.hostPath + " on the host";
    out += "): ";
    out += probeOutcomeName(candidate.outcome);
    if (!candidate.detail.empty()) out += ": " + candidate.detail;
  }
  return out;
}

ProbeFn defaultProbe() {
  return [](const std::string& kind, const std::string& path, std::chrono::milliseconds timeout, std::string& detail) {
    if (kind == "docker") return docker::probeDocker(path, timeout, detail);
    if (auto early = checkSocket(path, detail)) return *early;
    return containerd::probeContainerd(path, timeout, detail);
  };
}

}  // namespace qcs::runtime

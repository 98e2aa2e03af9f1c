// Runtime detection per SPEC "Runtime detection".
//
// Order: explicit config (runtime.endpoint, or runtime.kind with its standard paths);
// DOCKER_HOST (unix:// only); Docker at /run/docker.sock, /var/run/docker.sock; containerd at the
// SPEC list. Every path is prefixed by host_root. A candidate counts only after a real call
// answers. Each candidate tried is reported with its outcome so that "absent", "permission denied"
// and "not answering" are told apart in logs and errors.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace qcs::runtime {

enum class ProbeOutcome {
  kAbsent,            // nothing at that path
  kNotASocket,        // something is there, but it is not a unix socket
  kPermissionDenied,  // connect() refused with EACCES/EPERM
  kNotAnswering,      // connect() refused, or the daemon did not answer the real call in time
  kBadAnswer,         // it answered, but not as that runtime
  kUnsupported,       // answered, but this build cannot drive that runtime
  kAnswered,          // a real ping/version call answered
};
const char* probeOutcomeName(ProbeOutcome outcome);

struct Candidate {
  std::string kind;      // "docker" | "containerd"
  std::string path;      // the path the agent opens (host_root applied)
  std::string hostPath;  // the same socket as the host sees it (host_root removed), for mounts
  std::string origin;    // "runtime.endpoint", "DOCKER_HOST", "standard path"
  ProbeOutcome outcome = ProbeOutcome::kAbsent;
  std::string detail;  // errno text, the daemon's answer, the version found
};

struct DetectOptions {
  std::string kind = "auto";  // auto | docker | containerd
  std::string endpoint;       // explicit socket path (without host_root) or unix:// URL
  std::string hostRoot = "/";
  std::optional<std::string> dockerHost;  // the DOCKER_HOST value, if set
  std::chrono::milliseconds timeout{3000};
};

// Probes one socket for a runtime kind with a real call. The default prober talks Docker's
// /_ping to docker candidates and calls containerd's Version service on containerd candidates.
using ProbeFn = std::function<ProbeOutcome(const std::string& kind, const std::string& path,
                                           std::chrono::milliseconds timeout, std::string& detail)>;

// The prober of this build: Docker's /_ping for docker candidates; containerd's Version service
// (a real gRPC call) for containerd candidates, kAnswered with the version found as detail.
ProbeFn defaultProbe();

struct Detection {
  std::vector<Candidate> tried;  // in the order tried
  std::optional<Candidate> chosen;
};

// Tries candidates in SPEC order and stops at the first that answers. Never fails: an empty
// `chosen` means nothing answered, and `tried` says why for each candidate.
// - An explicit endpoint is the only candidate (the operator chose it; falling back elsewhere would
//   hide the mistake). Its kind is options.kind, or for "auto" a guess from the file name.
// - kind "docker" tries DOCKER_HOST and Docker's standard paths; "containerd" only containerd's.
// - A DOCKER_HOST that is not unix:// is listed as kUnsupported ("skipped") and not used.
// - Before the probe runs, stat() and connect() tell kAbsent, kNotASocket, kPermissionDenied and
//   kNotAnswering apart; a path already tried is not tried twice.
Detection detectRuntime(const DetectOptions& options, const ProbeFn& probe);

// One human-readable line per tried candidate, for logs and the error when nothing was found.
std::string describeDetection(const Detection& detection);

// The standard socket paths of SPEC, without host_root, in detection order.
const std::vector<std::pair<std::string, std::string>>& standardSocketPaths();  // (kind, path)

}  // namespace qcs::runtime

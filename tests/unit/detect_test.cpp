// Runtime detection: order, host_root prefixing, DOCKER_HOST, and how each outcome is told apart.
// Real files and unix sockets under a fake host root; the protocol call is a fake ProbeFn.
#include "runtime/detect.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

namespace qcs::runtime {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A fake host root under /tmp, removed afterwards. Sockets made here stay open for its lifetime.
class FakeHostRoot {
 public:
  FakeHostRoot() {
    char pattern[] = "/tmp/qcs-detect-XXXXXX";
    const char* made = ::mkdtemp(pattern);
    if (made == nullptr) std::abort();
    root_ = made;
  }
  ~FakeHostRoot() {
    for (int fd : sockets_) ::close(fd);
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  FakeHostRoot(const FakeHostRoot&) = delete;
  FakeHostRoot& operator=(const FakeHostRoot&) = delete;

  const std::string& root() const { return root_; }
  std::string at(const std::string& hostPath) const { return root_ + hostPath; }

  // A unix socket at hostPath (under the root); listening when listen is set, else bound only, so
  // connect() is refused.
  void socketAt(const std::string& hostPath, bool listen = true) {
    const std::string path = at(hostPath);
    fs::create_directories(fs::path(path).parent_path());
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    sockets_.push_back(fd);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    ASSERT_LT(path.size(), sizeof(address.sun_path));
    std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0) << path;
    if (listen) {
      ASSERT_EQ(::listen(fd, 8), 0);
    }
  }

  void fileAt(const std::string& hostPath) {
    const std::string path = at(hostPath);
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path) << "not a socket";
  }

 private:
  std::string root_;
  std::vector<int> sockets_;
};

struct ProbeCall {
  std::string kind;
  std::string path;
  std::chrono::milliseconds timeout;
};

// Answers per path; records every call. Paths not listed answer kNotAnswering.
class FakeProbe {
 public:
  void answer(const std::string& path, ProbeOutcome outcome, std::string detail = {}) {
    answers_[path] = {outcome, std::move(detail)};
  }
  // This path answers only when asked as `kind`; asked as the other runtime it does not answer.
  void answerOnlyAs(const std::string& kind, const std::string& path) { onlyAs_[path] = kind; }
  ProbeFn fn() {
    return [this](const std::string& kind, const std::string& path, std::chrono::milliseconds timeout,
                  std::string& detail) {
      calls.push_back({kind, path, timeout});
      if (auto only = onlyAs_.find(path); only != onlyAs_.end()) {
        detail = only->second == kind ? "" : "fake: speaks " + only->second;
        return only->second == kind ? ProbeOutcome::kAnswered : ProbeOutcome::kNotAnswering;
      }
      auto it = answers_.find(path);
      if (it == answers_.end()) {
        detail = "fake: no answer";
        return ProbeOutcome::kNotAnswering;
      }
      detail = it->second.second;
      return it->second.first;
    };
  }
  std::vector<ProbeCall> calls;

 private:
  std::map<std::string, std::pair<ProbeOutcome, std::string>> answers_;
  std::map<std::string, std::string> onlyAs_;
};

std::vector<std::string> triedPaths(const Detection& detection) {
  std::vector<std::string> out;
  for (const auto& candidate : detection.tried) out.push_back(candidate.hostPath);
  return out;
}

DetectOptions optionsFor(const FakeHostRoot& host) {
  DetectOptions options;
  options.hostRoot = host.root();
  options.timeout = 1234ms;
  return options;
}

TEST(DetectTest, StandardPathsInSpecOrder) {
  const auto& paths = standardSocketPaths();
  std::vector<std::string> expected = {
      "/run/docker.sock",
      "/var/run/docker.sock",
      "/run/containerd/containerd.sock",
      "/var/run/containerd/containerd.sock",
      "/run/k3s/containerd/containerd.sock",
      "/run/host-containerd/containerd.sock",
      "/var/snap/microk8s/common/run/containerd.sock",
      "/run/k0s/containerd.sock",
  };
  ASSERT_EQ(paths.size(), expected.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    EXPECT_EQ(paths[i].second, expected[i]);
    EXPECT_EQ(paths[i].first, i < 2 ? "docker" : "containerd");
  }
}

TEST(DetectTest, NothingPresentReportsEveryCandidateAbsentWithoutProbing) {
  FakeHostRoot host;
  FakeProbe probe;
  const Detection detection = detectRuntime(optionsFor(host), probe.fn());
  EXPECT_FALSE(detection.chosen.has_value());
  ASSERT_EQ(detection.tried.size(), standardSocketPaths().size());
  for (size_t i = 0; i < detection.tried.size(); ++i) {
    const Candidate& candidate = detection.tried[i];
    EXPECT_EQ(candidate.kind, standardSocketPaths()[i].first);
    EXPECT_EQ(candidate.hostPath, standardSocketPaths()[i].second);
    EXPECT_EQ(candidate.path, host.root() + candidate.hostPath) << "host_root prefixes every path";
    EXPECT_EQ(candidate.origin, "standard path");
    EXPECT_EQ(candidate.outcome, ProbeOutcome::kAbsent);
  }
  EXPECT_TRUE(probe.calls.empty()) << "no socket, no protocol call";
}

TEST(DetectTest, TellsAbsentNotASocketAndNotAnsweringApart) {
  FakeHostRoot host;
  host.fileAt("/run/docker.sock");                   // a regular file
  host.socketAt("/var/run/docker.sock", false);      // a socket nobody listens on
  host.socketAt("/run/containerd/containerd.sock");  // listening, but the probe gets no answer
  FakeProbe probe;
  const Detection detection = detectRuntime(optionsFor(host), probe.fn());
  EXPECT_FALSE(detection.chosen.has_value());
  ASSERT_GE(detection.tried.size(), 4u);
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kNotASocket);
  EXPECT_NE(detection.tried[0].detail.find("regular file"), std::string::npos) << detection.tried[0].detail;
  EXPECT_EQ(detection.tried[1].outcome, ProbeOutcome::kNotAnswering);
  EXPECT_NE(detection.tried[1].detail.find("refused"), std::string::npos) << detection.tried[1].detail;
  EXPECT_EQ(detection.tried[2].outcome, ProbeOutcome::kNotAnswering);
  EXPECT_EQ(detection.tried[2].detail, "fake: no answer");
  EXPECT_EQ(detection.tried[3].outcome, ProbeOutcome::kAbsent);
  // Only the socket that accepted a connection got the real call, with the configured timeout.
  ASSERT_EQ(probe.calls.size(), 1u);
  EXPECT_EQ(probe.calls[0].kind, "containerd");
  EXPECT_EQ(probe.calls[0].path, host.at("/run/containerd/containerd.sock"));
  EXPECT_EQ(probe.calls[0].timeout, 1234ms);
}

TEST(DetectTest, PermissionDeniedIsReportedAndDetectionGoesOn) {
  FakeHostRoot host;
  host.socketAt("/run/docker.sock");
  host.socketAt("/run/containerd/containerd.sock");
  FakeProbe probe;
  // As root, connect() never fails with EACCES; the probe reports what a non-root agent would see.
  probe.answer(host.at("/run/docker.sock"), ProbeOutcome::kPermissionDenied, "docker: permission denied on ...");
  probe.answer(host.at("/run/containerd/containerd.sock"), ProbeOutcome::kAnswered, "containerd 1.6");
  const Detection detection = detectRuntime(optionsFor(host), probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->kind, "containerd");
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kPermissionDenied);
  EXPECT_EQ(detection.tried[1].outcome, ProbeOutcome::kAbsent);
  EXPECT_EQ(detection.tried.back().outcome, ProbeOutcome::kAnswered);
  EXPECT_NE(describeDetection(detection).find("permission denied: docker: permission denied on ..."),
            std::string::npos);
}

TEST(DetectTest, DockerWinsOverTheContainerdItRunsOnAndDetectionStops) {
  FakeHostRoot host;
  host.socketAt("/var/run/docker.sock");
  host.socketAt("/run/containerd/containerd.sock");
  FakeProbe probe;
  probe.answer(host.at("/var/run/docker.sock"), ProbeOutcome::kAnswered, "Docker 20.10");
  probe.answer(host.at("/run/containerd/containerd.sock"), ProbeOutcome::kAnswered, "containerd");
  const Detection detection = detectRuntime(optionsFor(host), probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->kind, "docker");
  EXPECT_EQ(detection.chosen->path, host.at("/var/run/docker.sock"));
  EXPECT_EQ(detection.chosen->hostPath, "/var/run/docker.sock");
  EXPECT_EQ(detection.chosen->detail, "Docker 20.10");
  EXPECT_EQ(triedPaths(detection), (std::vector<std::string>{"/run/docker.sock", "/var/run/docker.sock"}));
  EXPECT_EQ(probe.calls.size(), 1u);
}

TEST(DetectTest, FallsThroughToLaterContainerdPaths) {
  FakeHostRoot host;
  host.socketAt("/run/k3s/containerd/containerd.sock");
  FakeProbe probe;
  probe.answer(host.at("/run/k3s/containerd/containerd.sock"), ProbeOutcome::kAnswered);
  const Detection detection = detectRuntime(optionsFor(host), probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->hostPath, "/run/k3s/containerd/containerd.sock");
  EXPECT_EQ(detection.tried.size(), 5u);
}

TEST(DetectTest, HostRootSlashMeansNoPrefixAndTrailingSlashesAreIgnored) {
  FakeHostRoot host;
  host.socketAt("/run/docker.sock");
  FakeProbe probe;
  probe.answer(host.at("/run/docker.sock"), ProbeOutcome::kAnswered);
  DetectOptions options = optionsFor(host);
  options.hostRoot = host.root() + "//";
  const Detection detection = detectRuntime(options, probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->path, host.at("/run/docker.sock"));

  // With host_root "/" the agent opens the host paths themselves (an explicit endpoint in our
  // temp dir stands in for them).
  DetectOptions plain;
  plain.hostRoot = "/";
  plain.endpoint = host.at("/run/docker.sock");
  const Detection direct = detectRuntime(plain, probe.fn());
  ASSERT_TRUE(direct.chosen.has_value());
  EXPECT_EQ(direct.chosen->path, host.at("/run/docker.sock"));
  EXPECT_EQ(direct.chosen->hostPath, direct.chosen->path);
}

TEST(DetectTest, DockerHostUnixComesBeforeTheStandardPathsAndIsPrefixed) {
  FakeHostRoot host;
  host.socketAt("/custom/docker.sock");
  host.socketAt("/run/docker.sock");
  FakeProbe probe;
  probe.answer(host.at("/custom/docker.sock"), ProbeOutcome::kAnswered);
  probe.answer(host.at("/run/docker.sock"), ProbeOutcome::kAnswered);
  DetectOptions options = optionsFor(host);
  options.dockerHost = "unix:///custom/docker.sock";
  const Detection detection = detectRuntime(options, probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->origin, "DOCKER_HOST");
  EXPECT_EQ(detection.chosen->kind, "docker");
  EXPECT_EQ(detection.chosen->path, host.at("/custom/docker.sock"));
  EXPECT_EQ(detection.chosen->hostPath, "/custom/docker.sock");
  EXPECT_EQ(detection.tried.size(), 1u);
}

TEST(DetectTest, DockerHostTcpIsReportedAsSkippedAndNotUsed) {
  FakeHostRoot host;
  host.socketAt("/run/docker.sock");
  FakeProbe probe;
  probe.answer(host.at("/run/docker.sock"), ProbeOutcome::kAnswered);
  DetectOptions options = optionsFor(host);
  options.dockerHost = "tcp://127.0.0.1:2375";
  const Detection detection = detectRuntime(options, probe.fn());
  ASSERT_GE(detection.tried.size(), 2u);
  EXPECT_EQ(detection.tried[0].origin, "DOCKER_HOST");
  EXPECT_EQ(detection.tried[0].path, "tcp://127.0.0.1:2375");
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kUnsupported);
  EXPECT_NE(detection.tried[0].detail.find("skipped"), std::string::npos);
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->hostPath, "/run/docker.sock");
  ASSERT_EQ(probe.calls.size(), 1u) << "a tcp:// DOCKER_HOST is never contacted";
}

TEST(DetectTest, DockerHostSameAsAStandardPathIsTriedOnce) {
  FakeHostRoot host;
  host.socketAt("/var/run/docker.sock", false);
  FakeProbe probe;
  DetectOptions options = optionsFor(host);
  options.dockerHost = "unix:///var/run/docker.sock";
  const Detection detection = detectRuntime(options, probe.fn());
  std::vector<std::string> paths = triedPaths(detection);
  EXPECT_EQ(std::count(paths.begin(), paths.end(), "/var/run/docker.sock"), 1);
  EXPECT_EQ(detection.tried[0].origin, "DOCKER_HOST");
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kNotAnswering);
}

TEST(DetectTest, ExplicitEndpointIsTheOnlyCandidate) {
  FakeHostRoot host;
  host.socketAt("/run/docker.sock");
  host.socketAt("/srv/my-containerd.sock", false);
  FakeProbe probe;
  probe.answer(host.at("/run/docker.sock"), ProbeOutcome::kAnswered);
  DetectOptions options = optionsFor(host);
  options.endpoint = "unix:///srv/my-containerd.sock";
  options.dockerHost = "unix:///run/docker.sock";
  const Detection detection = detectRuntime(options, probe.fn());
  EXPECT_FALSE(detection.chosen.has_value()) << "no silent fallback past an endpoint the operator chose";
  ASSERT_EQ(detection.tried.size(), 2u) << "the endpoint, as each runtime; never /run/docker.sock";
  EXPECT_EQ(detection.tried[0].kind, "containerd") << "auto guesses from the file name first";
  EXPECT_EQ(detection.tried[0].origin, "runtime.endpoint");
  EXPECT_EQ(detection.tried[0].hostPath, "/srv/my-containerd.sock");
  EXPECT_EQ(detection.tried[0].path, host.at("/srv/my-containerd.sock"));
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kNotAnswering);
  EXPECT_EQ(detection.tried[1].kind, "docker");
  EXPECT_EQ(detection.tried[1].path, host.at("/srv/my-containerd.sock"));
}

TEST(DetectTest, AnExplicitEndpointWithKindAutoIsAskedAsTheOtherRuntimeWhenTheGuessIsWrong) {
  FakeHostRoot host;
  host.socketAt("/srv/engine.sock");
  host.socketAt("/srv/containerd-docker.sock");
  FakeProbe probe;
  probe.answerOnlyAs("containerd", host.at("/srv/engine.sock"));
  probe.answerOnlyAs("docker", host.at("/srv/containerd-docker.sock"));
  DetectOptions options = optionsFor(host);
  options.endpoint = "/srv/engine.sock";
  Detection detection = detectRuntime(options, probe.fn());
  ASSERT_TRUE(detection.chosen.has_value()) << describeDetection(detection);
  EXPECT_EQ(detection.chosen->kind, "containerd");
  ASSERT_EQ(detection.tried.size(), 2u);
  EXPECT_EQ(detection.tried[0].kind, "docker");

  options.endpoint = "/srv/containerd-docker.sock";
  detection = detectRuntime(options, probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->kind, "docker");

  // An explicit kind is never second-guessed.
  options.kind = "docker";
  options.endpoint = "/srv/engine.sock";
  detection = detectRuntime(options, probe.fn());
  EXPECT_FALSE(detection.chosen.has_value());
  EXPECT_EQ(detection.tried.size(), 1u);
}

TEST(DetectTest, ExplicitEndpointKindAndPlainPaths) {
  FakeHostRoot host;
  host.socketAt("/srv/engine.sock");
  FakeProbe probe;
  probe.answer(host.at("/srv/engine.sock"), ProbeOutcome::kAnswered);
  DetectOptions options = optionsFor(host);
  options.endpoint = "/srv/engine.sock";
  Detection detection = detectRuntime(options, probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->kind, "docker");

  options.kind = "containerd";
  detection = detectRuntime(options, probe.fn());
  ASSERT_TRUE(detection.chosen.has_value());
  EXPECT_EQ(detection.chosen->kind, "containerd");
  EXPECT_EQ(probe.calls.back().kind, "containerd");

  options.endpoint = "tcp://127.0.0.1:2375";
  detection = detectRuntime(options, probe.fn());
  EXPECT_FALSE(detection.chosen.has_value());
  ASSERT_EQ(detection.tried.size(), 1u);
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kUnsupported);

  options.endpoint = "relative/engine.sock";
  detection = detectRuntime(options, probe.fn());
  ASSERT_EQ(detection.tried.size(), 1u);
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kUnsupported);
}

TEST(DetectTest, KindLimitsTheCandidates) {
  FakeHostRoot host;
  FakeProbe probe;
  DetectOptions options = optionsFor(host);
  options.dockerHost = "unix:///custom/docker.sock";

  options.kind = "docker";
  Detection detection = detectRuntime(options, probe.fn());
  EXPECT_EQ(triedPaths(detection),
            (std::vector<std::string>{"/custom/docker.sock", "/run/docker.sock", "/var/run/docker.sock"}));

  options.kind = "containerd";
  detection = detectRuntime(options, probe.fn());
  ASSERT_EQ(detection.tried.size(), 6u);
  for (const auto& candidate : detection.tried) EXPECT_EQ(candidate.kind, "containerd");
}

TEST(DetectTest, DescribeDetectionPrintsOneLinePerCandidate) {
  Detection detection;
  detection.tried.push_back(Candidate{"docker", "/host/run/docker.sock", "/run/docker.sock", "standard path",
                                      ProbeOutcome::kAbsent, "No such file or directory"});
  detection.tried.push_back(Candidate{"docker", "/var/run/docker.sock", "/var/run/docker.sock", "standard path",
                                      ProbeOutcome::kPermissionDenied,
                                      "docker: permission denied on /var/run/docker.sock"});
  detection.tried.push_back(Candidate{"containerd", "/run/containerd/containerd.sock",
                                      "/run/containerd/containerd.sock", "standard path", ProbeOutcome::kUnsupported,
                                      ""});
  EXPECT_EQ(describeDetection(detection),
            "docker /host/run/docker.sock (standard path, /run/docker.sock on the host): absent: No such file or "
            "directory\n"
            "docker /var/run/docker.sock (standard path): permission denied: docker: permission denied on "
            "/var/run/docker.sock\n"
            "containerd /run/containerd/containerd.sock (standard path): unsupported");
  EXPECT_EQ(describeDetection(Detection{}), "no runtime candidate was tried");
}

TEST(DetectTest, OutcomeNames) {
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kAbsent), "absent");
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kNotASocket), "not a socket");
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kPermissionDenied), "permission denied");
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kNotAnswering), "not answering");
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kBadAnswer), "bad answer");
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kUnsupported), "unsupported");
  EXPECT_STREQ(probeOutcomeName(ProbeOutcome::kAnswered), "answered");
}

TEST(DetectTest, DefaultProbeCallsContainerdsVersionServiceAndWaitsOnlyItsTimeout) {
  FakeHostRoot host;
  host.socketAt("/run/containerd/containerd.sock");  // accepts into the backlog, never answers gRPC
  DetectOptions options = optionsFor(host);
  options.timeout = 200ms;
  const Detection detection = detectRuntime(options, defaultProbe());
  EXPECT_FALSE(detection.chosen.has_value());
  ASSERT_EQ(detection.tried.size(), standardSocketPaths().size());
  const Candidate& containerd = detection.tried[2];
  EXPECT_EQ(containerd.outcome, ProbeOutcome::kNotAnswering);
  EXPECT_NE(containerd.detail.find("did not answer within 200ms"), std::string::npos) << containerd.detail;
}

TEST(DetectTest, DefaultProbeOnADockerSocketThatNeverAnswers) {
  FakeHostRoot host;
  host.socketAt("/run/docker.sock");  // accepts into the backlog, never answers HTTP
  DetectOptions options = optionsFor(host);
  options.timeout = 200ms;
  const Detection detection = detectRuntime(options, defaultProbe());
  ASSERT_FALSE(detection.tried.empty());
  EXPECT_EQ(detection.tried[0].outcome, ProbeOutcome::kNotAnswering);
  EXPECT_NE(detection.tried[0].detail.find("did not answer within 200ms"), std::string::npos)
      << detection.tried[0].detail;
}

}  // namespace
}  // namespace qcs::runtime

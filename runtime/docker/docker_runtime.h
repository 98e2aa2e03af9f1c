// DockerRuntime: ContainerRuntime over the Docker Engine API on a unix socket.
//
// Contract (beyond ContainerRuntime's):
// - connectDocker() pings /_ping, negotiates min(server API version, 1.43) and refuses daemons older
//   than API 1.40 (Docker 19.03); every later call is prefixed with /v1.NN.
// - Ordinary calls are bounded by the timeout given to connectDocker(); create/start/stop/remove get
//   at least 60s (plus the stop grace) because a loaded daemon can take that long; pulls have no
//   total limit but fail when the daemon sends nothing for 120s.
// - Request bodies (they carry secret env values) and X-Registry-Auth never appear in an error, and
//   secret values are scrubbed from any daemon message that echoes them.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "runtime/container_runtime.h"
#include "runtime/detect.h"
#include "runtime/docker/http_unix.h"
#include "runtime/image_reference.h"

namespace qcs::runtime::docker {

// The newest Engine API this code was written against, and the oldest it accepts.
inline constexpr int kMaxApiMinor = 43;
inline constexpr int kMinApiMinor = 40;

class DockerRuntime final : public ContainerRuntime {
 public:
  DockerRuntime(std::string socketPath, std::string apiVersion, std::string daemonVersion,
                std::chrono::milliseconds timeout);

  const RuntimeInfo& info() const override { return info_; }
  Status ping() override;

  Result<std::vector<ContainerInfo>> listContainers(const std::map<std::string, std::string>& labels) override;
  Result<ContainerInfo> inspectContainer(const std::string& nameOrId) override;

  Result<bool> imagePresent(const std::string& reference) override;
  Status pullImage(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
                   const PullProgressFn& progress) override;
  Result<std::string> imageId(const std::string& reference) override;

  Result<std::string> createContainer(const ContainerSpec& spec) override;
  Status startContainer(const std::string& id) override;
  Status stopContainer(const std::string& id, std::chrono::seconds grace) override;
  Status removeContainer(const std::string& id, bool force) override;

  Result<std::vector<std::string>> logTail(const std::string& id, int lines) override;
  Result<ContainerStats> containerStats(const std::string& id) override;
  // POST /containers/{id}/exec, POST /exec/{id}/start (detached), then GET /exec/{id}/json until it
  // ends or the timeout passes: polling bounded by the probe's timeout and only while it runs.
  Result<int> execInContainer(const std::string& id, const std::vector<std::string>& command,
                              std::chrono::milliseconds timeout) override;
  // GET /containers/{id}/logs?timestamps=1&since=...&tail=N: the newest line's timestamp.
  Result<std::optional<std::chrono::system_clock::time_point>> lastOutputTime(
      const std::string& id, std::chrono::system_clock::time_point since) override;

  std::unique_ptr<EventWatcher> watchEvents(const std::map<std::string, std::string>& labels,
                                            RuntimeEventFn onEvent) override;

 private:
  Result<HttpResponse> call(const std::string& method, const std::string& pathAndQuery, std::string body,
                            std::chrono::milliseconds totalTimeout) const;
  std::chrono::milliseconds slowTimeout() const;

  RuntimeInfo info_;
  std::string apiPrefix_;  // "/v1.41"
  std::chrono::milliseconds timeout_;
  UnixHttpClient client_;
};

// Pings the daemon at socketPath, negotiates the API version and returns a ready runtime.
Result<std::unique_ptr<ContainerRuntime>> connectDocker(const std::string& socketPath,
                                                        std::chrono::milliseconds timeout);

// Detection's real call for a Docker candidate: /_ping must answer "OK" with an API-Version header.
// detail receives the daemon version found, or what went wrong.
ProbeOutcome probeDocker(const std::string& socketPath, std::chrono::milliseconds timeout, std::string& detail);

// ---- Pure helpers, exposed for tests -------------------------------------------------------------

// The body of POST /containers/create for the spec (contains secret values: never log it).
std::string createContainerBody(const ContainerSpec& spec);

// Demultiplexes a /containers/{id}/logs body (8-byte frame headers, or a raw TTY stream) into lines.
std::vector<std::string> splitLogStream(std::string_view body);

// The newest timestamp among log lines fetched with timestamps=1 ("<RFC 3339> <text>"); nullopt when
// there is no line.
std::optional<std::chrono::system_clock::time_point> newestLogTimestamp(std::string_view body);

// RFC 3339 with optional fractional seconds and offset. Docker's zero time is nullopt.
std::optional<std::chrono::system_clock::time_point> parseRfc3339(const std::string& text);

// Parses /containers/{id}/json.
Result<ContainerInfo> parseContainerInspect(std::string_view json);

// Parses a one-shot /containers/{id}/stats body. Memory is usage minus the reclaimable page cache,
// as the docker CLI computes it (cgroup v1 total_inactive_file, v2 inactive_file, else cache).
Result<ContainerStats> parseContainerStats(std::string_view json);

// Maps one /events JSON line to a RuntimeEvent; nullopt for events the supervisor does not need.
std::optional<RuntimeEvent> parseDockerEvent(std::string_view jsonLine);

}  // namespace qcs::runtime::docker

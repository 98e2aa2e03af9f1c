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
// - Whatever answers on the socket is not trusted to be a Docker daemon (issue 7, the hostile-peer
//   test): /_ping must answer "OK"; every answer read into memory is capped (a ping at
//   kMaxPingBytes, other calls at kDefaultMaxBodyBytes); JSON is checked for its nesting
//   (kMaxJsonDepth), its content type and its shape before a field is used; a listing of more than
//   kMaxListedContainers is refused rather than inspected one by one. Each violation is a kProtocol
//   error naming the socket, the request and the limit.
// - ping() renegotiates the API version with whatever daemon answers now (it may have been
//   replaced by an older or newer one under the same path), and so does a call that an older daemon
//   refuses as "too new" (then retried once); later calls and the event watchers use the new
//   version, a watcher waiting out its backoff re-dials at once.
// - The event watcher holds at most kMaxStreamLineBytes of one event; a longer line, or a line that
//   is not a JSON object, ends that connection. It re-dials with a backoff (250ms doubling to 30s)
//   that starts over only after a connection stayed healthy for kHealthyStreamTime, so a peer that
//   accepts and then misbehaves is not re-dialled in a tight loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "runtime/container_runtime.h"
#include "runtime/detect.h"
#include "runtime/docker/http_unix.h"
#include "runtime/image_reference.h"

namespace qcs::runtime::docker {

// The newest Engine API this code was written against, and the oldest it accepts.
inline constexpr int kMaxApiMinor = 43;
inline constexpr int kMinApiMinor = 40;

// Limits on what a peer may send (see the contract above).
inline constexpr size_t kMaxPingBytes = 4096;
inline constexpr size_t kMaxJsonDepth = 64;
inline constexpr size_t kMaxStreamLineBytes = size_t{1} << 20;
inline constexpr size_t kMaxListedContainers = 256;
inline constexpr std::chrono::seconds kHealthyStreamTime{10};

// The negotiated API version, shared by a runtime and its event watchers (defined in the .cpp).
struct ApiVersionState;

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

  // Nothing: dockerd owns its pulls and creates, and a killed client leaves nothing of them behind.
  LeftoverCleanup removeLeftovers() override { return {}; }

 private:
  // One versioned call; a 400 "client version ... is too new" renegotiates and retries once.
  Result<HttpResponse> call(const std::string& method, const std::string& pathAndQuery, std::string body,
                            std::chrono::milliseconds totalTimeout);
  // An unversioned /_ping and a new API version when the daemon's calls for one.
  Status renegotiate();
  std::chrono::milliseconds slowTimeout() const;
  std::string apiPrefix() const;  // "/v1.41"

  RuntimeInfo info_;
  std::shared_ptr<ApiVersionState> api_;
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

// Whether the JSON text nests arrays and objects at most maxDepth deep (strings and escapes are
// skipped; the text need not be valid JSON). Checked before parsing: a parsed document costs tens
// of bytes per level, so 1,000,000 levels in a 2 MB answer would cost the agent some 100 MB.
bool jsonNestingWithin(std::string_view text, size_t maxDepth = kMaxJsonDepth);

// Splits a streamed body into lines (without the newline), holding at most maxLineBytes of a line
// that has not ended yet.
class LineSplitter {
 public:
  // Returns false to stop the stream.
  using LineFn = std::function<bool(std::string_view line)>;
  LineSplitter(size_t maxLineBytes, LineFn onLine) : maxLineBytes_(maxLineBytes), onLine_(std::move(onLine)) {}

  // Passes every line the chunk completes to onLine. False once a line grew beyond the limit or
  // onLine returned false; every later call is then false too and does nothing.
  bool feed(std::string_view chunk);
  // The last line, when the body did not end with a newline. False as for feed().
  bool finish();
  // Whether it stopped because a line was too long.
  bool overflowed() const { return overflowed_; }

 private:
  size_t maxLineBytes_;
  LineFn onLine_;
  std::string pending_;
  bool stopped_ = false;
  bool overflowed_ = false;
};

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

// Maps one /events JSON line to a RuntimeEvent; nullopt for events the supervisor does not need
// (and for anything that is not a JSON object nested at most kMaxJsonDepth deep).
std::optional<RuntimeEvent> parseDockerEvent(std::string_view jsonLine);

}  // namespace qcs::runtime::docker

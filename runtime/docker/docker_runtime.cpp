#include "runtime/docker/docker_runtime.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/encoding.h"

namespace qcs::runtime::docker {

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;

constexpr auto kPullLowSpeedTime = std::chrono::seconds(120);
constexpr milliseconds kSlowOperationMinimum{60'000};
constexpr milliseconds kEventBackoffInitial{250};
constexpr milliseconds kEventBackoffMax{30'000};
constexpr size_t kMaxErrorBody = 4096;

std::string lowerCase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

std::string stringField(const json& object, const char* key) {
  if (!object.is_object()) return {};
  auto it = object.find(key);
  return (it != object.end() && it->is_string()) ? it->get<std::string>() : std::string();
}

const json* objectField(const json& object, const char* key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return (it != object.end() && it->is_object()) ? &*it : nullptr;
}

std::map<std::string, std::string> stringMap(const json* object) {
  std::map<std::string, std::string> out;
  if (object == nullptr) return out;
  for (const auto& [key, value] : object->items()) {
    if (value.is_string()) out[key] = value.get<std::string>();
  }
  return out;
}

// Docker answers errors as {"message": "..."}; anything else is shown trimmed and capped.
std::string daemonMessage(const std::string& body) {
  json parsed = json::parse(body, nullptr, false);
  std::string message = stringField(parsed, "message");
  if (message.empty()) message = std::string(trim(body.substr(0, kMaxErrorBody)));
  if (message.empty()) message = "(no message)";
  return message;
}

ErrorCode codeForStatus(long status) {
  switch (status) {
    case 400: return ErrorCode::kInvalidArgument;
    case 401: return ErrorCode::kUnauthenticated;
    case 403: return ErrorCode::kPermissionDenied;
    case 404: return ErrorCode::kNotFound;
    case 409: return ErrorCode::kConflict;
    case 503: return ErrorCode::kUnavailable;
    default: return status >= 500 ? ErrorCode::kInternal : ErrorCode::kProtocol;
  }
}

// Replaces every secret value of the spec that a daemon message might echo back.
std::string scrubSecrets(std::string message, const std::vector<EnvVar>& env) {
  for (const auto& var : env) {
    if (!var.secret || var.value.empty()) continue;
    for (size_t at = message.find(var.value); at != std::string::npos; at = message.find(var.value, at)) {
      message.replace(at, var.value.size(), "<redacted>");
      at += std::strlen("<redacted>");
    }
  }
  return message;
}

Error httpError(const HttpResponse& response, const std::string& what, const std::vector<EnvVar>& secretsToScrub = {}) {
  return makeError(codeForStatus(response.status), "docker: " + what + ": " +
                                                       scrubSecrets(daemonMessage(response.body), secretsToScrub) +
                                                       " (HTTP " + std::to_string(response.status) + ")");
}

// A transport error ("docker: <what went wrong>") with the operation put after the prefix:
// "docker: creating container x: /run/docker.sock did not answer within 3s ...". Keeps the code.
Error duringOperation(const Error& error, const std::string& operation) {
  constexpr std::string_view kPrefix = "docker: ";
  std::string rest = error.message;
  if (rest.rfind(kPrefix, 0) == 0) rest.erase(0, kPrefix.size());
  return Error{error.code, std::string(kPrefix) + operation + ": " + rest};
}

// Image references go into URL paths: only the characters a reference may contain pass.
Status checkReferenceChars(const std::string& reference) {
  if (reference.empty()) return makeError(ErrorCode::kInvalidArgument, "docker: empty image reference");
  if (reference.find("..") != std::string::npos || reference.front() == '/' || reference.back() == '/') {
    return makeError(ErrorCode::kInvalidArgument, "docker: \"" + reference + "\" is not an image reference");
  }
  for (unsigned char c : reference) {
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/' || c == ':' || c == '@')) {
      return makeError(ErrorCode::kInvalidArgument,
                       "docker: image reference \"" + reference + "\" contains a character a reference cannot hold");
    }
  }
  return okStatus();
}

// A streamed response body: newline-delimited JSON lines while the status is 200, otherwise an
// error body kept up to kMaxErrorBody bytes for the message.
class StreamedBody {
 public:
  explicit StreamedBody(std::function<void(std::string_view)> onLine) : onLine_(std::move(onLine)) {}

  void setStatus(long status) { status_ = status; }
  long status() const { return status_; }
  void feed(std::string_view chunk) {
    if (status_ != 200) {
      if (errorBody_.size() < kMaxErrorBody) errorBody_.append(chunk.substr(0, kMaxErrorBody - errorBody_.size()));
      return;
    }
    pending_.append(chunk);
    size_t start = 0;
    for (size_t newline = pending_.find('\n'); newline != std::string::npos; newline = pending_.find('\n', start)) {
      onLine_(std::string_view(pending_).substr(start, newline - start));
      start = newline + 1;
    }
    pending_.erase(0, start);
  }
  // The last line when the body did not end with a newline.
  void finish() {
    if (status_ == 200 && !pending_.empty()) onLine_(pending_);
    pending_.clear();
  }
  const std::string& errorBody() const { return errorBody_; }

 private:
  std::function<void(std::string_view)> onLine_;
  long status_ = 0;
  std::string pending_;
  std::string errorBody_;
};

std::optional<std::pair<int, int>> parseApiVersion(const std::string& text) {
  const auto dot = text.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 >= text.size()) return std::nullopt;
  int major = 0;
  int minor = 0;
  for (size_t i = 0; i < dot; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
    major = major * 10 + (text[i] - '0');
  }
  for (size_t i = dot + 1; i < text.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
    minor = minor * 10 + (text[i] - '0');
  }
  return std::make_pair(major, minor);
}

// "Docker/20.10.24+dfsg1 (linux)" -> "20.10.24+dfsg1".
std::string versionFromServerHeader(const std::string& server) {
  const auto slash = server.find('/');
  if (slash == std::string::npos) return {};
  const auto end = server.find(' ', slash);
  return server.substr(slash + 1, end == std::string::npos ? std::string::npos : end - slash - 1);
}

ContainerState stateFromDocker(const std::string& status) {
  if (status == "created") return ContainerState::kCreated;
  if (status == "running") return ContainerState::kRunning;
  if (status == "paused") return ContainerState::kPaused;
  if (status == "restarting") return ContainerState::kRestarting;
  if (status == "exited") return ContainerState::kExited;
  if (status == "dead") return ContainerState::kDead;
  if (status == "removing") return ContainerState::kRemoving;
  return ContainerState::kUnknown;
}

json labelFilter(const std::map<std::string, std::string>& labels) {
  json list = json::array();
  for (const auto& [key, value] : labels) list.push_back(std::string(key).append("=").append(value));
  return list;
}

// Reads the 2..N digit number at text[pos..pos+width); false if not all digits.
bool readDigits(const std::string& text, size_t pos, size_t width, int& out) {
  if (pos + width > text.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + width; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return false;
    out = out * 10 + (text[i] - '0');
  }
  return true;
}

// ---- Event watcher ------------------------------------------------------------------------------

class DockerEventWatcher final : public EventWatcher {
 public:
  DockerEventWatcher(const std::string& socketPath, milliseconds connectTimeout, std::string target,
                     RuntimeEventFn onEvent)
      : client_(socketPath, "docker", connectTimeout), target_(std::move(target)), onEvent_(std::move(onEvent)) {
    ensureCurlInitialized();
    multi_.reset(curl_multi_init());
    thread_ = std::thread([this] { run(); });
  }

  ~DockerEventWatcher() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    if (multi_) curl_multi_wakeup(multi_.get());
    wakeBackoff_.notify_all();
    thread_.join();
  }

  DockerEventWatcher(const DockerEventWatcher&) = delete;
  DockerEventWatcher& operator=(const DockerEventWatcher&) = delete;

 private:
  void emit(const RuntimeEvent& event) {
    if (stopping_) return;
    onEvent_(event);
  }

  // The thread's entry point: connect, stream, report, back off, again; until destroyed.
  void run() {
    milliseconds backoff = kEventBackoffInitial;
    bool reportedLost = false;
    while (!stopping_) {
      bool connected = false;
      std::string reason;
      try {
        reason = streamOnce(connected);
      } catch (const std::exception& e) {
        reason = std::string("docker: event watcher failed: ") + e.what();
      } catch (...) {
        reason = "docker: event watcher failed with an unknown exception";
      }
      if (stopping_) break;
      if (connected) {
        backoff = kEventBackoffInitial;
        reportedLost = false;
      }
      // Report the transition to "lost" once; failed reconnects do not repeat it.
      if (!reportedLost) {
        reportedLost = true;
        try {
          emit(RuntimeEvent{RuntimeEvent::Kind::kStreamLost, {}, std::nullopt, reason});
        } catch (...) {
          // The callback's failure must not end the watcher.
        }
      }
      std::unique_lock lock(mutex_);
      wakeBackoff_.wait_for(lock, backoff, [this] { return stopping_.load(); });
      backoff = std::min(backoff * 2, kEventBackoffMax);
    }
  }

  // One connection to /events. Returns why it ended.
  std::string streamOnce(bool& connected) {
    StreamedBody body([&](std::string_view line) {
      if (auto event = parseDockerEvent(line)) emit(*event);
    });
    auto onHeaders = [&](const HttpResponse& head) {
      body.setStatus(head.status);
      if (head.status == 200) {
        connected = true;
        emit(RuntimeEvent{RuntimeEvent::Kind::kStreamConnected, {}, std::nullopt, {}});
      }
      return !stopping_;
    };
    auto onBody = [&](std::string_view chunk) {
      body.feed(chunk);
      return !stopping_;
    };

    HttpRequest request;
    request.target = target_;
    auto prepared = client_.prepare(request, onBody, onHeaders);
    if (!prepared.ok()) return prepared.message();
    std::unique_ptr<HttpTransfer> transfer = std::move(prepared).value();

    CURLM* multi = multi_.get();
    if (multi == nullptr) return "docker: curl_multi_init failed";
    if (curl_multi_add_handle(multi, transfer->handle()) != CURLM_OK) {
      return "docker: curl_multi_add_handle failed";
    }
    CURLcode result = CURLE_OK;
    bool done = false;
    std::string multiFailure;
    while (!stopping_ && !done) {
      int running = 0;
      CURLMcode code = curl_multi_perform(multi, &running);
      if (code != CURLM_OK) {
        multiFailure = std::string("docker: curl_multi_perform: ") + curl_multi_strerror(code);
        break;
      }
      int queued = 0;
      while (CURLMsg* message = curl_multi_info_read(multi, &queued)) {
        if (message->msg == CURLMSG_DONE) {
          result = message->data.result;
          done = true;
        }
      }
      if (done || stopping_) break;
      // Sleeps until the socket has data, curl's own timer fires, or the destructor wakes us.
      code = curl_multi_poll(multi, nullptr, 0, 60'000, nullptr);
      if (code != CURLM_OK) {
        multiFailure = std::string("docker: curl_multi_poll: ") + curl_multi_strerror(code);
        break;
      }
    }
    curl_multi_remove_handle(multi, transfer->handle());
    if (stopping_) return {};
    if (!multiFailure.empty()) return multiFailure;
    auto response = transfer->finish(result);
    if (!response.ok()) return response.message();
    if (body.status() != 200) {
      return "docker: " + target_ + " answered HTTP " + std::to_string(body.status()) + ": " +
             daemonMessage(body.errorBody());
    }
    return "docker: the event stream from " + client_.socketPath() + " ended (the daemon closed it)";
  }

  UnixHttpClient client_;
  std::string target_;
  RuntimeEventFn onEvent_;
  CurlMultiPtr multi_;
  std::mutex mutex_;
  std::condition_variable wakeBackoff_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace

// ---- Pure helpers -------------------------------------------------------------------------------

std::string createContainerBody(const ContainerSpec& spec) {
  json env = json::array();
  for (const auto& var : spec.env) env.push_back(var.name + "=" + var.value);
  json labels = json::object();
  for (const auto& [key, value] : spec.labels) labels[key] = value;
  json mounts = json::array();
  for (const auto& mount : spec.mounts) {
    mounts.push_back(
        {{"Type", "bind"}, {"Source", mount.source}, {"Target", mount.target}, {"ReadOnly", mount.readOnly}});
  }
  json hostConfig = {
      {"Mounts", mounts},
      {"CapAdd", spec.capAdd},
      {"Privileged", spec.privileged},
      // The agent supervises the sensor; Docker restarting it too would hide exits from us.
      {"RestartPolicy", {{"Name", "no"}}},
  };
  if (spec.hostNetwork) hostConfig["NetworkMode"] = "host";
  const auto& resources = spec.resources;
  if (resources.cpuRequestMilli > 0) {
    hostConfig["CpuShares"] = std::max<int64_t>(2, resources.cpuRequestMilli * 1024 / 1000);
  }
  if (resources.cpuLimitMilli > 0) hostConfig["NanoCpus"] = resources.cpuLimitMilli * 1'000'000;
  if (resources.memoryRequestBytes > 0) hostConfig["MemoryReservation"] = resources.memoryRequestBytes;
  if (resources.memoryLimitBytes > 0) {
    hostConfig["Memory"] = resources.memoryLimitBytes;
    // The limit is the container's whole memory, as in Kubernetes: no swap beyond it.
    hostConfig["MemorySwap"] = resources.memoryLimitBytes;
  }
  // An empty Type with options means dockerd's default driver with those options.
  if (!spec.log.driver.empty() || !spec.log.options.empty()) {
    json options = json::object();
    for (const auto& [key, value] : spec.log.options) options[key] = value;
    hostConfig["LogConfig"] = {{"Type", spec.log.driver}, {"Config", options}};
  }
  json body = {
      {"Image", spec.image},
      // The image's ENTRYPOINT runs the sensor; the spec's args are its arguments.
      {"Cmd", spec.args},
      {"Env", env},
      {"Labels", labels},
      {"HostConfig", hostConfig},
  };
  return body.dump();
}

std::vector<std::string> splitLogStream(std::string_view body) {
  // A multiplexed stream is a chain of frames [stream 0|1|2, 0, 0, 0, size(4, big endian)].
  bool multiplexed = !body.empty();
  for (size_t pos = 0; pos < body.size() && multiplexed;) {
    if (pos + 8 > body.size()) {
      multiplexed = false;
      break;
    }
    const auto streamByte = static_cast<unsigned char>(body[pos]);
    if (streamByte > 2 || body[pos + 1] != 0 || body[pos + 2] != 0 || body[pos + 3] != 0) {
      multiplexed = false;
      break;
    }
    const uint32_t size = (uint32_t(static_cast<unsigned char>(body[pos + 4])) << 24) |
                          (uint32_t(static_cast<unsigned char>(body[pos + 5])) << 16) |
                          (uint32_t(static_cast<unsigned char>(body[pos + 6])) << 8) |
                          uint32_t(static_cast<unsigned char>(body[pos + 7]));
    if (pos + 8 + size > body.size()) {
      multiplexed = false;
      break;
    }
    pos += 8 + size;
  }

  std::vector<std::string> lines;
  auto takeLines = [&lines](std::string& partial) {
    size_t start = 0;
    for (size_t newline = partial.find('\n'); newline != std::string::npos; newline = partial.find('\n', start)) {
      std::string line = partial.substr(start, newline - start);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines.push_back(std::move(line));
      start = newline + 1;
    }
    partial.erase(0, start);
  };
  auto flush = [&lines](std::string& partial) {
    if (!partial.empty() && partial.back() == '\r') partial.pop_back();
    if (!partial.empty()) lines.push_back(std::move(partial));
    partial.clear();
  };

  if (!multiplexed) {
    std::string all(body);
    takeLines(all);
    flush(all);
    return lines;
  }
  std::string partial[3];
  for (size_t pos = 0; pos < body.size();) {
    const auto stream = static_cast<unsigned char>(body[pos]);
    const uint32_t size = (uint32_t(static_cast<unsigned char>(body[pos + 4])) << 24) |
                          (uint32_t(static_cast<unsigned char>(body[pos + 5])) << 16) |
                          (uint32_t(static_cast<unsigned char>(body[pos + 6])) << 8) |
                          uint32_t(static_cast<unsigned char>(body[pos + 7]));
    partial[stream].append(body.substr(pos + 8, size));
    takeLines(partial[stream]);
    pos += 8 + size;
  }
  for (auto& rest : partial) flush(rest);
  return lines;
}

std::optional<std::chrono::system_clock::time_point> parseRfc3339(const std::string& text) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!readDigits(text, 0, 4, year) || text.size() < 20 || text[4] != '-' || !readDigits(text, 5, 2, month) ||
      text[7] != '-' || !readDigits(text, 8, 2, day) || (text[10] != 'T' && text[10] != 't') ||
      !readDigits(text, 11, 2, hour) || text[13] != ':' || !readDigits(text, 14, 2, minute) || text[16] != ':' ||
      !readDigits(text, 17, 2, second)) {
    return std::nullopt;
  }
  if (year < 1678 || year > 2261) return std::nullopt;  // 0001-01-01 is Docker's zero time; ns range
  size_t pos = 19;
  int64_t nanos = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < text.size() && std::isdigit(static_cast<unsigned char>(text[pos]))) {
      if (digits < 9) {
        nanos = nanos * 10 + (text[pos] - '0');
        ++digits;
      }
      ++pos;
    }
    if (digits == 0) return std::nullopt;
    for (; digits < 9; ++digits) nanos *= 10;
  }
  int offsetMinutes = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int offsetHours = 0;
    int offsetMins = 0;
    if (!readDigits(text, pos + 1, 2, offsetHours) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !readDigits(text, pos + 4, 2, offsetMins)) {
      return std::nullopt;
    }
    offsetMinutes = (offsetHours * 60 + offsetMins) * (text[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  using namespace std::chrono;
  const year_month_day date{std::chrono::year{year}, std::chrono::month{unsigned(month)},
                            std::chrono::day{unsigned(day)}};
  if (!date.ok() || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  const auto since =
      sys_days{date}.time_since_epoch() + hours{hour} + minutes{minute} + seconds{second} - minutes{offsetMinutes};
  return system_clock::time_point{duration_cast<system_clock::duration>(since + nanoseconds{nanos})};
}

std::optional<std::chrono::system_clock::time_point> newestLogTimestamp(std::string_view body) {
  std::optional<std::chrono::system_clock::time_point> newest;
  for (const std::string& line : splitLogStream(body)) {
    const auto stamp = parseRfc3339(line.substr(0, line.find(' ')));
    if (stamp && (!newest || *stamp > *newest)) newest = stamp;
  }
  return newest;
}

Result<ContainerInfo> parseContainerInspect(std::string_view text) {
  json root = json::parse(text, nullptr, false);
  if (!root.is_object()) {
    return makeError(ErrorCode::kProtocol, "docker: container inspect answered something that is not a JSON object");
  }
  ContainerInfo info;
  info.id = stringField(root, "Id");
  info.name = stringField(root, "Name");
  if (!info.name.empty() && info.name.front() == '/') info.name.erase(0, 1);
  info.imageId = stringField(root, "Image");
  if (const json* config = objectField(root, "Config")) {
    info.image = stringField(*config, "Image");
    info.labels = stringMap(objectField(*config, "Labels"));
  }
  if (const json* state = objectField(root, "State")) {
    info.state = stateFromDocker(stringField(*state, "Status"));
    if (auto it = state->find("ExitCode"); it != state->end() && it->is_number_integer()) {
      info.exitCode = it->get<int>();
    }
    if (auto it = state->find("OOMKilled"); it != state->end() && it->is_boolean()) {
      info.oomKilled = it->get<bool>();
    }
    const std::string startedAt = stringField(*state, "StartedAt");
    const std::string finishedAt = stringField(*state, "FinishedAt");
    info.startedAtTime = parseRfc3339(startedAt);
    if (info.startedAtTime) info.startedAt = startedAt;
    if (parseRfc3339(finishedAt)) info.finishedAt = finishedAt;
  }
  if (info.id.empty()) return makeError(ErrorCode::kProtocol, "docker: container inspect answered without an Id");
  return info;
}

Result<ContainerStats> parseContainerStats(std::string_view text) {
  json root = json::parse(text, nullptr, false);
  if (!root.is_object()) return makeError(ErrorCode::kProtocol, "docker: container stats are not a JSON object");
  auto unsignedAt = [](const json& parent, const char* key) -> std::optional<uint64_t> {
    if (!parent.is_object()) return std::nullopt;
    auto it = parent.find(key);
    if (it == parent.end() || !it->is_number()) return std::nullopt;
    return it->get<uint64_t>();
  };
  ContainerStats stats;
  if (const json* cpu = objectField(root, "cpu_stats")) {
    if (const json* usage = objectField(*cpu, "cpu_usage")) {
      if (auto total = unsignedAt(*usage, "total_usage")) stats.cpuSeconds = double(*total) / 1e9;
    }
  }
  if (const json* memory = objectField(root, "memory_stats")) {
    uint64_t usage = unsignedAt(*memory, "usage").value_or(0);
    if (const json* detail = objectField(*memory, "stats")) {
      for (const char* cacheKey : {"total_inactive_file", "inactive_file", "cache"}) {
        auto cache = unsignedAt(*detail, cacheKey);
        if (!cache) continue;
        if (*cache < usage) usage -= *cache;
        break;
      }
    }
    stats.memoryBytes = int64_t(usage);
  }
  return stats;
}

std::optional<RuntimeEvent> parseDockerEvent(std::string_view jsonLine) {
  json event = json::parse(jsonLine, nullptr, false);
  if (!event.is_object()) return std::nullopt;
  const std::string type = stringField(event, "Type");
  if (!type.empty() && type != "container") return std::nullopt;
  std::string action = stringField(event, "Action");
  if (action.empty()) action = stringField(event, "status");
  const json* actor = objectField(event, "Actor");
  std::string id = actor != nullptr ? stringField(*actor, "ID") : std::string();
  if (id.empty()) id = stringField(event, "id");
  RuntimeEvent out{RuntimeEvent::Kind::kContainerStarted, id, std::nullopt, {}};
  if (action == "start") {
    out.kind = RuntimeEvent::Kind::kContainerStarted;
  } else if (action == "die") {
    out.kind = RuntimeEvent::Kind::kContainerExited;
    // Docker sends the exit code as a string attribute: {"exitCode": "137"}.
    const json* attributes = actor != nullptr ? objectField(*actor, "Attributes") : nullptr;
    const std::string code = attributes != nullptr ? stringField(*attributes, "exitCode") : std::string();
    if (!code.empty() && code.size() <= 9) {
      int value = 0;
      bool digits = true;
      for (char c : code) {
        if (!std::isdigit(static_cast<unsigned char>(c)))
          digits = false;
        else
          value = value * 10 + (c - '0');
      }
      if (digits && code.size() <= 9) out.exitCode = value;
    }
  } else if (action == "oom") {
    out.kind = RuntimeEvent::Kind::kContainerOom;
  } else if (action == "destroy") {
    out.kind = RuntimeEvent::Kind::kContainerRemoved;
  } else {
    return std::nullopt;
  }
  if (out.containerId.empty()) return std::nullopt;
  return out;
}

// ---- DockerRuntime ------------------------------------------------------------------------------

DockerRuntime::DockerRuntime(std::string socketPath, std::string apiVersion, std::string daemonVersion,
                             milliseconds timeout)
    : apiPrefix_("/v" + apiVersion), timeout_(timeout), client_(socketPath, "docker", timeout) {
  info_.kind = "docker";
  info_.endpoint = std::move(socketPath);
  info_.version = std::move(daemonVersion);
  info_.apiVersion = std::move(apiVersion);
}

milliseconds DockerRuntime::slowTimeout() const { return std::max(timeout_, kSlowOperationMinimum); }

Result<HttpResponse> DockerRuntime::call(const std::string& method, const std::string& pathAndQuery, std::string body,
                                         milliseconds totalTimeout) const {
  HttpRequest request;
  request.method = method;
  request.target = apiPrefix_ + pathAndQuery;
  request.body = std::move(body);
  request.totalTimeout = totalTimeout;
  return client_.send(request);
}

Status DockerRuntime::ping() {
  auto response = call("GET", "/_ping", {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status != 200) return httpError(*response, "ping on " + info_.endpoint);
  return okStatus();
}

Result<ContainerInfo> DockerRuntime::inspectContainer(const std::string& nameOrId) {
  if (nameOrId.empty()) return makeError(ErrorCode::kInvalidArgument, "docker: inspect needs a container name or id");
  auto response = call("GET", "/containers/" + urlEncode(nameOrId) + "/json", {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + nameOrId);
  if (response->status != 200) return httpError(*response, "inspecting container " + nameOrId);
  return parseContainerInspect(response->body);
}

Result<std::vector<ContainerInfo>> DockerRuntime::listContainers(const std::map<std::string, std::string>& labels) {
  std::string query = "/containers/json?all=1";
  if (!labels.empty()) query += "&filters=" + urlEncode(json{{"label", labelFilter(labels)}}.dump());
  auto response = call("GET", query, {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status != 200) return httpError(*response, "listing containers");
  json summaries = json::parse(response->body, nullptr, false);
  if (!summaries.is_array()) {
    return makeError(ErrorCode::kProtocol, "docker: the container list is not a JSON array");
  }
  std::vector<ContainerInfo> out;
  for (const auto& summary : summaries) {
    const std::string id = stringField(summary, "Id");
    if (id.empty()) continue;
    // Summaries lack the exit code and OOM flag: inspect each one.
    auto info = inspectContainer(id);
    if (!info.ok()) {
      if (info.code() == ErrorCode::kNotFound) continue;  // removed between list and inspect
      return info.error();
    }
    out.push_back(std::move(info).value());
  }
  return out;
}

Result<bool> DockerRuntime::imagePresent(const std::string& reference) {
  auto valid = checkReferenceChars(reference);
  if (!valid.ok()) return valid.error();
  auto response = call("GET", "/images/" + reference + "/json", {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status == 200) return true;
  if (response->status == 404) return false;
  return httpError(*response, "looking up image " + reference);
}

Result<std::string> DockerRuntime::imageId(const std::string& reference) {
  auto valid = checkReferenceChars(reference);
  if (!valid.ok()) return valid.error();
  auto response = call("GET", "/images/" + reference + "/json", {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status == 404) return std::string();
  if (response->status != 200) return httpError(*response, "looking up image " + reference);
  json image = json::parse(response->body, nullptr, false);
  return stringField(image, "Id");
}

Status DockerRuntime::pullImage(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
                                const PullProgressFn& progress) {
  auto parsed = parseImageReference(reference);
  if (!parsed.ok()) return parsed.error();
  const std::string context = "docker: pulling " + reference;

  HttpRequest request;
  request.method = "POST";
  request.target = apiPrefix_ + "/images/create?fromImage=" + urlEncode(parsed->name()) +
                   "&tag=" + urlEncode(parsed->digest.empty() ? parsed->tag : parsed->digest);
  request.totalTimeout = milliseconds(0);  // pulls can be long; the low-speed limit catches a stall
  request.lowSpeedTime = kPullLowSpeedTime;
  if (credentials) {
    const std::string server = credentials->serverAddress.empty() ? parsed->registry : credentials->serverAddress;
    json auth =
        credentials->identityToken.empty()
            ? json{{"username", credentials->username}, {"password", credentials->password}, {"serveraddress", server}}
            : json{{"identitytoken", credentials->identityToken}, {"serveraddress", server}};
    request.headers.emplace_back("X-Registry-Auth", base64UrlEncode(auth.dump()));
  }

  std::string streamError;
  StreamedBody body([&](std::string_view line) {
    if (trim(line).empty()) return;
    json message = json::parse(line, nullptr, false);
    if (!message.is_object()) return;
    std::string error = stringField(message, "error");
    if (error.empty()) {
      if (const json* detail = objectField(message, "errorDetail")) error = stringField(*detail, "message");
    }
    if (!error.empty()) {
      if (streamError.empty()) streamError = error;
      return;
    }
    const std::string statusText = stringField(message, "status");
    if (!statusText.empty() && progress) progress(PullProgress{statusText, stringField(message, "id")});
  });
  auto onHeaders = [&](const HttpResponse& head) {
    body.setStatus(head.status);
    return true;
  };
  auto onBody = [&](std::string_view chunk) {
    body.feed(chunk);
    return true;
  };
  auto response = client_.send(request, onBody, onHeaders);
  if (!response.ok()) return duringOperation(response.error(), "pulling " + reference);
  if (body.status() == 200) {
    body.finish();
    if (streamError.empty()) return okStatus();
  } else {
    streamError = daemonMessage(body.errorBody());
  }
  const std::string lowered = lowerCase(streamError);
  ErrorCode code = ErrorCode::kUnavailable;
  if (lowered.find("unauthorized") != std::string::npos ||
      lowered.find("authentication required") != std::string::npos ||
      lowered.find("no basic auth credentials") != std::string::npos || lowered.find("denied") != std::string::npos) {
    code = ErrorCode::kUnauthenticated;
  } else if (lowered.find("manifest unknown") != std::string::npos || lowered.find("not found") != std::string::npos) {
    code = ErrorCode::kNotFound;
  } else if (body.status() >= 400 && body.status() < 500) {
    code = codeForStatus(body.status());
  }
  return makeError(code, context + ": " + streamError);
}

Result<std::string> DockerRuntime::createContainer(const ContainerSpec& spec) {
  auto response =
      call("POST", "/containers/create?name=" + urlEncode(spec.name), createContainerBody(spec), slowTimeout());
  if (!response.ok()) return duringOperation(response.error(), "creating container " + spec.name);
  if (response->status == 409) {
    return makeError(ErrorCode::kAlreadyExists, "docker: a container named " + spec.name + " already exists (" +
                                                    scrubSecrets(daemonMessage(response->body), spec.env) + ")");
  }
  if (response->status == 404) {
    return makeError(ErrorCode::kNotFound, "docker: creating container " + spec.name + ": image " + spec.image +
                                               " is not present (" +
                                               scrubSecrets(daemonMessage(response->body), spec.env) + ")");
  }
  if (response->status != 201 && response->status != 200) {
    return httpError(*response, "creating container " + spec.name, spec.env);
  }
  json created = json::parse(response->body, nullptr, false);
  std::string id = stringField(created, "Id");
  if (id.empty()) return makeError(ErrorCode::kProtocol, "docker: container create answered without an Id");
  return id;
}

Status DockerRuntime::startContainer(const std::string& id) {
  auto response = call("POST", "/containers/" + urlEncode(id) + "/start", {}, slowTimeout());
  if (!response.ok()) return duringOperation(response.error(), "starting container " + id);
  if (response->status == 204 || response->status == 304) return okStatus();
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id + " to start");
  return httpError(*response, "starting container " + id);
}

Status DockerRuntime::stopContainer(const std::string& id, std::chrono::seconds grace) {
  auto response = call("POST", "/containers/" + urlEncode(id) + "/stop?t=" + std::to_string(grace.count()), {},
                       slowTimeout() + std::chrono::duration_cast<milliseconds>(grace));
  if (!response.ok()) return duringOperation(response.error(), "stopping container " + id);
  if (response->status == 204 || response->status == 304) return okStatus();
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id + " to stop");
  return httpError(*response, "stopping container " + id);
}

Status DockerRuntime::removeContainer(const std::string& id, bool force) {
  auto response =
      call("DELETE", "/containers/" + urlEncode(id) + "?v=1" + (force ? "&force=1" : ""), {}, slowTimeout());
  if (!response.ok()) return duringOperation(response.error(), "removing container " + id);
  if (response->status == 204 || response->status == 200) return okStatus();
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id + " to remove");
  return httpError(*response, "removing container " + id);
}

Result<std::vector<std::string>> DockerRuntime::logTail(const std::string& id, int lines) {
  if (lines <= 0) return std::vector<std::string>{};
  auto response = call("GET", "/containers/" + urlEncode(id) + "/logs?stdout=1&stderr=1&tail=" + std::to_string(lines),
                       {}, timeout_);
  if (!response.ok()) return duringOperation(response.error(), "reading logs of container " + id);
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id);
  if (response->status != 200) return httpError(*response, "reading logs of container " + id);
  auto all = splitLogStream(response->body);
  if (all.size() > size_t(lines)) all.erase(all.begin(), all.end() - lines);
  return all;
}

Result<ContainerStats> DockerRuntime::containerStats(const std::string& id) {
  auto response = call("GET", "/containers/" + urlEncode(id) + "/stats?stream=false&one-shot=true", {}, timeout_);
  if (!response.ok()) return duringOperation(response.error(), "reading stats of container " + id);
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id);
  if (response->status != 200) return httpError(*response, "reading stats of container " + id);
  return parseContainerStats(response->body);
}

Result<int> DockerRuntime::execInContainer(const std::string& id, const std::vector<std::string>& command,
                                           milliseconds timeout) {
  if (command.empty()) return makeError(ErrorCode::kInvalidArgument, "docker: exec needs a command");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const std::string what = "running a health probe in container " + id;
  json createBody = {
      {"Cmd", command}, {"AttachStdin", false}, {"AttachStdout", false}, {"AttachStderr", false}, {"Tty", false}};
  auto created = call("POST", "/containers/" + urlEncode(id) + "/exec", createBody.dump(), timeout_);
  if (!created.ok()) return duringOperation(created.error(), what);
  if (created->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id);
  if (created->status == 409) {
    return makeError(ErrorCode::kConflict,
                     "docker: container " + id + " is not running (" + daemonMessage(created->body) + ")");
  }
  if (created->status != 201 && created->status != 200) return httpError(*created, what);
  const std::string execId = stringField(json::parse(created->body, nullptr, false), "Id");
  if (execId.empty()) return makeError(ErrorCode::kProtocol, "docker: exec create answered without an Id");

  auto started =
      call("POST", "/exec/" + urlEncode(execId) + "/start", json{{"Detach", true}, {"Tty", false}}.dump(), timeout_);
  if (!started.ok()) return duringOperation(started.error(), what);
  if (started->status == 409) {
    return makeError(ErrorCode::kConflict,
                     "docker: container " + id + " is not running (" + daemonMessage(started->body) + ")");
  }
  if (started->status != 200 && started->status != 204) return httpError(*started, what);

  // The daemon has no "wait for exec" call: poll its state, a little less eagerly as time passes.
  milliseconds pause{10};
  for (;;) {
    auto inspected = call("GET", "/exec/" + urlEncode(execId) + "/json", {}, timeout_);
    if (!inspected.ok()) return duringOperation(inspected.error(), what);
    if (inspected->status != 200) return httpError(*inspected, what);
    json state = json::parse(inspected->body, nullptr, false);
    if (!state.is_object()) return makeError(ErrorCode::kProtocol, "docker: exec inspect is not a JSON object");
    if (!state.value("Running", false)) {
      const json* code = state.contains("ExitCode") ? &state["ExitCode"] : nullptr;
      if (code == nullptr || !code->is_number_integer()) {
        return makeError(ErrorCode::kProtocol, "docker: exec ended without an exit code");
      }
      return code->get<int>();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return makeError(ErrorCode::kTimeout, "docker: health probe in container " + id + " did not finish within " +
                                                std::to_string(timeout.count()) + "ms");
    }
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, milliseconds(200));
  }
}

Result<std::optional<std::chrono::system_clock::time_point>> DockerRuntime::lastOutputTime(
    const std::string& id, std::chrono::system_clock::time_point since) {
  // Whole seconds, rounded down: a line up to a second older than asked for may come back, which
  // only makes the answer more recent than `since`, never wrong about the newest line.
  const auto sinceSeconds = std::chrono::duration_cast<std::chrono::seconds>(since.time_since_epoch()).count();
  auto response = call("GET",
                       "/containers/" + urlEncode(id) + "/logs?stdout=1&stderr=1&timestamps=1&tail=5&since=" +
                           std::to_string(std::max<int64_t>(sinceSeconds, 1)),
                       {}, timeout_);
  if (!response.ok()) return duringOperation(response.error(), "reading logs of container " + id);
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + id);
  if (response->status != 200) return httpError(*response, "reading logs of container " + id);
  auto newest = newestLogTimestamp(response->body);
  if (newest && *newest < since) newest.reset();
  return newest;
}

std::unique_ptr<EventWatcher> DockerRuntime::watchEvents(const std::map<std::string, std::string>& labels,
                                                         RuntimeEventFn onEvent) {
  json filters = {{"type", json::array({"container"})}};
  if (!labels.empty()) filters["label"] = labelFilter(labels);
  const std::string target = apiPrefix_ + "/events?filters=" + urlEncode(filters.dump());
  return std::make_unique<DockerEventWatcher>(info_.endpoint, timeout_, target, std::move(onEvent));
}

// ---- Connecting and probing ---------------------------------------------------------------------

namespace {

struct PingAnswer {
  std::string apiVersion;  // as the server says it
  std::string serverVersion;
};

Result<PingAnswer> pingUnversioned(const UnixHttpClient& client, milliseconds timeout) {
  HttpRequest request;
  request.target = "/_ping";
  request.totalTimeout = timeout;
  auto response = client.send(request);
  if (!response.ok()) return response.error();
  const std::string apiVersion = response->header("API-Version");
  if (response->status != 200 || apiVersion.empty()) {
    return makeError(ErrorCode::kProtocol,
                     "docker: " + client.socketPath() + " answered /_ping with HTTP " +
                         std::to_string(response->status) +
                         (apiVersion.empty() ? " and no API-Version header; is it a Docker socket?" : ""));
  }
  return PingAnswer{apiVersion, versionFromServerHeader(response->header("Server"))};
}

Result<std::string> negotiate(const std::string& socketPath, const std::string& serverApi) {
  auto parsed = parseApiVersion(serverApi);
  if (!parsed) {
    return makeError(ErrorCode::kProtocol,
                     "docker: " + socketPath + " reports API version \"" + serverApi + "\", which is not MAJOR.MINOR");
  }
  auto [major, minor] = *parsed;
  if (major > 1) return std::string("1." + std::to_string(kMaxApiMinor));
  if (major < 1 || minor < kMinApiMinor) {
    return makeError(ErrorCode::kConflict, "docker: the daemon on " + socketPath + " speaks Engine API " + serverApi +
                                               ", older than 1." + std::to_string(kMinApiMinor) +
                                               " (Docker 19.03) which this agent needs; upgrade Docker");
  }
  return "1." + std::to_string(std::min(minor, kMaxApiMinor));
}

}  // namespace

Result<std::unique_ptr<ContainerRuntime>> connectDocker(const std::string& socketPath, milliseconds timeout) {
  UnixHttpClient client(socketPath, "docker", timeout);
  auto ping = pingUnversioned(client, timeout);
  if (!ping.ok()) return ping.error();
  auto apiVersion = negotiate(socketPath, ping->apiVersion);
  if (!apiVersion.ok()) return apiVersion.error();

  std::string daemonVersion = ping->serverVersion;
  HttpRequest request;
  request.target = "/v" + *apiVersion + "/version";
  request.totalTimeout = timeout;
  auto version = client.send(request);
  if (version.ok() && version->status == 200) {
    json parsed = json::parse(version->body, nullptr, false);
    if (std::string reported = stringField(parsed, "Version"); !reported.empty()) daemonVersion = reported;
  }
  return std::unique_ptr<ContainerRuntime>(
      std::make_unique<DockerRuntime>(socketPath, *apiVersion, daemonVersion, timeout));
}

ProbeOutcome probeDocker(const std::string& socketPath, milliseconds timeout, std::string& detail) {
  struct stat st {};
  if (::stat(socketPath.c_str(), &st) != 0) {
    const int err = errno;
    detail = std::strerror(err);
    if (err == EACCES || err == EPERM) return ProbeOutcome::kPermissionDenied;
    return ProbeOutcome::kAbsent;
  }
  if (!S_ISSOCK(st.st_mode)) {
    detail = "not a unix socket";
    return ProbeOutcome::kNotASocket;
  }
  UnixHttpClient client(socketPath, "docker", timeout);
  auto ping = pingUnversioned(client, timeout);
  if (!ping.ok()) {
    detail = ping.message();
    switch (ping.code()) {
      case ErrorCode::kPermissionDenied: return ProbeOutcome::kPermissionDenied;
      case ErrorCode::kProtocol: return ProbeOutcome::kBadAnswer;
      default: return ProbeOutcome::kNotAnswering;
    }
  }
  auto apiVersion = negotiate(socketPath, ping->apiVersion);
  if (!apiVersion.ok()) {
    detail = apiVersion.message();
    return apiVersion.code() == ErrorCode::kConflict ? ProbeOutcome::kUnsupported : ProbeOutcome::kBadAnswer;
  }
  detail = "Docker " + (ping->serverVersion.empty() ? std::string("(version unknown)") : ping->serverVersion) +
           ", API " + ping->apiVersion;
  return ProbeOutcome::kAnswered;
}

}  // namespace qcs::runtime::docker

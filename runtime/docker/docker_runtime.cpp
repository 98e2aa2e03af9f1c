#include "runtime/docker/docker_runtime.h"

#include "runtime/json_fields.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <type_traits>

#include "common/encoding.h"

namespace qcs::runtime::docker {

struct ApiVersionState {
  std::mutex mutex;
  // Notified when the prefix changes and when a watcher is told to stop: a watcher waiting out its
  // backoff re-dials at once with the new version.
  std::condition_variable changed;
  std::string prefix;  // "/v1.41"
  uint64_t generation = 0;
};

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

// The document, or a discarded value when the text is not JSON or nests deeper than kMaxJsonDepth.
json parseJson(std::string_view text) {
  if (!jsonNestingWithin(text)) return json(json::value_t::discarded);
  return json::parse(text, nullptr, false);
}

// An integer field that fits T; nullopt when absent, not an integer or out of range.
template <typename T>
std::optional<T> integerField(const json& object, const char* key) {
  if (!object.is_object()) return std::nullopt;
  auto it = object.find(key);
  if (it == object.end()) return std::nullopt;
  if (it->is_number_unsigned()) {
    const auto value = it->get<uint64_t>();
    if (value > uint64_t(std::numeric_limits<T>::max())) return std::nullopt;
    return T(value);
  }
  if (it->is_number_integer()) {
    const auto value = it->get<int64_t>();
    if constexpr (std::is_signed_v<T>) {
      if (value < int64_t(std::numeric_limits<T>::min()) || value > int64_t(std::numeric_limits<T>::max())) {
        return std::nullopt;
      }
    } else {
      if (value < 0 || uint64_t(value) > uint64_t(std::numeric_limits<T>::max())) return std::nullopt;
    }
    return T(value);
  }
  return std::nullopt;
}

std::string capped(std::string text, size_t limit = kMaxErrorBody) {
  if (text.size() > limit) text = text.substr(0, limit) + "...";
  return text;
}

// Docker answers errors as {"message": "..."}; anything else is shown trimmed and capped.
std::string daemonMessage(const std::string& body) {
  json parsed = parseJson(body);
  std::string message = capped(stringField(parsed, "message"));
  if (message.empty()) message = std::string(trim(body.substr(0, kMaxErrorBody)));
  if (message.empty()) message = "(no message)";
  return message;
}

// The JSON document of a successful answer, checked before any field is used: the content type
// (when the peer names one) says JSON, the nesting is bounded and the text parses. `what` names
// the request for the error ("GET /containers/json").
Result<json> jsonAnswer(const HttpResponse& response, const std::string& socketPath, const std::string& what) {
  const std::string contentType = lowerCase(response.header("Content-Type"));
  if (!contentType.empty() && contentType.find("json") == std::string::npos) {
    return makeError(ErrorCode::kProtocol, "docker: " + socketPath + " answered " + what + " with " +
                                               capped(contentType, 100) +
                                               ", not JSON (is it the Docker daemon that listens there?)");
  }
  if (!jsonNestingWithin(response.body)) {
    return makeError(ErrorCode::kProtocol, "docker: " + socketPath + " answered " + what +
                                               " with JSON nested deeper than " + std::to_string(kMaxJsonDepth) +
                                               " levels (no Docker answer does; is it the Docker daemon?)");
  }
  json document = json::parse(response.body, nullptr, false);
  if (document.is_discarded()) {
    return makeError(ErrorCode::kProtocol, "docker: " + socketPath + " answered " + what + " with invalid JSON (" +
                                               std::to_string(response.body.size()) + " bytes)");
  }
  return document;
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

// A streamed response body: newline-delimited lines (at most kMaxStreamLineBytes each) while the
// status is 200, otherwise an error body kept up to kMaxErrorBody bytes for the message.
class StreamedBody {
 public:
  // onLine returns false to end the stream (and keeps its own note of why).
  explicit StreamedBody(LineSplitter::LineFn onLine) : lines_(kMaxStreamLineBytes, std::move(onLine)) {}

  void setStatus(long status) { status_ = status; }
  long status() const { return status_; }
  // False: end the transfer (failure() says why).
  bool feed(std::string_view chunk) {
    if (status_ != 200) {
      if (errorBody_.size() < kMaxErrorBody) errorBody_.append(chunk.substr(0, kMaxErrorBody - errorBody_.size()));
      return true;
    }
    if (lines_.feed(chunk)) return true;
    if (lines_.overflowed() && failure_.empty()) {
      failure_ = "sent a line longer than " + humanBytes(kMaxStreamLineBytes) + " (the most the agent holds of one)";
    }
    return false;
  }
  // The last line when the body did not end with a newline.
  void finish() {
    if (status_ == 200) lines_.finish();
  }
  // Why the stream was ended from this side ("" when it was not).
  const std::string& failure() const { return failure_; }
  const std::string& errorBody() const { return errorBody_; }

 private:
  LineSplitter lines_;
  long status_ = 0;
  std::string errorBody_;
  std::string failure_;
};

std::optional<std::pair<int, int>> parseApiVersion(const std::string& text) {
  const auto dot = text.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 >= text.size()) return std::nullopt;
  // Six digits a part is plenty and keeps the arithmetic far from overflow.
  if (dot > 6 || text.size() - dot - 1 > 6) return std::nullopt;
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
  const std::string version = server.substr(slash + 1, end == std::string::npos ? std::string::npos : end - slash - 1);
  return version.substr(0, 64);
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

// The RuntimeEvent of one /events object; nullopt for events the supervisor does not need.
std::optional<RuntimeEvent> eventFromJson(const json& event);

// Up to 80 bytes of what a peer sent, control and non-ASCII bytes shown as '?', for an error.
std::string printablePrefix(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes.substr(0, 80)) out.push_back(c >= 0x20 && c < 0x7f ? char(c) : '?');
  if (bytes.size() > 80) out += "...";
  return out;
}

class DockerEventWatcher final : public EventWatcher {
 public:
  DockerEventWatcher(const std::string& socketPath, milliseconds connectTimeout, std::shared_ptr<ApiVersionState> api,
                     std::string pathAndQuery, RuntimeEventFn onEvent)
      : client_(socketPath, "docker", connectTimeout),
        api_(std::move(api)),
        pathAndQuery_(std::move(pathAndQuery)),
        onEvent_(std::move(onEvent)) {
    ensureCurlInitialized();
    multi_.reset(curl_multi_init());
    thread_ = std::thread([this] { run(); });
  }

  ~DockerEventWatcher() override {
    {
      std::lock_guard lock(api_->mutex);
      stopping_ = true;
    }
    if (multi_) curl_multi_wakeup(multi_.get());
    api_->changed.notify_all();
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
      uint64_t generation = 0;
      std::string prefix;
      {
        std::lock_guard lock(api_->mutex);
        generation = api_->generation;
        prefix = api_->prefix;
      }
      bool connected = false;
      std::string reason;
      const auto began = std::chrono::steady_clock::now();
      try {
        reason = streamOnce(prefix + pathAndQuery_, connected);
      } catch (const std::exception& e) {
        reason = std::string("docker: event watcher failed: ") + e.what();
      } catch (...) {
        reason = "docker: event watcher failed with an unknown exception";
      }
      if (stopping_) break;
      if (connected) reportedLost = false;
      // Only a connection that stayed healthy for a while starts the backoff over: a peer that
      // answers and then misbehaves at once is re-dialled less and less often, not every 250ms.
      if (connected && std::chrono::steady_clock::now() - began >= kHealthyStreamTime) backoff = kEventBackoffInitial;
      // Report the transition to "lost" once; failed reconnects do not repeat it.
      if (!reportedLost) {
        reportedLost = true;
        try {
          emit(RuntimeEvent{RuntimeEvent::Kind::kStreamLost, {}, std::nullopt, reason});
        } catch (...) {
          // The callback's failure must not end the watcher.
        }
      }
      std::unique_lock lock(api_->mutex);
      const bool renegotiated =
          api_->changed.wait_for(lock, backoff, [&] { return stopping_.load() || api_->generation != generation; });
      // A new API version (ping() found another daemon) is worth a prompt try of its own.
      backoff = renegotiated && !stopping_ ? kEventBackoffInitial : std::min(backoff * 2, kEventBackoffMax);
    }
  }

  // One connection to target (/vX.Y/events?filters=...). Returns why it ended.
  std::string streamOnce(const std::string& target, bool& connected) {
    std::string violation;
    StreamedBody body([&](std::string_view line) {
      if (trim(line).empty()) return true;
      json event = parseJson(line);
      if (!event.is_object()) {
        violation = "sent a line that is not a JSON event: " + printablePrefix(line);
        return false;
      }
      if (auto parsed = eventFromJson(event)) emit(*parsed);
      return !stopping_;
    });
    auto onHeaders = [&](const HttpResponse& head) {
      body.setStatus(head.status);
      if (head.status == 200) {
        connected = true;
        emit(RuntimeEvent{RuntimeEvent::Kind::kStreamConnected, {}, std::nullopt, {}});
      }
      return !stopping_;
    };
    auto onBody = [&](std::string_view chunk) { return body.feed(chunk) && !stopping_; };

    HttpRequest request;
    request.target = target;
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
    const std::string stream = "docker: the event stream from " + client_.socketPath();
    if (!violation.empty()) return stream + " " + violation;
    if (!body.failure().empty()) return stream + " " + body.failure();
    if (!multiFailure.empty()) return multiFailure;
    auto response = transfer->finish(result);
    if (!response.ok()) return response.message();
    if (body.status() != 200) {
      return "docker: " + target + " answered HTTP " + std::to_string(body.status()) + ": " +
             daemonMessage(body.errorBody());
    }
    return stream + " ended (the daemon closed it)";
  }

  UnixHttpClient client_;
  std::shared_ptr<ApiVersionState> api_;
  std::string pathAndQuery_;
  RuntimeEventFn onEvent_;
  CurlMultiPtr multi_;
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

bool jsonNestingWithin(std::string_view text, size_t maxDepth) {
  size_t depth = 0;
  bool inString = false;
  bool escaped = false;
  for (char c : text) {
    if (inString) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        inString = false;
      }
      continue;
    }
    switch (c) {
      case '"': inString = true; break;
      case '[':
      case '{':
        if (++depth > maxDepth) return false;
        break;
      case ']':
      case '}':
        if (depth > 0) --depth;
        break;
      default: break;
    }
  }
  return true;
}

bool LineSplitter::feed(std::string_view chunk) {
  if (stopped_) return false;
  // Only the new bytes are searched: a long line arriving in small pieces stays linear.
  size_t searchFrom = pending_.size();
  pending_.append(chunk);
  size_t start = 0;
  for (size_t newline = pending_.find('\n', searchFrom); newline != std::string::npos;
       newline = pending_.find('\n', start)) {
    if (newline - start > maxLineBytes_) {
      overflowed_ = stopped_ = true;
      pending_.clear();
      return false;
    }
    if (!onLine_(std::string_view(pending_).substr(start, newline - start))) {
      stopped_ = true;
      pending_.clear();
      return false;
    }
    start = newline + 1;
  }
  pending_.erase(0, start);
  if (pending_.size() > maxLineBytes_) {
    overflowed_ = stopped_ = true;
    pending_.clear();
    pending_.shrink_to_fit();
    return false;
  }
  return true;
}

bool LineSplitter::finish() {
  if (stopped_) return false;
  stopped_ = true;
  if (pending_.empty()) return true;
  std::string last = std::move(pending_);
  pending_.clear();
  return onLine_(last);
}

namespace {

Result<ContainerInfo> inspectFromJson(const json& root) {
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
    if (auto code = integerField<int>(*state, "ExitCode")) info.exitCode = *code;
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

}  // namespace

Result<ContainerInfo> parseContainerInspect(std::string_view text) { return inspectFromJson(parseJson(text)); }

Result<ContainerStats> parseContainerStats(std::string_view text) {
  json root = parseJson(text);
  if (!root.is_object()) return makeError(ErrorCode::kProtocol, "docker: container stats are not a JSON object");
  auto unsignedAt = [](const json& parent, const char* key) -> std::optional<uint64_t> {
    if (auto value = integerField<uint64_t>(parent, key)) return value;
    if (!parent.is_object()) return std::nullopt;
    // A float where a counter belongs is taken when it is one; NaN, negatives and overflow are not.
    auto it = parent.find(key);
    if (it == parent.end() || !it->is_number_float()) return std::nullopt;
    const double value = it->get<double>();
    if (!std::isfinite(value) || value < 0 || value >= 18446744073709551615.0) return std::nullopt;
    return uint64_t(value);
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

std::optional<RuntimeEvent> parseDockerEvent(std::string_view jsonLine) { return eventFromJson(parseJson(jsonLine)); }

namespace {

std::optional<RuntimeEvent> eventFromJson(const json& event) {
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

}  // namespace

// ---- The handshake -----------------------------------------------------------------------------

namespace {

struct PingAnswer {
  std::string apiVersion;  // as the server says it
  std::string serverVersion;
};

// GET /_ping without a version prefix: a Docker daemon answers 200 "OK" with its API-Version.
Result<PingAnswer> pingUnversioned(const UnixHttpClient& client, milliseconds timeout) {
  HttpRequest request;
  request.target = "/_ping";
  request.totalTimeout = timeout;
  request.maxBodyBytes = kMaxPingBytes;
  auto response = client.send(request);
  if (!response.ok()) return response.error();
  const std::string apiVersion = response->header("API-Version");
  if (response->status != 200 || apiVersion.empty()) {
    return makeError(ErrorCode::kProtocol,
                     "docker: " + client.socketPath() + " answered /_ping with HTTP " +
                         std::to_string(response->status) +
                         (apiVersion.empty() ? " and no API-Version header; is it a Docker socket?" : ""));
  }
  if (trim(response->body) != "OK") {
    return makeError(ErrorCode::kProtocol, "docker: " + client.socketPath() + " answered /_ping with \"" +
                                               printablePrefix(response->body) +
                                               "\" instead of \"OK\"; is it a Docker socket?");
  }
  return PingAnswer{apiVersion, versionFromServerHeader(response->header("Server"))};
}

Result<std::string> negotiate(const std::string& socketPath, const std::string& serverApi) {
  auto parsed = parseApiVersion(serverApi);
  if (!parsed) {
    return makeError(ErrorCode::kProtocol, "docker: " + socketPath + " reports API version \"" +
                                               printablePrefix(serverApi) + "\", which is not MAJOR.MINOR");
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

// ---- DockerRuntime ------------------------------------------------------------------------------

DockerRuntime::DockerRuntime(std::string socketPath, std::string apiVersion, std::string daemonVersion,
                             milliseconds timeout)
    : api_(std::make_shared<ApiVersionState>()), timeout_(timeout), client_(socketPath, "docker", timeout) {
  api_->prefix = "/v" + apiVersion;
  info_.kind = "docker";
  info_.endpoint = std::move(socketPath);
  info_.version = std::move(daemonVersion);
  info_.apiVersion = std::move(apiVersion);
}

milliseconds DockerRuntime::slowTimeout() const { return std::max(timeout_, kSlowOperationMinimum); }

std::string DockerRuntime::apiPrefix() const {
  std::lock_guard lock(api_->mutex);
  return api_->prefix;
}

Result<HttpResponse> DockerRuntime::call(const std::string& method, const std::string& pathAndQuery, std::string body,
                                         milliseconds totalTimeout) {
  HttpRequest request;
  request.method = method;
  request.target = apiPrefix() + pathAndQuery;
  request.body = std::move(body);
  request.totalTimeout = totalTimeout;
  auto response = client_.send(request);
  // Another, older daemon took over the socket: dockerd refuses versions above its own with 400
  // "client version 1.43 is too new. Maximum supported API version is 1.41". Negotiate with it
  // and ask once more, instead of failing every call until something pings.
  if (response.ok() && response->status == 400) {
    const std::string message = lowerCase(daemonMessage(response->body));
    if (message.find("is too new") != std::string::npos && message.find("api version") != std::string::npos &&
        renegotiate().ok()) {
      request.target = apiPrefix() + pathAndQuery;
      response = client_.send(request);
    }
  }
  return response;
}

Status DockerRuntime::renegotiate() {
  // Unversioned, as `docker version` does: the daemon answering now may not be the one negotiated
  // with (replaced by an older one, a versioned ping would fail for ever).
  auto answer = pingUnversioned(client_, timeout_);
  if (!answer.ok()) return answer.error();
  auto apiVersion = negotiate(info_.endpoint, answer->apiVersion);
  if (!apiVersion.ok()) return apiVersion.error();
  if (*apiVersion != info_.apiVersion) {
    info_.apiVersion = *apiVersion;
    if (!answer->serverVersion.empty()) info_.version = answer->serverVersion;
    {
      std::lock_guard lock(api_->mutex);
      api_->prefix = "/v" + *apiVersion;
      ++api_->generation;
    }
    api_->changed.notify_all();
  }
  return okStatus();
}

Status DockerRuntime::ping() { return renegotiate(); }

Result<ContainerInfo> DockerRuntime::inspectContainer(const std::string& nameOrId) {
  if (nameOrId.empty()) return makeError(ErrorCode::kInvalidArgument, "docker: inspect needs a container name or id");
  auto response = call("GET", "/containers/" + urlEncode(nameOrId) + "/json", {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status == 404) return makeError(ErrorCode::kNotFound, "docker: no container " + nameOrId);
  if (response->status != 200) return httpError(*response, "inspecting container " + nameOrId);
  auto document = jsonAnswer(*response, info_.endpoint, "GET /containers/" + nameOrId + "/json");
  if (!document.ok()) return document.error();
  return inspectFromJson(*document);
}

Result<std::vector<ContainerInfo>> DockerRuntime::listContainers(const std::map<std::string, std::string>& labels) {
  std::string query = "/containers/json?all=1";
  if (!labels.empty()) query += "&filters=" + urlEncode(json{{"label", labelFilter(labels)}}.dump());
  auto response = call("GET", query, {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status != 200) return httpError(*response, "listing containers");
  auto document = jsonAnswer(*response, info_.endpoint, "GET /containers/json");
  if (!document.ok()) return document.error();
  const json& summaries = *document;
  if (!summaries.is_array()) {
    return makeError(ErrorCode::kProtocol, "docker: the container list from " + info_.endpoint +
                                               " is not a JSON array (is it the Docker daemon that listens there?)");
  }
  // Each summary costs an inspect call: a peer listing thousands would keep the agent busy for
  // minutes, and the labels asked for are the agent's own.
  if (summaries.size() > kMaxListedContainers) {
    return makeError(ErrorCode::kProtocol, "docker: " + info_.endpoint + " listed " + std::to_string(summaries.size()) +
                                               " containers carrying the agent's labels; more than " +
                                               std::to_string(kMaxListedContainers) +
                                               " is not plausible (remove the strays by hand, or check what "
                                               "listens there)");
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
  if (response->status == 404) return false;
  if (response->status != 200) return httpError(*response, "looking up image " + reference);
  auto image = jsonAnswer(*response, info_.endpoint, "GET /images/" + reference + "/json");
  if (!image.ok()) return image.error();
  if (!image->is_object()) {
    return makeError(ErrorCode::kProtocol, "docker: " + info_.endpoint + " answered GET /images/" + reference +
                                               "/json with JSON that is not an object");
  }
  return true;
}

Result<std::string> DockerRuntime::imageId(const std::string& reference) {
  auto valid = checkReferenceChars(reference);
  if (!valid.ok()) return valid.error();
  auto response = call("GET", "/images/" + reference + "/json", {}, timeout_);
  if (!response.ok()) return response.error();
  if (response->status == 404) return std::string();
  if (response->status != 200) return httpError(*response, "looking up image " + reference);
  auto image = jsonAnswer(*response, info_.endpoint, "GET /images/" + reference + "/json");
  if (!image.ok()) return image.error();
  return stringField(*image, "Id");
}

Status DockerRuntime::pullImage(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
                                const PullProgressFn& progress) {
  auto parsed = parseImageReference(reference);
  if (!parsed.ok()) return parsed.error();
  const std::string context = "docker: pulling " + reference;

  HttpRequest request;
  request.method = "POST";
  request.target = apiPrefix() + "/images/create?fromImage=" + urlEncode(parsed->name()) +
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
    if (trim(line).empty()) return true;
    json message = parseJson(line);
    if (!message.is_object()) return true;
    std::string error = stringField(message, "error");
    if (error.empty()) {
      if (const json* detail = objectField(message, "errorDetail")) error = stringField(*detail, "message");
    }
    if (!error.empty()) {
      if (streamError.empty()) streamError = capped(error);
      return true;
    }
    const std::string statusText = stringField(message, "status");
    if (!statusText.empty() && progress) progress(PullProgress{statusText, stringField(message, "id")});
    return true;
  });
  auto onHeaders = [&](const HttpResponse& head) {
    body.setStatus(head.status);
    return true;
  };
  auto onBody = [&](std::string_view chunk) { return body.feed(chunk); };
  auto response = client_.send(request, onBody, onHeaders);
  if (!body.failure().empty()) {
    return makeError(ErrorCode::kProtocol, context + ": " + info_.endpoint + " " + body.failure());
  }
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
  auto created = jsonAnswer(*response, info_.endpoint, "POST /containers/create");
  if (!created.ok()) return created.error();
  std::string id = stringField(*created, "Id");
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
  auto createdExec = jsonAnswer(*created, info_.endpoint, "POST /containers/" + id + "/exec");
  if (!createdExec.ok()) return createdExec.error();
  const std::string execId = stringField(*createdExec, "Id");
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
    auto inspectedExec = jsonAnswer(*inspected, info_.endpoint, "GET /exec/" + execId + "/json");
    if (!inspectedExec.ok()) return inspectedExec.error();
    const json& state = *inspectedExec;
    if (!state.is_object()) return makeError(ErrorCode::kProtocol, "docker: exec inspect is not a JSON object");
    const auto running = state.find("Running");
    if (running == state.end() || !running->is_boolean()) {
      return makeError(ErrorCode::kProtocol, "docker: exec inspect has no boolean Running field");
    }
    if (!running->get<bool>()) {
      auto code = integerField<int>(state, "ExitCode");
      if (!code) return makeError(ErrorCode::kProtocol, "docker: exec ended without an exit code");
      return *code;
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
  return std::make_unique<DockerEventWatcher>(info_.endpoint, timeout_, api_,
                                              "/events?filters=" + urlEncode(filters.dump()), std::move(onEvent));
}

// ---- Connecting and probing ---------------------------------------------------------------------

Result<std::unique_ptr<ContainerRuntime>> connectDocker(const std::string& socketPath, milliseconds timeout) {
  UnixHttpClient client(socketPath, "docker", timeout);
  auto ping = pingUnversioned(client, timeout);
  if (!ping.ok()) return ping.error();
  auto apiVersion = negotiate(socketPath, ping->apiVersion);
  if (!apiVersion.ok()) return apiVersion.error();

  // The daemon's version is for reports only. /_ping's Server header carries it, so /version (the
  // slowest call before the sensor's create: dockerd asks containerd and runc for theirs) is asked
  // only when that header does not. An answer without one (or not JSON) leaves it unknown.
  std::string daemonVersion = ping->serverVersion;
  if (daemonVersion.empty()) {
    HttpRequest request;
    request.target = "/v" + *apiVersion + "/version";
    request.totalTimeout = timeout;
    auto version = client.send(request);
    if (version.ok() && version->status == 200) {
      json parsed = parseJson(version->body);
      if (std::string reported = stringField(parsed, "Version"); !reported.empty()) daemonVersion = reported;
    }
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

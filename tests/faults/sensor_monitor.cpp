#include "faults/sensor_monitor.h"

#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>

#include "common/encoding.h"
#include "runtime/containerd/containerd_client.h"
#include "runtime/docker/http_unix.h"

namespace qcs::faults {

using namespace std::chrono_literals;
using nlohmann::json;

const char* sensorEventKindName(SensorEvent::Kind kind) {
  switch (kind) {
    case SensorEvent::Kind::kStart: return "start";
    case SensorEvent::Kind::kExit: return "exit";
    case SensorEvent::Kind::kOom: return "oom";
    case SensorEvent::Kind::kGone: return "gone";
  }
  return "?";
}

SensorMonitor::~SensorMonitor() { stopWatcher(); }

void SensorMonitor::startWatcher(std::function<void()> loop) { watcher_ = std::thread(std::move(loop)); }

void SensorMonitor::stopWatcher() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

bool SensorMonitor::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool SensorMonitor::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  changed_.wait_for(lock, d, [&] { return stopping_; });
  return !stopping_;
}

uint64_t SensorMonitor::lastSeq() const {
  std::lock_guard lock(mu_);
  return seq_;
}

std::optional<SensorEvent> SensorMonitor::next(uint64_t afterSeq, const std::function<bool(const SensorEvent&)>& match,
                                               std::chrono::milliseconds timeout) const {
  const auto deadline = SteadyClock::now() + timeout;
  std::unique_lock lock(mu_);
  uint64_t checked = afterSeq;
  for (;;) {
    for (const auto& event : events_) {
      if (event.seq <= checked) continue;
      checked = event.seq;
      if (match(event)) return event;
    }
    if (stopping_) return std::nullopt;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout) {
      for (const auto& event : events_) {
        if (event.seq > checked && match(event)) return event;
      }
      return std::nullopt;
    }
  }
}

bool SensorMonitor::endedSince(const std::string& id, uint64_t afterSeq) const {
  std::lock_guard lock(mu_);
  for (const auto& event : events_) {
    if (event.seq > afterSeq && event.id == id &&
        (event.kind == SensorEvent::Kind::kExit || event.kind == SensorEvent::Kind::kGone)) {
      return true;
    }
  }
  return false;
}

SensorMonitor::Listing SensorMonitor::running() const {
  std::lock_guard lock(mu_);
  return running_;
}

uint64_t SensorMonitor::duplicates() const {
  std::lock_guard lock(mu_);
  return duplicates_;
}

std::vector<std::string> SensorMonitor::takeDuplicateNotes() {
  std::lock_guard lock(mu_);
  return std::exchange(duplicateNotes_, {});
}

bool SensorMonitor::connected() const {
  std::lock_guard lock(mu_);
  return connected_;
}

void SensorMonitor::setConnected(bool connected) {
  std::lock_guard lock(mu_);
  connected_ = connected;
}

void SensorMonitor::appendLocked(SensorEvent event) {
  event.seq = ++seq_;
  event.at = SteadyClock::now();
  events_.push_back(std::move(event));
  changed_.notify_all();
}

void SensorMonitor::checkDuplicatesLocked() {
  const bool overlapping = running_.size() >= 2;
  if (overlapping && !overlapping_) {
    ++duplicates_;
    std::string ids;
    for (const auto& [id, instance] : running_) ids += (ids.empty() ? "" : ", ") + id.substr(0, 12);
    duplicateNotes_.push_back(std::to_string(running_.size()) + " sensor containers running at once: " + ids);
  }
  overlapping_ = overlapping;
}

void SensorMonitor::record(SensorEvent::Kind kind, const std::string& id, const std::string& instance, int exitCode) {
  std::lock_guard lock(mu_);
  SensorEvent event;
  event.kind = kind;
  event.id = id;
  event.instance = instance;
  event.exitCode = exitCode;
  switch (kind) {
    case SensorEvent::Kind::kStart: running_[id] = instance; break;
    case SensorEvent::Kind::kExit:
    case SensorEvent::Kind::kGone: running_.erase(id); break;
    case SensorEvent::Kind::kOom: break;
  }
  appendLocked(std::move(event));
  checkDuplicatesLocked();
}

void SensorMonitor::dropLocked(const std::string& id) {
  SensorEvent gone;
  gone.kind = SensorEvent::Kind::kExit;
  gone.id = id;
  gone.exitCode = -1;  // unknown: its exit was not seen on the stream
  gone.synthesized = true;
  appendLocked(std::move(gone));
  running_.erase(id);
}

bool SensorMonitor::repair(const Listing& truth, uint64_t seqBefore) {
  std::lock_guard lock(mu_);
  if (seq_ != seqBefore) return false;
  std::vector<std::string> ended;
  for (const auto& [id, instance] : running_) {
    auto now = truth.find(id);
    if (now == truth.end() || (!instance.empty() && !now->second.empty() && now->second != instance)) {
      ended.push_back(id);
    }
  }
  for (const auto& id : ended) dropLocked(id);
  for (const auto& [id, instance] : truth) running_[id] = instance;
  checkDuplicatesLocked();
  return true;
}

void SensorMonitor::resync(const Listing& truth) {
  std::lock_guard lock(mu_);
  for (auto it = running_.begin(); it != running_.end();) {
    auto now = truth.find(it->first);
    if (now == truth.end() || (!it->second.empty() && !now->second.empty() && now->second != it->second)) {
      const std::string id = it->first;
      ++it;
      dropLocked(id);
    } else {
      if (it->second.empty()) it->second = now->second;
      ++it;
    }
  }
  for (const auto& [id, instance] : truth) {
    if (running_.count(id)) continue;
    SensorEvent start;
    start.kind = SensorEvent::Kind::kStart;
    start.id = id;
    start.instance = instance;
    start.synthesized = true;
    appendLocked(std::move(start));
    running_[id] = instance;
  }
  checkDuplicatesLocked();
}

// ---- Docker -------------------------------------------------------------------------------------

namespace {

constexpr const char* kManagedFilter = R"({"type":["container"],"label":["io.qcs-agent.managed=true"]})";
constexpr const char* kManagedListFilter = R"({"label":["io.qcs-agent.managed=true"]})";

std::string unixTimestamp(std::chrono::system_clock::time_point t) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  char text[48];
  std::snprintf(text, sizeof(text), "%lld.%09lld", static_cast<long long>(ns / 1000000000),
                static_cast<long long>(ns % 1000000000));
  return text;
}

class DockerSensorMonitor final : public SensorMonitor {
 public:
  explicit DockerSensorMonitor(const std::string& socketPath) : client_(socketPath, "docker", 1000ms) {
    startWatcher([this] { loop(); });
  }
  ~DockerSensorMonitor() override { stopWatcher(); }

 private:
  Result<json> get(const std::string& target) const {
    runtime::docker::HttpRequest request;
    request.target = target;
    request.totalTimeout = 5s;
    auto response = client_.send(request);
    if (!response) return response.error();
    if (response->status != 200) {
      return makeError(ErrorCode::kNotFound, target + ": HTTP " + std::to_string(response->status));
    }
    auto doc = json::parse(response->body, nullptr, false);
    if (doc.is_discarded()) return makeError(ErrorCode::kProtocol, target + ": not JSON");
    return doc;
  }

  std::string startedAt(const std::string& id) const {
    auto doc = get("/containers/" + id + "/json");
    if (!doc || !doc->contains("State") || !(*doc)["State"].is_object()) return "";
    return (*doc)["State"].value("StartedAt", "");
  }

  Result<Listing> listRunning() const {
    auto doc = get("/containers/json?filters=" + urlEncode(kManagedListFilter));
    if (!doc) return doc.error();
    Listing out;
    for (const auto& c : *doc) {
      if (!c.is_object() || c.value("State", "") != "running") continue;
      const std::string id = c.value("Id", "");
      out[id] = startedAt(id);
    }
    return out;
  }

  void handleLine(std::string_view line) {
    auto event = json::parse(line, nullptr, false);
    if (!event.is_object() || event.value("Type", "") != "container") return;
    const long long timeNano = event.value("timeNano", 0LL);
    if (timeNano != 0 && timeNano <= lastTimeNano_) return;  // the windows overlap at their edges
    if (timeNano != 0) lastTimeNano_ = timeNano;
    const std::string action = event.value("Action", "");
    const json& actor = event.contains("Actor") && event["Actor"].is_object() ? event["Actor"] : json::object();
    const std::string id = actor.value("ID", "");
    if (id.empty()) return;
    if (action == "start") {
      record(SensorEvent::Kind::kStart, id, startedAt(id));
    } else if (action == "die") {
      int code = -1;
      if (actor.contains("Attributes") && actor["Attributes"].is_object()) {
        code = std::atoi(actor["Attributes"].value("exitCode", "-1").c_str());
      }
      record(SensorEvent::Kind::kExit, id, "", code);
    } else if (action == "oom") {
      record(SensorEvent::Kind::kOom, id);
    } else if (action == "destroy") {
      record(SensorEvent::Kind::kGone, id);
    }
  }

  void loop() {
    bool streaming = false;
    std::string since;
    uint64_t windows = 0;
    while (!stopping()) {
      if (!streaming) {
        // Events from before the listing would only replay history the listing already settled.
        since = unixTimestamp(std::chrono::system_clock::now());
        auto listing = listRunning();
        if (!listing) {
          setConnected(false);
          if (!pause(100ms)) return;
          continue;
        }
        resync(listing.value());
      }
      const std::string until = unixTimestamp(std::chrono::system_clock::now() + 1s);
      runtime::docker::HttpRequest request;
      request.target = "/events?since=" + since + "&until=" + until + "&filters=" + urlEncode(kManagedFilter);
      request.totalTimeout = 10s;
      std::string pending;
      auto response = client_.send(request, [&](std::string_view chunk) {
        pending.append(chunk);
        for (auto end = pending.find('\n'); end != std::string::npos; end = pending.find('\n')) {
          handleLine(std::string_view(pending).substr(0, end));
          pending.erase(0, end + 1);
        }
        return true;
      });
      if (response && response->status == 200) {
        if (!pending.empty()) handleLine(pending);
        since = until;
        streaming = true;
        setConnected(true);
        if (++windows % 2 == 0) {
          const uint64_t seq = lastSeq();
          if (auto listing = listRunning(); listing) repair(listing.value(), seq);
        }
      } else {
        streaming = false;
        setConnected(false);
        if (!pause(100ms)) return;
      }
    }
  }

  runtime::docker::UnixHttpClient client_;
  long long lastTimeNano_ = 0;
};

// ---- containerd ---------------------------------------------------------------------------------

class ContainerdSensorMonitor final : public SensorMonitor {
 public:
  ContainerdSensorMonitor(const std::string& socketPath, const std::string& nameSpace,
                          std::function<Result<Listing>()> listRunning)
      : client_(socketPath, nameSpace, 1000ms), listRunning_(std::move(listRunning)) {
    startWatcher([this] { loop(); });
  }
  ~ContainerdSensorMonitor() override {
    stopWatcher();
    subscription_.reset();
  }

 private:
  void onEvent(const runtime::containerd::TaskEvent& event) {
    using Kind = runtime::containerd::TaskEvent::Kind;
    switch (event.kind) {
      case Kind::kStart: record(SensorEvent::Kind::kStart, event.containerId, std::to_string(event.pid)); break;
      case Kind::kExit:
        // An exec'd process (a health probe) exiting is not the task's exit.
        if (event.processId.empty() || event.processId == event.containerId) {
          record(SensorEvent::Kind::kExit, event.containerId, "", static_cast<int>(event.exitStatus));
        }
        break;
      case Kind::kOom: record(SensorEvent::Kind::kOom, event.containerId); break;
      case Kind::kContainerDelete: record(SensorEvent::Kind::kGone, event.containerId); break;
    }
  }

  void loop() {
    auto nextRepair = SteadyClock::now() + 2s;
    while (!stopping()) {
      if (!subscription_ || !subscription_->active()) {
        setConnected(false);
        subscription_.reset();
        subscription_ = client_.subscribeTaskEvents([this](const auto& event) { onEvent(event); }, [](const Error&) {});
        // Subscribed first, listed second: a start between the two is then seen either way.
        if (subscription_ && subscription_->active()) {
          auto listing = listRunning_();
          if (listing) {
            resync(listing.value());
            setConnected(true);
          } else {
            subscription_.reset();
          }
        }
      } else if (SteadyClock::now() >= nextRepair) {
        const uint64_t seq = lastSeq();
        if (auto listing = listRunning_(); listing) repair(listing.value(), seq);
        nextRepair = SteadyClock::now() + 2s;
      }
      if (!pause(subscription_ ? 200ms : 100ms)) return;
    }
  }

  runtime::containerd::ContainerdClient client_;
  std::function<Result<Listing>()> listRunning_;
  std::unique_ptr<runtime::containerd::TaskEventSubscription> subscription_;
};

}  // namespace

std::unique_ptr<SensorMonitor> startDockerMonitor(const std::string& socketPath) {
  return std::make_unique<DockerSensorMonitor>(socketPath);
}

std::unique_ptr<SensorMonitor> startContainerdMonitor(const std::string& socketPath, const std::string& nameSpace,
                                                      std::function<Result<SensorMonitor::Listing>()> listRunning) {
  return std::make_unique<ContainerdSensorMonitor>(socketPath, nameSpace, std::move(listRunning));
}

}  // namespace qcs::faults

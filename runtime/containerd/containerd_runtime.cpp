#include "runtime/containerd/containerd_runtime.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "github.com/containerd/containerd/api/services/containers/v1/containers.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/leases/v1/leases.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/tasks/v1/tasks.grpc.pb.h"
#include "runtime/containerd/cgroup_metrics.h"
#include "runtime/containerd/containerd_client.h"
#include "runtime/containerd/grpc_support.h"
#include "runtime/containerd/image_store.h"
#include "runtime/containerd/oci_spec.h"

namespace qcs::runtime::containerd {

namespace {

namespace containers_v1 = ::containerd::services::containers::v1;
namespace tasks_v1 = ::containerd::services::tasks::v1;
namespace snapshots_v1 = ::containerd::services::snapshots::v1;
namespace images_v1 = ::containerd::services::images::v1;
namespace leases_v1 = ::containerd::services::leases::v1;
namespace task_types = ::containerd::v1::types;

using std::chrono::milliseconds;
using std::chrono::system_clock;

constexpr const char* kSpecTypeUrl = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
constexpr const char* kProcessTypeUrl = "types.containerd.io/opencontainers/runtime-spec/1/Process";
// An OOM notice this close to a task's exit makes that exit an OOM kill (the supervisor uses the
// same window for the event path).
constexpr auto kOomWindow = std::chrono::seconds(10);
// Create/start/stop/remove can take a while on a loaded node (mounting, runc, the shim).
constexpr milliseconds kSlowCallMinimum{std::chrono::seconds(60)};
// After SIGKILL, how long a task may take to be reaped.
constexpr auto kKillWait = std::chrono::seconds(10);

std::string joinPath(const std::string& root, const std::string& path) {
  if (root.empty() || root == "/") return path;
  std::string base = root.back() == '/' ? root.substr(0, root.size() - 1) : root;
  return base + (path.empty() || path.front() != '/' ? "/" : "") + path;
}

std::optional<std::string> readSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string formatRfc3339(system_clock::time_point at) {
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  std::time_t seconds = std::time_t(nanos / 1000000000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char head[32];
  std::strftime(head, sizeof head, "%Y-%m-%dT%H:%M:%S", &utc);
  char tail[16];
  std::snprintf(tail, sizeof tail, ".%09lldZ", static_cast<long long>(nanos % 1000000000));
  return std::string(head) + tail;
}

ContainerState taskState(task_types::Status status) {
  switch (status) {
    case task_types::CREATED: return ContainerState::kCreated;
    case task_types::RUNNING: return ContainerState::kRunning;
    case task_types::STOPPED: return ContainerState::kExited;
    case task_types::PAUSED:
    case task_types::PAUSING: return ContainerState::kPaused;
    default: return ContainerState::kUnknown;
  }
}

// A task whose process exists (running or paused), as opposed to created-only or ended.
bool isLive(const task_types::Process& process) {
  const auto status = process.status();
  return status == task_types::RUNNING || status == task_types::PAUSED || status == task_types::PAUSING;
}

// `labels."k"=="v",labels."k2"=="v2"`: containerd's filter syntax, conditions AND-ed.
std::string labelFilter(const std::map<std::string, std::string>& labels) {
  std::string filter;
  for (const auto& [key, value] : labels) {
    if (!filter.empty()) filter += ',';
    std::string quoted;
    for (char c : value) {
      if (c == '"' || c == '\\') quoted += '\\';
      quoted += c;
    }
    filter += "labels.\"" + key + "\"==\"" + quoted + "\"";
  }
  return filter;
}

std::string randomHex(size_t bytes) {
  static thread_local std::mt19937_64 engine{std::random_device{}()};
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const auto byte = unsigned(engine() & 0xff);
    out += kDigits[byte >> 4];
    out += kDigits[byte & 0xf];
  }
  return out;
}

// Which containers were OOM-killed recently, as containerd's /tasks/oom events said; shared by the
// runtime and its event watcher.
class OomNotices {
 public:
  void record(const std::string& containerId, system_clock::time_point at) {
    std::lock_guard lock(mutex_);
    seen_[containerId] = at;
  }
  bool near(const std::string& containerId, system_clock::time_point exitedAt) const {
    std::lock_guard lock(mutex_);
    auto it = seen_.find(containerId);
    if (it == seen_.end()) return false;
    auto gap = exitedAt > it->second ? exitedAt - it->second : it->second - exitedAt;
    return gap <= kOomWindow;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, system_clock::time_point> seen_;
};

// Keeps one Events.Subscribe stream open, re-subscribing with a capped backoff when containerd goes
// away, and turns task events into the supervisor's RuntimeEvents.
class ContainerdEventWatcher final : public EventWatcher {
 public:
  ContainerdEventWatcher(std::shared_ptr<ContainerdClient> client, std::shared_ptr<OomNotices> ooms,
                         RuntimeEventFn onEvent)
      : client_(std::move(client)), ooms_(std::move(ooms)), onEvent_(std::move(onEvent)) {
    thread_ = std::thread([this] {
      try {
        run();
      } catch (const std::exception& e) {
        // A throwing callback ends the watcher, not the process; the periodic reconcile goes on.
        if (onEvent_) {
          onEvent_(RuntimeEvent{RuntimeEvent::Kind::kStreamLost,
                                {},
                                std::nullopt,
                                std::string("containerd event watcher stopped: ") + e.what()});
        }
      }
    });
  }

  ~ContainerdEventWatcher() override {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    milliseconds delay{100};
    bool connected = false;
    while (!stopping()) {
      std::optional<Error> ended;
      auto subscription = client_->subscribeTaskEvents([this](const TaskEvent& event) { deliver(event); },
                                                       [this, &ended](const Error& error) {
                                                         std::lock_guard lock(mutex_);
                                                         ended = error;
                                                         wake_.notify_all();
                                                       });
      // containerd acknowledges nothing: a Version answered after the request went out on the same
      // connection says the subscription is in place.
      if (client_->version().ok() && subscription->active()) {
        delay = milliseconds(100);
        if (!connected) {
          connected = true;
          emit(RuntimeEvent{RuntimeEvent::Kind::kStreamConnected, {}, std::nullopt, {}});
        }
      }
      {
        std::unique_lock lock(mutex_);
        if (connected) {
          wake_.wait(lock, [&] { return stopping_ || ended.has_value(); });
        } else {
          // Not confirmed: look again after the backoff even if the stream has not ended.
          wake_.wait_for(lock, delay, [&] { return stopping_ || ended.has_value(); });
        }
      }
      std::string why = ended ? ended->message : "containerd did not answer";
      subscription.reset();
      if (stopping()) return;
      if (connected) {
        connected = false;
        emit(RuntimeEvent{RuntimeEvent::Kind::kStreamLost, {}, std::nullopt, why});
      }
      std::unique_lock lock(mutex_);
      wake_.wait_for(lock, delay, [&] { return stopping_; });
      delay = std::min(delay * 2, milliseconds(5000));
    }
  }

  void deliver(const TaskEvent& event) {
    switch (event.kind) {
      case TaskEvent::Kind::kStart:
        emit(RuntimeEvent{RuntimeEvent::Kind::kContainerStarted, event.containerId, std::nullopt, {}});
        return;
      case TaskEvent::Kind::kExit:
        // Exec'd processes (health probes) exit too; only the init process is the task.
        if (event.processId != event.containerId) return;
        emit(RuntimeEvent{RuntimeEvent::Kind::kContainerExited, event.containerId, int(event.exitStatus), {}});
        return;
      case TaskEvent::Kind::kOom:
        ooms_->record(event.containerId, event.at);
        emit(RuntimeEvent{RuntimeEvent::Kind::kContainerOom, event.containerId, std::nullopt, {}});
        return;
      case TaskEvent::Kind::kContainerDelete:
        emit(RuntimeEvent{RuntimeEvent::Kind::kContainerRemoved, event.containerId, std::nullopt, {}});
        return;
    }
  }

  void emit(const RuntimeEvent& event) {
    if (onEvent_) onEvent_(event);
  }

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  std::shared_ptr<ContainerdClient> client_;
  std::shared_ptr<OomNotices> ooms_;
  RuntimeEventFn onEvent_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

class ContainerdRuntime final : public ContainerRuntime {
 public:
  ContainerdRuntime(ContainerdRuntimeOptions options, std::shared_ptr<ContainerdClient> client,
                    const VersionInfo& version)
      : options_(std::move(options)),
        client_(std::move(client)),
        containers_(containers_v1::Containers::NewStub(client_->channel())),
        tasks_(tasks_v1::Tasks::NewStub(client_->channel())),
        snapshots_(snapshots_v1::Snapshots::NewStub(client_->channel())),
        images_(images_v1::Images::NewStub(client_->channel())),
        leases_(leases_v1::Leases::NewStub(client_->channel())),
        store_(*client_, options_.snapshotter, registryOptions(options_)),
        ooms_(std::make_shared<OomNotices>()) {
    info_.kind = "containerd";
    info_.endpoint = options_.socketPath;
    info_.version = version.version;
    info_.apiVersion = "v1";
  }

  const RuntimeInfo& info() const override { return info_; }

  Status ping() override {
    auto version = client_->version();
    if (!version) return version.error();
    return okStatus();
  }

  Result<std::vector<ContainerInfo>> listContainers(const std::map<std::string, std::string>& labels) override {
    containers_v1::ListContainersRequest request;
    if (!labels.empty()) request.add_filters(labelFilter(labels));
    containers_v1::ListContainersResponse response;
    if (auto st = unary("listing containers", timeout(),
                        [&](grpc::ClientContext& c) { return containers_->List(&c, request, &response); });
        !st) {
      return st.error();
    }
    std::vector<ContainerInfo> out;
    for (const auto& container : response.containers()) {
      auto info = describe(container);
      if (!info) {
        if (info.code() == ErrorCode::kNotFound) continue;  // removed while we looked
        return info.error();
      }
      out.push_back(std::move(info.value()));
    }
    return out;
  }

  Result<ContainerInfo> inspectContainer(const std::string& nameOrId) override {
    auto container = getContainer(nameOrId);
    if (!container) return container.error();
    return describe(container.value());
  }

  Result<bool> imagePresent(const std::string& reference) override {
    auto image = store_.find(reference);
    if (!image) {
      if (image.code() == ErrorCode::kNotFound) return false;
      return image.error();
    }
    if (image->unpacked) return true;
    // The content is here but not its snapshots (imported without unpacking, or pruned): unpacking
    // is local work, not a pull.
    if (auto st = store_.unpack(image.value()); !st) {
      if (st.code() == ErrorCode::kNotFound) return false;  // content missing too: pull it
      return st.error();
    }
    return true;
  }

  Status pullImage(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
                   const PullProgressFn& progress) override {
    return store_.pull(reference, credentials, progress);
  }

  Result<std::string> imageId(const std::string& reference) override {
    auto image = store_.find(reference);
    if (!image) {
      if (image.code() == ErrorCode::kNotFound) return std::string();
      return image.error();
    }
    return image->targetDigest;
  }

  Result<std::string> createContainer(const ContainerSpec& spec) override {
    const std::string& id = spec.name;
    if (auto existing = getContainer(id); existing) {
      return makeError(ErrorCode::kAlreadyExists,
                       "containerd: a container " + id + " already exists in namespace " + options_.nameSpace);
    } else if (existing.code() != ErrorCode::kNotFound) {
      return existing.error();
    }
    auto image = store_.find(spec.image);
    if (!image) {
      return withContext(image.error(), "containerd: the image " + spec.image + " is not in namespace " +
                                            options_.nameSpace + " (pull it first)");
    }
    if (!image->unpacked) {
      if (auto st = store_.unpack(image.value()); !st) return st.error();
    }
    auto configBlob = store_.readBlob(image->configDigest);
    if (!configBlob) return withContext(configBlob.error(), "containerd: reading the config of " + spec.image);
    auto imageConfig = parseImageConfig(configBlob.value());
    if (!imageConfig) return withContext(imageConfig.error(), "containerd: the config of " + spec.image);
    OciSpecOptions specOptions;
    specOptions.containerId = id;
    specOptions.nameSpace = options_.nameSpace;
    // No rlimits: the sensor inherits containerd's, as a Docker container inherits dockerd's. A
    // fixed limit above the daemon's hard limit makes runc fail without CAP_SYS_RESOURCE.
    specOptions.openFilesLimit = 0;
    auto ociSpec = buildOciSpec(spec, imageConfig.value(), specOptions);
    if (!ociSpec) return ociSpec.error();
    if (auto st = ensureSensorLogDir(joinPath(options_.hostRoot, options_.logDir)); !st) return st.error();

    auto lease = createLease("create");
    if (!lease) return lease.error();
    struct LeaseGuard {
      ContainerdRuntime* self;
      std::string id;
      ~LeaseGuard() { (void)self->deleteLease(id); }
    } leaseGuard{this, lease.value()};
    if (auto st = prepareSnapshot(id, image->chainId, lease.value()); !st) return st.error();

    containers_v1::CreateContainerRequest request;
    auto* container = request.mutable_container();
    container->set_id(id);
    for (const auto& [key, value] : spec.labels) (*container->mutable_labels())[key] = value;
    container->set_image(image->name);
    container->mutable_runtime()->set_name(options_.runtimeName);
    container->mutable_spec()->set_type_url(kSpecTypeUrl);
    container->mutable_spec()->set_value(ociSpec.value());
    container->set_snapshotter(options_.snapshotter);
    container->set_snapshot_key(id);
    containers_v1::CreateContainerResponse response;
    auto created = unary(
        "creating container " + id, slowTimeout(),
        [&](grpc::ClientContext& c) { return containers_->Create(&c, request, &response); }, lease.value());
    if (!created) {
      (void)removeSnapshot(options_.snapshotter, id);
      return created.error();
    }
    return id;
  }

  Status startContainer(const std::string& id) override {
    auto container = getContainer(id);
    if (!container) return container.error();
    auto task = getTask(id);
    if (!task) return task.error();
    if (task.value()) {
      if (isLive(*task.value())) {
        return okStatus();  // as Docker: starting a running container is not an error
      }
      // An ended (or never started) task must go before a new one can be created.
      if (auto st = deleteTask(id); !st && st.code() != ErrorCode::kNotFound) return st;
    }

    snapshots_v1::MountsRequest mountsRequest;
    mountsRequest.set_snapshotter(container->snapshotter());
    mountsRequest.set_key(container->snapshot_key());
    snapshots_v1::MountsResponse mounts;
    auto readMounts = [&] {
      return unary("reading the rootfs mounts of " + id, timeout(),
                   [&](grpc::ClientContext& c) { return snapshots_->Mounts(&c, mountsRequest, &mounts); });
    };
    if (auto st = readMounts(); !st) {
      if (st.code() != ErrorCode::kNotFound) return st;
      // The container is there but its rootfs snapshot is not (removed behind the agent's back):
      // prepare it again from the image. Never kNotFound: that would mean the container is gone.
      if (auto healed = restoreSnapshot(container.value()); !healed) {
        return makeError(ErrorCode::kConflict, "containerd: the rootfs snapshot of " + id +
                                                   " is missing and could not be prepared again: " + healed.message());
      }
      if (auto again = readMounts(); !again) return makeError(ErrorCode::kConflict, again.message());
    }

    const std::string logFile = agentLogPath(id);
    if (auto st = ensureSensorLogDir(joinPath(options_.hostRoot, options_.logDir)); !st) return st;
    // A restart is the natural moment to cap the log of the run before.
    (void)capSensorLog(logFile, options_.logLimits);

    tasks_v1::CreateTaskRequest create;
    create.set_container_id(id);
    for (const auto& mount : mounts.mounts()) *create.add_rootfs() = mount;
    const std::string uri = taskLogUri(options_.logDir, id);
    create.set_stdout(uri);
    create.set_stderr(uri);
    create.set_terminal(false);
    tasks_v1::CreateTaskResponse created;
    if (auto st = unary("creating the task of " + id, slowTimeout(),
                        [&](grpc::ClientContext& c) { return tasks_->Create(&c, create, &created); });
        !st) {
      return st;
    }
    tasks_v1::StartRequest start;
    start.set_container_id(id);
    tasks_v1::StartResponse started;
    if (auto st = unary("starting the task of " + id, slowTimeout(),
                        [&](grpc::ClientContext& c) { return tasks_->Start(&c, start, &started); });
        !st) {
      (void)deleteTask(id);
      return st;
    }
    rememberStart(id, started.pid(), system_clock::now());
    return okStatus();
  }

  Status stopContainer(const std::string& id, std::chrono::seconds grace) override {
    auto container = getContainer(id);
    if (!container) return container.error();
    auto task = getTask(id);
    if (!task) return task.error();
    if (!task.value() || task.value()->status() != task_types::RUNNING) return okStatus();
    if (auto st = kill(id, "", SIGTERM, false); !st) {
      if (st.code() == ErrorCode::kNotFound) return okStatus();
      return st;
    }
    auto waited = waitForExit(id, "", std::chrono::duration_cast<milliseconds>(grace));
    if (waited) return okStatus();
    if (waited.code() != ErrorCode::kTimeout) return waited.error();
    if (auto st = kill(id, "", SIGKILL, true); !st && st.code() != ErrorCode::kNotFound) return st;
    auto killed = waitForExit(id, "", kKillWait);
    if (!killed) return withContext(killed.error(), "containerd: the task of " + id + " did not end after SIGKILL");
    return okStatus();
  }

  Status removeContainer(const std::string& id, bool force) override {
    auto container = getContainer(id);
    if (!container) return container.error();
    auto task = getTask(id);
    if (!task) return task.error();
    if (task.value()) {
      if (isLive(*task.value())) {
        if (!force) {
          return makeError(ErrorCode::kConflict,
                           "containerd: container " + id + " is running; stop it first or remove it with force");
        }
        if (auto st = kill(id, "", SIGKILL, true); !st && st.code() != ErrorCode::kNotFound) return st;
        if (auto waited = waitForExit(id, "", kKillWait); !waited && waited.code() != ErrorCode::kNotFound) {
          return withContext(waited.error(), "containerd: the task of " + id + " did not end after SIGKILL");
        }
      }
      if (auto st = deleteTask(id); !st && st.code() != ErrorCode::kNotFound) return st;
    }
    containers_v1::DeleteContainerRequest request;
    request.set_id(id);
    google::protobuf::Empty empty;
    if (auto st = unary("deleting container " + id, slowTimeout(),
                        [&](grpc::ClientContext& c) { return containers_->Delete(&c, request, &empty); });
        !st) {
      return st;
    }
    forgetStart(id);
    if (!container->snapshot_key().empty()) {
      if (auto st = removeSnapshot(container->snapshotter(), container->snapshot_key());
          !st && st.code() != ErrorCode::kNotFound) {
        return withContext(st.error(), "containerd: container " + id + " was deleted but its snapshot was not");
      }
    }
    return okStatus();
  }

  Result<std::vector<std::string>> logTail(const std::string& id, int lines) override {
    return tailSensorLog(agentLogPath(id), lines);
  }

  Result<ContainerStats> containerStats(const std::string& id) override {
    tasks_v1::MetricsRequest request;
    request.add_filters("id==" + id);
    tasks_v1::MetricsResponse response;
    if (auto st = unary("reading the metrics of " + id, timeout(),
                        [&](grpc::ClientContext& c) { return tasks_->Metrics(&c, request, &response); });
        !st) {
      return st.error();
    }
    // Sampled periodically: a good moment to keep the log within its cap too.
    (void)capSensorLog(agentLogPath(id), options_.logLimits);
    for (const auto& metric : response.metrics()) {
      if (metric.id() == id) return statsFromMetric(metric.data());
    }
    return makeError(ErrorCode::kNotFound, "containerd: container " + id + " has no running task");
  }

  Result<int> execInContainer(const std::string& id, const std::vector<std::string>& command,
                              milliseconds probeTimeout) override {
    auto container = getContainer(id);
    if (!container) return container.error();
    auto task = getTask(id);
    if (!task) return task.error();
    if (!task.value() || task.value()->status() != task_types::RUNNING) {
      return makeError(ErrorCode::kConflict, "containerd: container " + id + " is not running");
    }
    // The probe runs as the container's own process does (user, env, capabilities, cwd).
    auto spec = nlohmann::json::parse(container->spec().value(), nullptr, false);
    if (!spec.is_object() || !spec.contains("process") || !spec["process"].is_object()) {
      return makeError(ErrorCode::kProtocol, "containerd: container " + id + " has no OCI process spec");
    }
    nlohmann::json process = spec["process"];
    process["args"] = command;
    process["terminal"] = false;
    const std::string execId = "qcs-probe-" + randomHex(6);

    tasks_v1::ExecProcessRequest exec;
    exec.set_container_id(id);
    exec.set_exec_id(execId);
    exec.set_terminal(false);
    exec.mutable_spec()->set_type_url(kProcessTypeUrl);
    exec.mutable_spec()->set_value(process.dump());
    google::protobuf::Empty empty;
    if (auto st = unary("starting a probe in " + id, timeout(),
                        [&](grpc::ClientContext& c) { return tasks_->Exec(&c, exec, &empty); });
        !st) {
      return st.error();
    }
    tasks_v1::StartRequest start;
    start.set_container_id(id);
    start.set_exec_id(execId);
    tasks_v1::StartResponse started;
    auto begun = unary("starting a probe in " + id, timeout(),
                       [&](grpc::ClientContext& c) { return tasks_->Start(&c, start, &started); });
    Result<int> outcome = begun ? waitForExit(id, execId, probeTimeout) : Result<int>(begun.error());
    if (!outcome && outcome.code() == ErrorCode::kTimeout) {
      // Unlike Docker, containerd can end a probe that hangs: it must not linger in the sensor.
      (void)kill(id, execId, SIGKILL, false);
      (void)waitForExit(id, execId, kKillWait);
      outcome = makeError(ErrorCode::kTimeout, "the probe did not finish within " +
                                                   std::to_string(probeTimeout.count()) + "ms (it was killed)");
    }
    tasks_v1::DeleteProcessRequest remove;
    remove.set_container_id(id);
    remove.set_exec_id(execId);
    tasks_v1::DeleteResponse removed;
    (void)unary("removing the probe process in " + id, timeout(),
                [&](grpc::ClientContext& c) { return tasks_->DeleteProcess(&c, remove, &removed); });
    return outcome;
  }

  Result<std::optional<system_clock::time_point>> lastOutputTime(const std::string& id,
                                                                 system_clock::time_point since) override {
    return sensorLogLastWrite(agentLogPath(id), since);
  }

  std::unique_ptr<EventWatcher> watchEvents(const std::map<std::string, std::string>& labels,
                                            RuntimeEventFn onEvent) override {
    // Events carry no labels: every task event of the namespace reaches the supervisor, which
    // reconciles (the namespace is the agent's own).
    (void)labels;
    return std::make_unique<ContainerdEventWatcher>(client_, ooms_, std::move(onEvent));
  }

  // The agent leases (kAgentLeasePrefix..., image_store.h) an earlier agent left when it was killed
  // between creating one and deleting it: mid-pull, mid-create, or after the image was stored (the
  // next agent finds the image and pulls nothing, so no pull of its own would sweep). What they held
  // is then collected now rather than at their expiry. The cut is this object's creation: every
  // lease this runtime and its image store make is younger, and an older one was made by an earlier
  // process which, once the caller holds the instance lock, is no longer alive. The lock is per
  // sensor name, so agents of two sensors sharing one namespace would sweep each other's running
  // leases: each sensor gets its own namespace.
  LeftoverCleanup removeLeftovers() override {
    LeftoverCleanup sweep;
    leases_v1::ListRequest request;
    request.add_filters("id~=^" + std::string(kAgentLeasePrefix));
    leases_v1::ListResponse response;
    if (auto st = unary("listing leases", timeout(),
                        [&](grpc::ClientContext& c) { return leases_->List(&c, request, &response); });
        !st) {
      sweep.failures.push_back(st.error());
      return sweep;
    }
    for (const auto& lease : response.leases()) {
      // Checked again: the filter is a regular expression containerd applies, the prefix is our rule.
      if (lease.id().rfind(kAgentLeasePrefix, 0) != 0 || !lease.has_created_at()) continue;
      if (detail::toTimePoint(lease.created_at()) >= connectedAt_) continue;
      if (auto st = deleteLease(lease.id()); st) {
        sweep.removed.push_back("lease " + lease.id());
      } else if (st.code() != ErrorCode::kNotFound) {
        sweep.failures.push_back(st.error());
      }
    }
    return sweep;
  }

 private:
  static registry::RegistryClientOptions registryOptions(const ContainerdRuntimeOptions& options) {
    registry::RegistryClientOptions out;
    out.caBundlePath = options.registryCaBundle;
    return out;
  }

  milliseconds timeout() const { return options_.timeout; }
  milliseconds slowTimeout() const { return std::max(options_.timeout, kSlowCallMinimum); }

  template <typename Call>
  Status unary(const std::string& what, milliseconds deadline, Call&& call, const std::string& lease = {}) {
    grpc::ClientContext context;
    detail::prepareContext(context, options_.nameSpace, deadline);
    if (!lease.empty()) context.AddMetadata("containerd-lease", lease);
    const grpc::Status status = call(context);
    if (!status.ok()) return detail::mapStatus(status, what, options_.socketPath, deadline);
    return okStatus();
  }

  std::string agentLogPath(const std::string& id) const {
    return joinPath(options_.hostRoot, options_.logDir + "/" + id + ".log");
  }

  Result<containers_v1::Container> getContainer(const std::string& id) {
    containers_v1::GetContainerRequest request;
    request.set_id(id);
    containers_v1::GetContainerResponse response;
    if (auto st = unary("looking up container " + id, timeout(),
                        [&](grpc::ClientContext& c) { return containers_->Get(&c, request, &response); });
        !st) {
      return st.error();
    }
    return response.container();
  }

  // The container's task, or nullopt when it has none.
  Result<std::optional<task_types::Process>> getTask(const std::string& id) {
    tasks_v1::GetRequest request;
    request.set_container_id(id);
    tasks_v1::GetResponse response;
    auto st = unary("looking up the task of " + id, timeout(),
                    [&](grpc::ClientContext& c) { return tasks_->Get(&c, request, &response); });
    if (!st) {
      if (st.code() == ErrorCode::kNotFound) return std::optional<task_types::Process>();
      return st.error();
    }
    if (response.process().status() == task_types::UNKNOWN) {
      // containerd says UNKNOWN when the task's shim did not answer its state call in time (a
      // loaded node, a containerd restart in progress): nothing to act on yet, least of all a
      // restart of a sensor that is probably running.
      return makeError(ErrorCode::kUnavailable, "containerd: the state of the task of " + id +
                                                    " is unknown (its shim did not answer); retrying");
    }
    return std::optional<task_types::Process>(response.process());
  }

  Status deleteTask(const std::string& id) {
    tasks_v1::DeleteTaskRequest request;
    request.set_container_id(id);
    tasks_v1::DeleteResponse response;
    return unary("deleting the task of " + id, slowTimeout(),
                 [&](grpc::ClientContext& c) { return tasks_->Delete(&c, request, &response); });
  }

  Status kill(const std::string& id, const std::string& execId, int signal, bool all) {
    tasks_v1::KillRequest request;
    request.set_container_id(id);
    request.set_exec_id(execId);
    request.set_signal(uint32_t(signal));
    request.set_all(all);
    google::protobuf::Empty empty;
    return unary("signalling " + (execId.empty() ? id : execId + " in " + id), timeout(),
                 [&](grpc::ClientContext& c) { return tasks_->Kill(&c, request, &empty); });
  }

  // The exit status once the process ends; kTimeout when it has not within `limit`.
  Result<int> waitForExit(const std::string& id, const std::string& execId, milliseconds limit) {
    tasks_v1::WaitRequest request;
    request.set_container_id(id);
    request.set_exec_id(execId);
    tasks_v1::WaitResponse response;
    auto st = unary("waiting for " + (execId.empty() ? id : execId + " in " + id), limit,
                    [&](grpc::ClientContext& c) { return tasks_->Wait(&c, request, &response); });
    if (!st) return st.error();
    return int(response.exit_status());
  }

  Status prepareSnapshot(const std::string& key, const std::string& parent, const std::string& lease = {}) {
    snapshots_v1::PrepareSnapshotRequest request;
    request.set_snapshotter(options_.snapshotter);
    request.set_key(key);
    request.set_parent(parent);
    snapshots_v1::PrepareSnapshotResponse response;
    auto prepare = [&] {
      return unary(
          "preparing the rootfs snapshot " + key, slowTimeout(),
          [&](grpc::ClientContext& c) { return snapshots_->Prepare(&c, request, &response); }, lease);
    };
    auto st = prepare();
    if (st || st.code() != ErrorCode::kAlreadyExists) return st;
    // Left behind by a create that never finished (no container holds it: we checked): start over.
    if (auto removed = removeSnapshot(options_.snapshotter, key); !removed && removed.code() != ErrorCode::kNotFound) {
      return withContext(removed.error(), "containerd: a leftover snapshot " + key + " could not be removed");
    }
    return prepare();
  }

  Status restoreSnapshot(const containers_v1::Container& container) {
    auto image = store_.find(container.image());
    if (!image) return image.error();
    if (!image->unpacked) {
      if (auto st = store_.unpack(image.value()); !st) return st;
    }
    // The container record references the key, so the new snapshot is safe from GC at once.
    snapshots_v1::PrepareSnapshotRequest request;
    request.set_snapshotter(container.snapshotter());
    request.set_key(container.snapshot_key());
    request.set_parent(image->chainId);
    snapshots_v1::PrepareSnapshotResponse response;
    return unary("preparing the rootfs snapshot " + container.snapshot_key(), slowTimeout(),
                 [&](grpc::ClientContext& c) { return snapshots_->Prepare(&c, request, &response); });
  }

  Status removeSnapshot(const std::string& snapshotter, const std::string& key) {
    snapshots_v1::RemoveSnapshotRequest request;
    request.set_snapshotter(snapshotter);
    request.set_key(key);
    google::protobuf::Empty empty;
    return unary("removing snapshot " + key, slowTimeout(),
                 [&](grpc::ClientContext& c) { return snapshots_->Remove(&c, request, &empty); });
  }

  // A short-lived lease: containerd's garbage collector leaves alone what is created under it (a
  // prepared snapshot that no container record references yet). If the agent dies before deleting
  // it, the next agent's sweep at connect deletes it, else it expires by itself.
  Result<std::string> createLease(const std::string& purpose) {
    leases_v1::CreateRequest request;
    request.set_id(std::string(kAgentLeasePrefix) + purpose + "-" + randomHex(6));
    (*request.mutable_labels())["containerd.io/gc.expire"] =
        formatRfc3339(system_clock::now() + std::chrono::hours(1)).substr(0, 19) + "Z";
    leases_v1::CreateResponse response;
    if (auto st = unary("creating a lease", timeout(),
                        [&](grpc::ClientContext& c) { return leases_->Create(&c, request, &response); });
        !st) {
      return st.error();
    }
    return response.lease().id();
  }
  Status deleteLease(const std::string& id) {
    leases_v1::DeleteRequest request;
    request.set_id(id);
    google::protobuf::Empty empty;
    return unary("deleting lease " + id, timeout(),
                 [&](grpc::ClientContext& c) { return leases_->Delete(&c, request, &empty); });
  }

  Result<ContainerInfo> describe(const containers_v1::Container& container) {
    ContainerInfo info;
    info.id = container.id();
    info.name = container.id();
    info.image = container.image();
    for (const auto& [key, value] : container.labels()) info.labels[key] = value;
    info.imageId = imageDigest(container.image());
    auto task = getTask(container.id());
    if (!task) return task.error();
    if (!task.value()) {
      info.state = ContainerState::kCreated;
      return info;
    }
    const task_types::Process& process = *task.value();
    info.state = taskState(process.status());
    if (info.state == ContainerState::kRunning || info.state == ContainerState::kPaused) {
      info.startedAtTime = startTimeOf(container.id(), process.pid());
    } else if (info.state == ContainerState::kExited) {
      info.exitCode = int(process.exit_status());
      info.startedAtTime = knownStart(container.id(), process.pid());
      if (process.has_exited_at()) {
        const auto exitedAt = detail::toTimePoint(process.exited_at());
        info.finishedAt = formatRfc3339(exitedAt);
        info.oomKilled = ooms_->near(container.id(), exitedAt);
      }
      // The kernel's own count, while the ended task still holds its cgroup: an OOM in the first
      // milliseconds sends no /tasks/oom event on cgroup v1.
      info.oomKilled = info.oomKilled || cgroupOomKilled(container.id());
    }
    if (info.startedAtTime) info.startedAt = formatRfc3339(*info.startedAtTime);
    return info;
  }

  std::string imageDigest(const std::string& name) {
    if (name.empty()) return {};
    images_v1::GetImageRequest request;
    request.set_name(name);
    images_v1::GetImageResponse response;
    auto st = unary("looking up image " + name, timeout(),
                    [&](grpc::ClientContext& c) { return images_->Get(&c, request, &response); });
    if (!st) return {};
    return response.image().target().digest();
  }

  bool cgroupOomKilled(const std::string& id) const {
    const std::string group = "/" + options_.nameSpace + "/" + id;
    std::vector<std::string> candidates;
    for (const std::string& root : {options_.hostRoot, std::string("/")}) {
      candidates.push_back(joinPath(root, "/sys/fs/cgroup/memory" + group + "/memory.oom_control"));  // v1
      candidates.push_back(joinPath(root, "/sys/fs/cgroup" + group + "/memory.events"));              // v2
      if (root == "/") break;
    }
    for (const auto& path : candidates) {
      if (auto text = readSmallFile(path)) return cgroupReportsOomKill(*text);
    }
    return false;
  }

  // When the task's process started: from /proc when the agent shares the host's PID namespace
  // (verified by the process's cgroup naming the container), else when this agent started it.
  std::optional<system_clock::time_point> startTimeOf(const std::string& id, uint32_t pid) {
    if (auto known = knownStart(id, pid)) return known;
    const std::string proc = joinPath(options_.hostRoot, "/proc");
    auto cgroup = readSmallFile(proc + "/" + std::to_string(pid) + "/cgroup");
    auto stat = readSmallFile(proc + "/" + std::to_string(pid) + "/stat");
    auto procStat = readSmallFile(proc + "/stat");
    if (!cgroup || !stat || !procStat) return std::nullopt;
    if (cgroup->find("/" + options_.nameSpace + "/" + id) == std::string::npos) return std::nullopt;
    auto btime = procStat->find("\nbtime ");
    if (btime == std::string::npos) return std::nullopt;
    const int64_t bootTime = std::strtoll(procStat->c_str() + btime + 7, nullptr, 10);
    auto started = processStartTime(*stat, bootTime, ::sysconf(_SC_CLK_TCK));
    if (started) rememberStart(id, pid, *started);
    return started;
  }

  std::optional<system_clock::time_point> knownStart(const std::string& id, uint32_t pid) {
    std::lock_guard lock(startsMutex_);
    auto it = starts_.find(id);
    if (it == starts_.end() || it->second.first != pid) return std::nullopt;
    return it->second.second;
  }
  void rememberStart(const std::string& id, uint32_t pid, system_clock::time_point at) {
    std::lock_guard lock(startsMutex_);
    starts_[id] = {pid, at};
  }
  void forgetStart(const std::string& id) {
    std::lock_guard lock(startsMutex_);
    starts_.erase(id);
  }

  ContainerdRuntimeOptions options_;
  std::shared_ptr<ContainerdClient> client_;
  RuntimeInfo info_;
  std::unique_ptr<containers_v1::Containers::Stub> containers_;
  std::unique_ptr<tasks_v1::Tasks::Stub> tasks_;
  std::unique_ptr<snapshots_v1::Snapshots::Stub> snapshots_;
  std::unique_ptr<images_v1::Images::Stub> images_;
  std::unique_ptr<leases_v1::Leases::Stub> leases_;
  const system_clock::time_point connectedAt_ = system_clock::now();
  ImageStore store_;
  std::shared_ptr<OomNotices> ooms_;
  std::mutex startsMutex_;
  std::map<std::string, std::pair<uint32_t, system_clock::time_point>> starts_;  // id -> (pid, start)
};

}  // namespace

std::string taskLogUri(const std::string& logDir, const std::string& containerId) {
  std::string dir = logDir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return "file://" + dir + "/" + containerId + ".log";
}

bool cgroupReportsOomKill(std::string_view text) {
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    constexpr std::string_view kKey = "oom_kill ";
    if (line.substr(0, kKey.size()) == kKey) {
      std::string_view count = line.substr(kKey.size());
      return !count.empty() && count.find_first_not_of('0') != std::string_view::npos &&
             count.find_first_not_of("0123456789") == std::string_view::npos;
    }
    at = end + 1;
  }
  return false;
}

std::optional<system_clock::time_point> processStartTime(std::string_view statText, int64_t bootTime,
                                                         long ticksPerSecond) {
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so fields count from the last ')'.
  const auto close = statText.rfind(')');
  if (close == std::string_view::npos || ticksPerSecond <= 0 || bootTime <= 0) return std::nullopt;
  std::istringstream fields{std::string(statText.substr(close + 1))};
  std::string field;
  // Field 3 (state) is the first after ')'; starttime is field 22.
  for (int index = 3; index <= 22; ++index) {
    if (!(fields >> field)) return std::nullopt;
  }
  char* end = nullptr;
  errno = 0;
  const unsigned long long ticks = std::strtoull(field.c_str(), &end, 10);
  if (errno != 0 || end == field.c_str() || *end != '\0') return std::nullopt;
  const auto sinceBoot = std::chrono::duration_cast<system_clock::duration>(
      std::chrono::duration<double>(double(ticks) / double(ticksPerSecond)));
  return system_clock::time_point(std::chrono::seconds(bootTime)) + sinceBoot;
}

Result<std::unique_ptr<ContainerRuntime>> connectContainerd(const ContainerdRuntimeOptions& options) {
  auto client = std::make_shared<ContainerdClient>(options.socketPath, options.nameSpace, options.timeout);
  auto version = client->version();
  if (!version) return version.error();
  return std::unique_ptr<ContainerRuntime>(std::make_unique<ContainerdRuntime>(options, client, version.value()));
}

}  // namespace qcs::runtime::containerd

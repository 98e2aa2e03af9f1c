// The containerd side of the fault suite: a private containerd, a namespace of the suite's own, and
// the agent's sensor log directory on a 2 MiB tmpfs (for the disk-full fault). Tasks are read over
// gRPC (cheap enough to poll); the rest through `ctr`.
#include <grpcpp/grpcpp.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>

#include "common/encoding.h"
#include "faults/runtime_target.h"
#include "github.com/containerd/containerd/api/services/tasks/v1/tasks.grpc.pb.h"
#include "runtime/containerd/containerd_client.h"

namespace qcs::faults {

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
namespace tasks_v1 = ::containerd::services::tasks::v1;
namespace task_types = ::containerd::v1::types;

constexpr const char* kLogDirSize = "size=2m";
constexpr const char* kSnapshotter = "overlayfs";

std::string quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<std::string> fields(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string field; in >> field;) out.push_back(field);
  return out;
}

int64_t mtimeNs(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

struct TaskRow {
  uint32_t pid = 0;
  bool running = false;
};

class ContainerdTarget final : public RuntimeTarget {
 public:
  ContainerdTarget(std::unique_ptr<testing::Containerd> containerd, TargetOptions options, std::string nameSpace,
                   std::string logDir, std::string imageRef)
      : containerd_(std::move(containerd)),
        options_(std::move(options)),
        ns_(std::move(nameSpace)),
        logDir_(std::move(logDir)),
        imageRef_(std::move(imageRef)),
        client_(containerd_->socketPath(), ns_, 3000ms),
        tasks_(tasks_v1::Tasks::NewStub(client_.channel())) {
    monitor_ = startContainerdMonitor(containerd_->socketPath(), ns_, [this]() -> Result<SensorMonitor::Listing> {
      auto tasks = listTasks();
      if (!tasks) return tasks.error();
      SensorMonitor::Listing running;
      for (const auto& [id, row] : tasks.value()) {
        if (row.running) running[id] = std::to_string(row.pid);
      }
      return running;
    });
  }
  ~ContainerdTarget() override {
    monitor_.reset();
    containerd_.reset();
    // runc leaves /<namespace> behind in every cgroup hierarchy when the sensor's cgroup goes.
    testing::removeNamespaceCgroups({{ns_, {options_.sensorName}}});
  }

  std::string name() const override { return "containerd"; }

  std::string daemonVersion() override {
    auto v = client_.version();
    return v ? "containerd " + v->version : "unknown (" + v.message() + ")";
  }

  std::string agentRuntimeYaml() const override {
    return "runtime:\n  kind: containerd\n  endpoint: " + containerd_->socketPath() +
           "\n  containerd_namespace: " + ns_ + "\n  containerd_log_dir: " + logDir_ +
           "\n  containerd_log_max_size: 256Ki\n";
  }
  std::string imageRef() const override { return imageRef_; }
  SensorMonitor& monitor() override { return *monitor_; }

  std::optional<SensorInstance> sensor() override {
    auto ids = client_.listContainerIds();
    if (!ids) return std::nullopt;
    if (std::find(ids->begin(), ids->end(), options_.sensorName) == ids->end()) return std::nullopt;
    SensorInstance s;
    s.id = options_.sensorName;
    auto tasks = listTasks();
    if (tasks) {
      auto it = tasks->find(options_.sensorName);
      if (it != tasks->end()) {
        s.running = it->second.running;
        s.instance = s.id + "@" + std::to_string(it->second.pid);
      }
    }
    return s;
  }

  Status killSensor() override {
    auto killed = ctr("tasks kill -s SIGKILL " + quote(options_.sensorName));
    if (!killed) return killed.error();
    return okStatus();
  }

  Status removeSensor() override {
    auto task = ctr("tasks delete -f " + quote(options_.sensorName));
    if (!task && task.message().find("not found") == std::string::npos) return task.error();
    auto container = ctr("containers delete " + quote(options_.sensorName));
    if (!container && container.message().find("not found") == std::string::npos) return container.error();
    return okStatus();
  }

  Status removeImage() override {
    // --sync waits for containerd's garbage collector: the content and snapshots go with the image.
    auto removed = ctr("images rm --sync " + quote(imageRef_));
    if (!removed && removed.message().find("not found") == std::string::npos) return removed.error();
    return okStatus();
  }

  Result<bool> imagePresent() override {
    auto images = ctr("images ls -q");
    if (!images) return images.error();
    for (const auto& line : testing::nonEmptyLines(*images)) {
      if (line == imageRef_) return true;
    }
    return false;
  }

  void stopDaemon() override { containerd_->stop(); }
  bool startDaemon() override { return containerd_->restart(); }
  bool daemonRunning() const override { return containerd_->running(); }
  std::string socketPath() const override { return containerd_->socketPath(); }
  bool sensorSurvivesDaemonStop() const override { return true; }

  std::vector<std::string> leaks() override {
    std::vector<std::string> out;
    auto ids = client_.listContainerIds();
    if (!ids) return {"cannot list containers: " + ids.message()};
    for (const auto& id : *ids) {
      if (id != options_.sensorName) out.push_back("container " + id + " besides the sensor");
    }
    auto tasks = listTasks();
    if (!tasks) return {"cannot list tasks: " + tasks.message()};
    for (const auto& [id, row] : *tasks) {
      if (id != options_.sensorName) out.push_back("task " + id + " (pid " + std::to_string(row.pid) + ")");
    }
    // ID, CREATED AT, LABELS (containerd.io/gc.expire says when containerd would collect it itself).
    if (auto leases = ctr("leases ls"); leases) {
      auto rows = testing::nonEmptyLines(*leases);
      for (size_t i = 1; i < rows.size(); ++i) out.push_back("lease " + rows[i]);
    } else {
      out.push_back("cannot list leases: " + leases.message());
    }
    if (auto active = ctr("content active"); active) {
      auto rows = testing::nonEmptyLines(*active);
      for (size_t i = 1; i < rows.size(); ++i) out.push_back("content being written: " + rows[i]);
    } else {
      out.push_back("cannot list content being written: " + active.message());
    }
    if (auto images = ctr("images ls -q"); images) {
      for (const auto& image : testing::nonEmptyLines(*images)) {
        if (image != imageRef_) out.push_back("image " + image);
      }
    }
    auto snapshots = ctr(std::string("snapshots --snapshotter ") + kSnapshotter + " ls");
    if (!snapshots) {
      out.push_back("cannot list snapshots: " + snapshots.message());
      return out;
    }
    // KEY PARENT KIND, the parent column empty for a base layer.
    std::map<std::string, std::pair<std::string, std::string>> byKey;  // key -> (parent, kind)
    auto rows = testing::nonEmptyLines(*snapshots);
    for (size_t i = 1; i < rows.size(); ++i) {
      auto f = fields(rows[i]);
      if (f.size() == 3) byKey[f[0]] = {f[1], f[2]};
      if (f.size() == 2) byKey[f[0]] = {"", f[1]};
    }
    std::set<std::string> sensorChain;
    for (std::string key = options_.sensorName; byKey.count(key) && !sensorChain.count(key); key = byKey[key].first) {
      sensorChain.insert(key);
    }
    for (const auto& [key, entry] : byKey) {
      if (sensorChain.count(key)) continue;
      out.push_back(entry.second + " snapshot " + key + " outside the sensor's rootfs chain");
    }
    return out;
  }

  std::vector<std::pair<std::string, std::string>> secretSurfaces() override {
    std::vector<std::pair<std::string, std::string>> out;
    auto ids = client_.listContainerIds();
    if (ids) {
      for (const auto& id : *ids) {
        auto info = ctr("containers info " + quote(id));
        if (!info) continue;
        auto doc = json::parse(*info, nullptr, false);
        if (!doc.is_object()) {
          out.emplace_back("ctr containers info " + id + " (unparsable)", *info);
          continue;
        }
        if (doc.contains("Spec") && doc["Spec"].contains("process") && doc["Spec"]["process"].is_object()) {
          doc["Spec"]["process"].erase("env");
        }
        out.emplace_back("ctr containers info " + id + " (all but Spec.process.env)", doc.dump());
      }
    }
    const std::string log = sensorOutputPath();
    out.emplace_back("sensor output " + log, testing::readFile(log));
    out.emplace_back("sensor output " + log + ".1", testing::readFile(log + ".1"));
    return out;
  }

  std::string sensorEnvironment() override {
    auto info = ctr("containers info " + quote(options_.sensorName));
    if (!info) return "";
    auto doc = json::parse(*info, nullptr, false);
    if (!doc.is_object() || !doc.contains("Spec")) return "";
    return doc["Spec"]["process"].value("env", json::array()).dump();
  }

  std::string smallFilesystem() const override { return logDir_; }
  bool startNeedsSpaceThere() const override { return false; }
  bool sensorOutputIsPlainFile() const override { return true; }
  int64_t sensorOutputStamp() override { return mtimeNs(sensorOutputPath()); }
  std::string sensorOutputPath() override { return logDir_ + "/" + options_.sensorName + ".log"; }

 private:
  Result<std::string> ctr(const std::string& args) { return containerd_->cli("-n " + quote(ns_) + " " + args); }

  Result<std::map<std::string, TaskRow>> listTasks() {
    grpc::ClientContext context;
    context.AddMetadata(runtime::containerd::kNamespaceHeader, ns_);
    context.set_deadline(std::chrono::system_clock::now() + 3s);
    tasks_v1::ListTasksRequest request;
    tasks_v1::ListTasksResponse response;
    const grpc::Status status = tasks_->List(&context, request, &response);
    if (!status.ok()) {
      return makeError(ErrorCode::kUnavailable, "containerd Tasks.List: " + status.error_message());
    }
    std::map<std::string, TaskRow> out;
    for (const auto& task : response.tasks()) {
      // containerd 1.6 fills `id` (the init process's, i.e. the container's) and leaves container_id empty.
      const std::string& id = task.container_id().empty() ? task.id() : task.container_id();
      out[id] = TaskRow{task.pid(), task.status() == task_types::RUNNING};
    }
    return out;
  }

  std::unique_ptr<testing::Containerd> containerd_;
  TargetOptions options_;
  std::string ns_;
  std::string logDir_;
  std::string imageRef_;
  runtime::containerd::ContainerdClient client_;
  std::unique_ptr<tasks_v1::Tasks::Stub> tasks_;
  std::unique_ptr<SensorMonitor> monitor_;
};

// runc keeps state under /run/containerd/runc/<namespace> and the sensor's cgroup is
// /<namespace>/<name>, both shared by every containerd on the machine: a namespace of our own keeps
// the suite apart from tests running beside it.
std::string uniqueNamespace() {
  std::random_device random;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", random());
  return std::string("qcs-faults-") + suffix;
}

}  // namespace

std::unique_ptr<RuntimeTarget> startContainerdTarget(const TargetOptions& options) {
  auto containerd = testing::Containerd::start();
  if (!containerd) return nullptr;
  const std::string ns = uniqueNamespace();
  const std::string logDir = options.workDir + "/containerd-logs";
  ::mkdir(logDir.c_str(), 0750);
  if (::mount("tmpfs", logDir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, kLogDirSize) != 0) {
    std::cerr << "faults: mounting a tmpfs at " << logDir << ": " << std::strerror(errno) << "\n";
    return nullptr;
  }
  const std::string imageRef = options.registryGate + "/qcs/standin:containerd";
  auto imported = testing::importStandinImage(*containerd, imageRef, ns);
  if (!imported) {
    std::cerr << "faults: importing the stand-in image: " << imported.message() << "\n";
    return nullptr;
  }
  const std::string n = "-n " + quote(ns) + " ";
  auto pushed = containerd->cli(n + "images push --plain-http --user " +
                                quote(options.registryUser + ":" + options.registryPassword) + " " + quote(imageRef));
  if (!pushed) {
    std::cerr << "faults: pushing the stand-in image: " << pushed.message() << "\n";
    return nullptr;
  }
  // The node starts without the image: the agent's first start pulls it through the gate.
  auto removed = containerd->cli(n + "images rm --sync " + quote(imageRef));
  if (!removed) {
    std::cerr << "faults: removing the local image: " << removed.message() << "\n";
    return nullptr;
  }
  return std::make_unique<ContainerdTarget>(std::move(containerd), options, ns, logDir, imageRef);
}

}  // namespace qcs::faults

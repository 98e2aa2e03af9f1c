// The Docker side of the fault suite: a private dockerd whose data-root is a tmpfs (so the disk-full
// fault can fill the filesystem that holds the sensor's json-file log), read through its API.
#include <sys/mount.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "faults/runtime_target.h"
#include "runtime/docker/http_unix.h"

namespace qcs::faults {

namespace {

using namespace std::chrono_literals;
using nlohmann::json;

// Room for dockerd's own files, two copies of the stand-in image and the sensor's log; small enough
// that filling it costs nothing.
constexpr const char* kDataRootSize = "size=128m";
constexpr const char* kLocalTag = "qcs-standin:faults";

int64_t mtimeNs(const std::string& path) {
  struct stat st {};
  if (path.empty() || ::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

class DockerTarget final : public RuntimeTarget {
 public:
  DockerTarget(std::unique_ptr<testing::Dockerd> dockerd, TargetOptions options, std::string imageRef)
      : dockerd_(std::move(dockerd)),
        options_(std::move(options)),
        imageRef_(std::move(imageRef)),
        api_(dockerd_->socketPath(), "docker", 2000ms) {
    monitor_ = startDockerMonitor(dockerd_->socketPath());
  }
  ~DockerTarget() override {
    monitor_.reset();
    dockerd_.reset();
  }

  std::string name() const override { return "docker"; }

  std::string daemonVersion() override {
    auto v = get("/version");
    if (!v) return "unknown (" + v.message() + ")";
    return "Docker " + v->value("Version", "?") + " (API " + v->value("ApiVersion", "?") + ")";
  }

  std::string agentRuntimeYaml() const override {
    return "runtime:\n  kind: docker\n  endpoint: " + dockerd_->socketPath() + "\n";
  }
  std::string imageRef() const override { return imageRef_; }
  SensorMonitor& monitor() override { return *monitor_; }

  std::optional<SensorInstance> sensor() override {
    auto c = get("/containers/" + options_.sensorName + "/json");
    if (!c || !c->contains("State")) return std::nullopt;
    SensorInstance s;
    s.id = c->value("Id", "");
    s.running = (*c)["State"].value("Running", false);
    s.instance = s.id + "@" + (*c)["State"].value("StartedAt", "");
    return s;
  }

  Status killSensor() override { return dockerd_->killContainer(options_.sensorName); }

  Status removeSensor() override {
    auto removed = dockerd_->cli("rm -f " + options_.sensorName);
    if (!removed && removed.message().find("No such container") == std::string::npos) return removed.error();
    return okStatus();
  }

  Status removeImage() override {
    auto image = get("/images/" + imageRef_ + "/json");
    if (!image) return okStatus();  // not there
    const std::string id = image->value("Id", "");
    if (id.empty()) return makeError(ErrorCode::kProtocol, "docker: image " + imageRef_ + " has no Id");
    auto removed = dockerd_->cli("rmi -f " + id);
    if (!removed) return removed.error();
    return okStatus();
  }

  Result<bool> imagePresent() override {
    auto response = send("/images/" + imageRef_ + "/json");
    if (!response) return response.error();
    return response->status == 200;
  }

  void stopDaemon() override { dockerd_->stop(); }
  bool startDaemon() override { return dockerd_->restart(); }
  bool daemonRunning() const override { return dockerd_->running(); }
  std::string socketPath() const override { return dockerd_->socketPath(); }
  bool sensorSurvivesDaemonStop() const override { return false; }

  std::vector<std::string> leaks() override {
    auto all = get("/containers/json?all=1");
    if (!all) return {"cannot list containers: " + all.message()};
    std::vector<std::string> out;
    for (const auto& c : *all) {
      const std::string name = c.contains("Names") && !c["Names"].empty() ? c["Names"][0].get<std::string>() : "";
      if (name == "/" + options_.sensorName) continue;
      out.push_back("container " + name + " (" + c.value("Id", "").substr(0, 12) + ", " + c.value("State", "") +
                    ") besides the sensor");
    }
    return out;
  }

  std::vector<std::pair<std::string, std::string>> secretSurfaces() override {
    std::vector<std::pair<std::string, std::string>> out;
    auto all = get("/containers/json?all=1");
    if (!all) return out;
    for (const auto& c : *all) {
      const std::string id = c.value("Id", "");
      auto inspected = get("/containers/" + id + "/json");
      if (!inspected) continue;
      json metadata = *inspected;
      if (metadata.contains("Config") && metadata["Config"].is_object()) metadata["Config"].erase("Env");
      out.emplace_back("docker inspect " + id.substr(0, 12) + " (all but Config.Env)", metadata.dump());
      auto logs = send("/containers/" + id + "/logs?stdout=1&stderr=1");
      if (logs && logs->status == 200) out.emplace_back("output of container " + id.substr(0, 12), logs->body);
    }
    return out;
  }

  std::string sensorEnvironment() override {
    auto c = get("/containers/" + options_.sensorName + "/json");
    if (!c || !c->contains("Config")) return "";
    return (*c)["Config"].value("Env", json::array()).dump();
  }

  std::string smallFilesystem() const override { return dockerd_->dir() + "/data"; }
  bool startNeedsSpaceThere() const override { return true; }
  bool sensorOutputIsPlainFile() const override { return false; }

  int64_t sensorOutputStamp() override { return mtimeNs(sensorOutputPath()); }

  std::string sensorOutputPath() override {
    auto c = get("/containers/" + options_.sensorName + "/json");
    return c ? c->value("LogPath", "") : "";
  }

 private:
  Result<runtime::docker::HttpResponse> send(const std::string& target) const {
    runtime::docker::HttpRequest request;
    request.target = target;
    request.totalTimeout = 10s;
    return api_.send(request);
  }

  Result<json> get(const std::string& target) const {
    auto response = send(target);
    if (!response) return response.error();
    if (response->status != 200) {
      return makeError(response->status == 404 ? ErrorCode::kNotFound : ErrorCode::kInternal,
                       "docker GET " + target + ": HTTP " + std::to_string(response->status));
    }
    auto doc = json::parse(response->body, nullptr, false);
    if (doc.is_discarded()) return makeError(ErrorCode::kProtocol, "docker GET " + target + ": not JSON");
    return doc;
  }

  std::unique_ptr<testing::Dockerd> dockerd_;
  TargetOptions options_;
  std::string imageRef_;
  runtime::docker::UnixHttpClient api_;
  std::unique_ptr<SensorMonitor> monitor_;
};

}  // namespace

std::unique_ptr<RuntimeTarget> startDockerTarget(const TargetOptions& options) {
  auto dockerd = testing::Dockerd::start();
  if (!dockerd) return nullptr;
  // dockerd's data-root goes onto a tmpfs of its own: stop it, mount, start it on the same directories.
  dockerd->stop();
  const std::string dataRoot = dockerd->dir() + "/data";
  if (::mount("tmpfs", dataRoot.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, kDataRootSize) != 0) {
    std::cerr << "faults: mounting a tmpfs at " << dataRoot << ": " << std::strerror(errno) << "\n";
    return nullptr;
  }
  if (!dockerd->restart()) return nullptr;

  auto built = testing::buildStandinImage(*dockerd, kLocalTag);
  if (!built) {
    std::cerr << "faults: building the stand-in image: " << built.message() << "\n";
    return nullptr;
  }
  const std::string repoTag = "qcs/standin:docker";
  if (auto pushed = options.registry->push(*dockerd, kLocalTag, repoTag); !pushed) {
    std::cerr << "faults: pushing the stand-in image: " << pushed.message() << "\n";
    return nullptr;
  }
  // The node starts without the image: the agent's first start pulls it through the gate.
  auto removed = dockerd->cli(std::string("rmi -f ") + kLocalTag + " " + options.registry->address() + "/" + repoTag);
  if (!removed) {
    std::cerr << "faults: removing the local image: " << removed.message() << "\n";
    return nullptr;
  }
  return std::make_unique<DockerTarget>(std::move(dockerd), options, options.registryGate + "/" + repoTag);
}

}  // namespace qcs::faults

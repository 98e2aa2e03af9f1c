#include "agent/sensor_spec.h"

#include <sys/stat.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/encoding.h"

namespace qcs::agent {

namespace {

using runtime::ContainerSpec;
using runtime::EnvVar;
using runtime::Mount;

std::string modeFlag(const std::string& mode) {
  if (mode == "registry") return "--registry-sensor";
  if (mode == "cicd") return "--cicd-deployed-sensor";
  return "";
}

}  // namespace

std::vector<std::string> runtimeDerivedArgs(const std::string& runtimeKind) {
  if (runtimeKind == "containerd") {
    return {"--container-runtime", "containerd", "--storage-driver-type", "overlay"};
  }
  return {"--storage-driver-type", "overlay2"};
}

std::string ecsSensorLogGroup(const std::string& cluster) {
  return "/ecs/" + (cluster.empty() ? std::string("default") : cluster) + "/qualys-container-sensor";
}

runtime::LogConfig sensorLogConfig(const Config::Sensor& sensor, const SpecContext& context) {
  runtime::LogConfig log;
  if (context.runtimeKind == "containerd" || sensor.logDriver == "default") return log;
  if (sensor.logDriver != "auto") {
    log.driver = sensor.logDriver;
  } else if (context.platform.orchestrator == "ecs" && !context.platform.region.empty()) {
    log.driver = "awslogs";
    log.options = {
        {"awslogs-group", ecsSensorLogGroup(context.platform.cluster)},
        {"awslogs-region", context.platform.region},
        {"awslogs-create-group", "true"},
        // CloudWatch being slow or away must never block the sensor's writes.
        {"mode", "non-blocking"},
        {"max-buffer-size", "4m"},
    };
  }
  for (const auto& [key, value] : sensor.logOptions) log.options[key] = value;
  return log;
}

bool hostPathExistsUnder(const std::string& hostRoot, const std::string& hostPath) {
  std::string full = hostRoot == "/" || hostRoot.empty() ? hostPath : hostRoot + hostPath;
  struct stat st {};
  return ::stat(full.c_str(), &st) == 0;
}

Result<ContainerSpec> buildSensorSpec(const Config& config, const SensorSecrets& secrets, const SpecContext& context) {
  const auto& sensor = config.sensor;
  ContainerSpec spec;
  spec.name = sensor.name;
  spec.image = sensor.image;

  if (std::string flag = modeFlag(sensor.mode); !flag.empty()) spec.args.push_back(flag);
  spec.args.insert(spec.args.end(), sensor.args.begin(), sensor.args.end());
  for (auto& arg : runtimeDerivedArgs(context.runtimeKind)) spec.args.push_back(std::move(arg));

  spec.env.push_back(EnvVar{"ACTIVATIONID", secrets.activationId, true});
  spec.env.push_back(EnvVar{"CUSTOMERID", secrets.customerId, true});
  spec.env.push_back(EnvVar{"POD_URL", sensor.podUrl, false});
  if (!sensor.proxy.qualysHttpsProxy.empty()) {
    spec.env.push_back(EnvVar{"qualys_https_proxy", sensor.proxy.qualysHttpsProxy, false});
  }
  if (!sensor.proxy.httpsProxy.empty()) spec.env.push_back(EnvVar{"https_proxy", sensor.proxy.httpsProxy, false});
  for (const auto& [name, value] : sensor.env) spec.env.push_back(EnvVar{name, value, false});

  auto exists = [&](const std::string& p) { return context.hostPathExists && context.hostPathExists(p); };
  if (!context.runtimeSocketHost.empty()) {
    const char* target =
        context.runtimeKind == "containerd" ? "/run/containerd/containerd.sock" : "/var/run/docker.sock";
    spec.mounts.push_back(Mount{context.runtimeSocketHost, target, false});
  }
  for (const char* dir : {"/var/lib/docker", "/var/lib/containerd"}) {
    if (exists(dir)) spec.mounts.push_back(Mount{dir, dir, true});
  }
  if (exists("/etc/qualys"))
    spec.mounts.push_back(Mount{"/etc/qualys", "/usr/local/qualys/qpa/data/conf/agent-data", false});

  auto requireHostPath = [&](const std::string& key, const std::string& path) -> Status {
    if (exists(path)) return okStatus();
    return makeError(ErrorCode::kNotFound,
                     key + ": " + path + " does not exist on the host (create it, or change " + key + ")");
  };
  if (!sensor.storagePath.empty()) {
    if (auto st = requireHostPath("sensor.storage_path", sensor.storagePath); !st) return st.error();
    spec.mounts.push_back(Mount{sensor.storagePath, "/usr/local/qualys/qpa/data", false});
  }
  if (!sensor.proxy.caFile.empty()) {
    if (auto st = requireHostPath("sensor.proxy.ca_file", sensor.proxy.caFile); !st) return st.error();
    spec.mounts.push_back(Mount{sensor.proxy.caFile, "/etc/qualys/qpa/cert/custom-ca.crt", true});
  }
  for (const auto& m : sensor.extraMounts) {
    if (auto st = requireHostPath("sensor.extra_mounts", m.source); !st) return st.error();
    spec.mounts.push_back(Mount{m.source, m.target, m.readOnly});
  }

  spec.capAdd = sensor.capabilities;
  spec.privileged = false;
  spec.hostNetwork = true;
  spec.resources.cpuRequestMilli = sensor.resources.cpuRequestMilli;
  spec.resources.cpuLimitMilli = sensor.resources.cpuLimitMilli;
  spec.resources.memoryRequestBytes = sensor.resources.memoryRequestBytes;
  spec.resources.memoryLimitBytes = sensor.resources.memoryLimitBytes;
  spec.log = sensorLogConfig(sensor, context);

  spec.labels[kLabelManaged] = "true";
  spec.labels[kLabelVersion] = context.agentVersion;
  spec.labels[kLabelSpecHash] = computeSpecHash(spec);
  return spec;
}

nlohmann::json specToJson(const ContainerSpec& spec, bool redactSecrets) {
  nlohmann::json env = nlohmann::json::array();
  for (const auto& e : spec.env) {
    env.push_back({{"name", e.name},
                   {"value", e.secret && redactSecrets ? std::string("<redacted>") : e.value},
                   {"secret", e.secret}});
  }
  nlohmann::json mounts = nlohmann::json::array();
  for (const auto& m : spec.mounts) {
    mounts.push_back({{"source", m.source}, {"target", m.target}, {"read_only", m.readOnly}});
  }
  return {
      {"name", spec.name},
      {"image", spec.image},
      {"args", spec.args},
      {"env", env},
      {"mounts", mounts},
      {"cap_add", spec.capAdd},
      {"privileged", spec.privileged},
      {"network", spec.hostNetwork ? "host" : "none"},
      {"resources",
       {{"cpu_request_millicores", spec.resources.cpuRequestMilli},
        {"cpu_limit_millicores", spec.resources.cpuLimitMilli},
        {"memory_request_bytes", spec.resources.memoryRequestBytes},
        {"memory_limit_bytes", spec.resources.memoryLimitBytes}}},
      {"labels", spec.labels},
      {"log", {{"driver", spec.log.driver}, {"options", spec.log.options}}},
  };
}

std::string computeSpecHash(const ContainerSpec& spec) {
  ContainerSpec hashed = spec;
  hashed.labels.erase(kLabelSpecHash);
  hashed.labels.erase(kLabelVersion);
  return sha256Hex(specToJson(hashed, /*redactSecrets=*/false).dump());
}

}  // namespace qcs::agent

// The sensor container's spec, built from the configuration per SPEC "The sensor container",
// and its hash. The hash covers everything that decides what runs (secrets included, so a
// rotated ID re-creates the sensor) and is stored in a label; the secret values themselves never
// leave the spec's env entries.
#pragma once

#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "agent/config.h"
#include "common/result.h"
#include "platform/platform_detect.h"
#include "runtime/container_runtime.h"

namespace qcs::agent {

inline constexpr const char* kLabelManaged = "io.qcs-agent.managed";
inline constexpr const char* kLabelSpecHash = "io.qcs-agent.spec-hash";
inline constexpr const char* kLabelVersion = "io.qcs-agent.version";

struct SensorSecrets {
  std::string activationId;
  std::string customerId;
};

struct SpecContext {
  std::string runtimeKind;        // "docker" | "containerd"
  std::string runtimeSocketHost;  // the detected socket as the host sees it ("" = none)
  std::string agentVersion;
  // Whether a path exists on the host (host_root is applied by the callee).
  std::function<bool(const std::string& hostPath)> hostPathExists;
  // Where the node runs: decides defaults such as the awslogs log driver on ECS.
  platform::PlatformInfo platform;
};

// The sensor's log driver (Docker only; containerd's output goes to the agent's capped file):
// sensor.log_driver `auto` is awslogs on ECS when the region is known, else Docker's default;
// `default` leaves it to dockerd; any other name as given. sensor.log_options are added to and
// override what `auto` derives.
runtime::LogConfig sensorLogConfig(const Config::Sensor& sensor, const SpecContext& context);

// The awslogs group of the sensor on ECS: /ecs/<cluster>/qualys-container-sensor.
std::string ecsSensorLogGroup(const std::string& cluster);

// Builds the spec and sets the spec-hash label. Fails when a configured host path (storage
// path, proxy CA file, extra mount source) does not exist on the host.
Result<runtime::ContainerSpec> buildSensorSpec(const Config& config, const SensorSecrets& secrets,
                                               const SpecContext& context);

// sha256 over the canonical JSON of the spec, without the spec-hash and version labels (an
// agent upgrade alone does not re-create the sensor).
std::string computeSpecHash(const runtime::ContainerSpec& spec);

// The spec as JSON for `render` and logs: secret env values replaced by "<redacted>".
nlohmann::json specToJson(const runtime::ContainerSpec& spec, bool redactSecrets);

// The runtime-derived sensor flags of SPEC.
std::vector<std::string> runtimeDerivedArgs(const std::string& runtimeKind);

// Host path existence under a host root ("/" or "/host").
bool hostPathExistsUnder(const std::string& hostRoot, const std::string& hostPath);

}  // namespace qcs::agent

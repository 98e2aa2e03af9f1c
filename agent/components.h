// The pieces the agent's commands assemble from a Config: secret sources, registry auth, runtime
// detection and connection, the sensor's desired spec. `run`, `render` and `check` build their
// object graphs from these, so each command sees the configuration the same way.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/config.h"
#include "agent/instrumented_runtime.h"
#include "agent/logging.h"
#include "agent/sensor_spec.h"
#include "agent/supervisor.h"
#include "common/clock.h"
#include "common/result.h"
#include "platform/platform_detect.h"
#include "platform/registry_auth.h"
#include "platform/secrets.h"
#include "runtime/containerd/containerd_runtime.h"
#include "runtime/detect.h"

namespace qcs::agent {

// The agent's own environment.
std::map<std::string, std::string> processEnvironment();
std::optional<std::string> processGetEnv(const std::string& name);

// A secret source for the config key `key` ("secrets.activation_id"); errors name the key.
Result<std::unique_ptr<platform::SecretSource>> makeSecretSource(const std::string& key, const SecretRef& ref,
                                                                 std::chrono::milliseconds refreshInterval,
                                                                 const std::string& awsImdsEndpoint = "");
// The provider `registry_auth` asks for; `auto` picks ECR, ACR or GCR by the image's registry host.
Result<std::unique_ptr<platform::RegistryAuthProvider>> makeRegistryAuth(const Config& config);
// Reads both IDs and checks their format. Errors name the key and source, never the value.
Result<SensorSecrets> readSensorSecrets(platform::SecretSource& activation, platform::SecretSource& customer);

// A host path as the host sees it: `path` without the runtime.host_root prefix.
std::string stripHostRoot(const std::string& hostRoot, const std::string& path);
runtime::DetectOptions detectOptions(const Config& config);
runtime::containerd::ContainerdRuntimeOptions containerdOptions(const Config& config);

// Finds the runtime per SPEC and opens it; on failure says what each candidate was.
std::unique_ptr<RuntimeConnector> makeDetectingConnector(const Config& config);
// Wraps every runtime `inner` opens so that its calls are timed and counted.
std::unique_ptr<RuntimeConnector> makeInstrumentingConnector(RuntimeConnector& inner, RuntimeObserver& observer,
                                                             const Clock& clock);
// Takes the instance lock (agent/instance_lock.h) for every runtime `inner` opens, before the
// supervisor may touch a container. When another agent holds it, the connection fails and
// onConflict gets the reason (once), so this agent can end without having touched anything.
// Under the lock it then has the runtime remove what an earlier agent left (removeLeftovers:
// containerd's leases): only the lock makes them safely a dead agent's.
std::unique_ptr<RuntimeConnector> makeLockingConnector(RuntimeConnector& inner, const Config& config,
                                                       std::function<void(const std::string&)> onConflict);
// The sensor spec from the config and the current secret values (re-read on every call, so a
// rotated secret changes the spec); registers the values with the redactor. A secret served from an
// earlier read because its store is down (SecretSource::staleReason) is warned once when that begins
// and noted once when it ends.
std::unique_ptr<DesiredSpecSource> makeConfigSpecSource(const Config& config,
                                                        std::unique_ptr<platform::SecretSource> activation,
                                                        std::unique_ptr<platform::SecretSource> customer,
                                                        std::shared_ptr<SecretRedactor> redactor,
                                                        platform::PlatformInfo platform);

// Where the node runs (platform.detect and the platform.* endpoints): local evidence first, a
// metadata service only when the evidence names its cloud. Never fails; see its warnings.
platform::PlatformDetectOptions platformDetectOptions(const Config& config);
platform::PlatformInfo detectNodePlatform(const Config& config);

}  // namespace qcs::agent

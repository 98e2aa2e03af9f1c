// The agent's configuration: SPEC "Configuration".
//
// Sources, later wins: the YAML file (default /etc/qcs-agent/agent.yaml), environment variables,
// command-line overrides. Every scalar key has an environment variable named QCS_ + the key path
// upper-cased with '.' turned into '_' (sensor.pull_policy -> QCS_SENSOR_PULL_POLICY), and can be
// set from the command line as `--set sensor.pull_policy=always`.
//
// Loading validates everything before anything touches a container: unknown keys, bad values
// and contradictions come back as one kInvalidArgument error listing every problem, each line
// naming the key, where it came from, and what would be accepted. The caller exits 78.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qcs::agent {

// Where a secret comes from. Only the fields of the chosen source are set.
struct SecretRef {
  std::string source;                                             // env | file | aws-secretsmanager
  std::string name;                                               // env: the variable of the agent's own environment
  std::string path;                                               // file: the file holding the value
  std::string secretId, jsonKey, region, versionStage, endpoint;  // aws-secretsmanager
  bool isSet() const { return !source.empty(); }
  bool operator==(const SecretRef&) const = default;
};

struct MountConfig {
  std::string source;
  std::string target;
  bool readOnly = false;
  bool operator==(const MountConfig&) const = default;
};

struct Config {
  struct Runtime {
    std::string kind = "auto";  // auto | docker | containerd
    std::string endpoint;       // socket path or unix:// URL; empty = detect
    std::string hostRoot = "/";
    std::string containerdNamespace = "qualys";
    // containerd only: the snapshotter the sensor's rootfs is unpacked into, and where on the host
    // the sensor's stdout/stderr go (<dir>/<sensor name>.log, capped by copy-and-truncate).
    std::string containerdSnapshotter = "overlayfs";
    std::string containerdLogDir = "/var/log/qcs-agent";
    int64_t containerdLogMaxBytes = 10LL << 20;
    bool operator==(const Runtime&) const = default;
  } runtime;

  struct Sensor {
    std::string image = "qualys/qcs-sensor:latest";
    std::string pullPolicy = "if-not-present";  // always | if-not-present | never
    std::string name = "qualys-container-sensor";
    std::string mode = "registry";  // general | registry | cicd
    std::string podUrl = "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor";
    std::vector<std::string> args{"--perform-sca-scan", "--optimize-image-scans", "--sensor-without-persistent-storage",
                                  "--enable-console-logs"};
    std::map<std::string, std::string> env;
    std::vector<std::string> capabilities{"SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"};
    struct Resources {
      int64_t cpuRequestMilli = 250;
      int64_t cpuLimitMilli = 500;
      int64_t memoryRequestBytes = 512LL << 20;
      int64_t memoryLimitBytes = 1LL << 30;
      bool operator==(const Resources&) const = default;
    } resources;
    std::string storagePath;
    std::vector<MountConfig> extraMounts;
    // Docker only: the sensor's log driver and its options. `auto` is `awslogs` on ECS (group
    // /ecs/<cluster>/qualys-container-sensor in the node's region) and Docker's default elsewhere;
    // `default` always leaves it to dockerd; any other name is passed to Docker as given. Options
    // are added to (and override) the ones `auto` derives.
    std::string logDriver = "auto";
    std::map<std::string, std::string> logOptions;
    struct Proxy {
      std::string qualysHttpsProxy;
      std::string httpsProxy;
      std::string caFile;
      bool operator==(const Proxy&) const = default;
    } proxy;
    bool operator==(const Sensor&) const = default;
  } sensor;

  struct Secrets {
    SecretRef activationId{"env", "QUALYS_ACTIVATION_ID", "", "", "", "", "", ""};
    SecretRef customerId{"file", "", "/etc/qcs-agent/secrets/customer-id", "", "", "", "", ""};
    // How often a cloud secret (aws-secretsmanager) is fetched again to notice a rotation.
    std::chrono::milliseconds refreshInterval{5 * 60 * 1000};
    bool operator==(const Secrets&) const = default;
  } secrets;

  struct RegistryAuth {
    std::string kind = "none";  // none | auto | basic | docker-config | ecr | acr | gcr
    std::string username;       // basic
    SecretRef password;         // basic
    std::string dockerConfig;   // docker-config: path of a Docker config.json
    // ecr: another registry host the provider serves (a pull-through proxy; tests), the ECR API
    // endpoint instead of https://api.ecr.<region>.amazonaws.com, and the region (else the host's).
    std::string ecrRegistry, ecrEndpoint, ecrRegion;
    // acr: where /oauth2/exchange is (instead of the registry itself), and a user-assigned managed
    // identity's client id (empty: the node's system-assigned identity).
    std::string acrExchangeEndpoint, azureClientId;
    bool operator==(const RegistryAuth&) const = default;
  } registryAuth;

  struct Supervision {
    struct Backoff {
      std::chrono::milliseconds initial{1000};
      std::chrono::milliseconds max{5 * 60 * 1000};
      double multiplier = 2.0;
      double jitter = 0.1;
      std::chrono::milliseconds resetAfter{10 * 60 * 1000};
      bool operator==(const Backoff&) const = default;
    } backoff;
    std::chrono::milliseconds reconcileInterval{30 * 1000};
    std::string onStop = "leave";  // leave | stop
    std::chrono::milliseconds stopTimeout{30 * 1000};
    // Health probes beyond "the container runs" (README "Health probes"); both off by default.
    struct Health {
      std::vector<std::string> execCommand;     // run in the sensor container; empty = off
      std::chrono::milliseconds quietAfter{0};  // no output for longer than this fails; 0 = off
      std::chrono::milliseconds startupGrace{60 * 1000};
      std::chrono::milliseconds period{30 * 1000};
      std::chrono::milliseconds timeout{10 * 1000};
      int64_t failureThreshold = 3;
      bool operator==(const Health&) const = default;
    } health;
    bool operator==(const Supervision&) const = default;
  } supervision;

  struct Platform {
    std::string detect = "auto";  // auto | none | aws | azure | gcp
    // Metadata services, instead of the standard places (AWS_EC2_METADATA_SERVICE_ENDPOINT or
    // 169.254.169.254; 169.254.169.254 for Azure; GCE_METADATA_HOST or metadata.google.internal).
    // Used by detection and by the ECR/ACR/GCR credentials alike.
    std::string awsImdsEndpoint, azureImdsEndpoint, gcpMetadataHost;
    bool operator==(const Platform&) const = default;
  } platform;

  struct Http {
    std::string listen = "127.0.0.1:9819";
    bool operator==(const Http&) const = default;
  } http;

  struct Logging {
    std::string level = "info";   // trace | debug | info | warn | error | critical | off
    std::string format = "text";  // text | json
    bool operator==(const Logging&) const = default;
  } logging;

  // Field by field; tests use it for the render/parse round trip.
  bool operator==(const Config&) const = default;
};

struct LoadOptions {
  std::string path = "/etc/qcs-agent/agent.yaml";
  bool pathExplicit = false;                       // --config given: a missing file is an error, not "use defaults"
  std::map<std::string, std::string> environment;  // the process environment (QCS_* are read)
  std::vector<std::pair<std::string, std::string>> overrides;  // --set key=value, in order
};

// Loads, merges and validates. Warnings (valid but probably unintended) are appended to
// `warnings` when it is not null.
Result<Config> loadConfig(const LoadOptions& options, std::vector<std::string>* warnings = nullptr);

// Parses a YAML document (no environment, no overrides): for tests and fuzzing.
Result<Config> parseConfig(const std::string& yaml, std::vector<std::string>* warnings = nullptr);

// The effective configuration as YAML, in SPEC's shape. Contains no secret values (secret
// references only name their source).
std::string renderConfigYaml(const Config& config);

// Durations: "1500ms", "30s", "5m", "1h", "1h30m"; a bare number is rejected (name a unit).
Result<std::chrono::milliseconds> parseDuration(const std::string& text);
std::string formatDuration(std::chrono::milliseconds d);
// CPU: "250m", "0.5", "2" -> millicores.
Result<int64_t> parseCpuQuantity(const std::string& text);
std::string formatCpuQuantity(int64_t milli);
// Memory: "512Mi", "1Gi", "1G", "1000", "128k" (Kubernetes suffixes) -> bytes.
Result<int64_t> parseMemoryQuantity(const std::string& text);
std::string formatMemoryQuantity(int64_t bytes);

// The environment variable that overrides a scalar key ("sensor.image" -> "QCS_SENSOR_IMAGE").
std::string envNameForKey(const std::string& key);
// Every key that can be overridden from the environment or --set, in SPEC order.
const std::vector<std::string>& overridableKeys();

}  // namespace qcs::agent

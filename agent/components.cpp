#include "agent/components.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "agent/instance_lock.h"
#include "agent/version.h"
#include "platform/acr_auth.h"
#include "platform/aws_secrets.h"
#include "platform/ecr_auth.h"
#include "platform/gcr_auth.h"
#include "runtime/docker/docker_runtime.h"
#include "runtime/image_reference.h"

extern char** environ;

namespace qcs::agent {

std::map<std::string, std::string> processEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    std::string entry(*e);
    auto eq = entry.find('=');
    if (eq != std::string::npos) env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

std::optional<std::string> processGetEnv(const std::string& name) {
  const char* v = std::getenv(name.c_str());
  return v ? std::optional<std::string>(v) : std::nullopt;
}

namespace {

// The process environment, except that platform.aws_imds_endpoint (when set) stands in for
// AWS_EC2_METADATA_SERVICE_ENDPOINT, so the AWS credential chain and detection agree.
platform::EnvLookup awsEnvLookup(const std::string& awsImdsEndpoint) {
  return [awsImdsEndpoint](const std::string& name) -> std::optional<std::string> {
    if (name == "AWS_EC2_METADATA_SERVICE_ENDPOINT" && !awsImdsEndpoint.empty()) return awsImdsEndpoint;
    return processGetEnv(name);
  };
}

}  // namespace

Result<std::unique_ptr<platform::SecretSource>> makeSecretSource(const std::string& key, const SecretRef& ref,
                                                                 std::chrono::milliseconds refreshInterval,
                                                                 const std::string& awsImdsEndpoint) {
  if (ref.source == "env") return platform::makeEnvSecret(ref.name, processGetEnv);
  if (ref.source == "file") return platform::makeFileSecret(ref.path);
  if (ref.source == "aws-secretsmanager") {
    platform::AwsSecretRef aws;
    aws.secretId = ref.secretId;
    aws.jsonKey = ref.jsonKey;
    aws.region = ref.region;
    aws.versionStage = ref.versionStage;
    aws.endpoint = ref.endpoint;
    aws.refreshInterval = refreshInterval;
    return platform::makeAwsSecretsManagerSecret(std::move(aws),
                                                 platform::makeDefaultAwsEnvironment(awsEnvLookup(awsImdsEndpoint)));
  }
  return makeError(ErrorCode::kInvalidArgument, key + ".source: \"" + ref.source +
                                                    "\" is not available in this build (use env, file or "
                                                    "aws-secretsmanager)");
}

Result<std::unique_ptr<platform::RegistryAuthProvider>> makeRegistryAuth(const Config& config) {
  const auto& auth = config.registryAuth;
  if (auth.kind == "none") return platform::makeNoAuth();
  if (auth.kind == "basic") {
    auto password = makeSecretSource("registry_auth.password", auth.password, config.secrets.refreshInterval,
                                     config.platform.awsImdsEndpoint);
    if (!password) return password.error();
    return platform::makeBasicAuth(auth.username, std::move(password.value()));
  }
  if (auth.kind == "docker-config") return platform::makeDockerConfigAuth(auth.dockerConfig);
  // ACR and GCR speak to the node's metadata service, at the platform.* overrides when set
  // (docs/cloud-registries.md), so tests and unusual networks can point them elsewhere.
  auto acr = [&](const std::string& registry) {
    platform::AcrAuthOptions options;
    options.registryOverride = registry;
    options.imdsEndpoint = config.platform.azureImdsEndpoint;
    options.exchangeEndpoint = auth.acrExchangeEndpoint;
    options.clientId = auth.azureClientId;
    return platform::makeAcrAuth(std::move(options), processGetEnv, platform::makeDefaultCloudHttpClient(),
                                 std::make_shared<SystemClock>());
  };
  auto gcr = [&](const std::string& registry) {
    platform::GcrAuthOptions options;
    options.registryOverride = registry;
    options.metadataHost = config.platform.gcpMetadataHost;
    return platform::makeGcrAuth(std::move(options), processGetEnv, platform::makeDefaultCloudHttpClient(),
                                 std::make_shared<SystemClock>());
  };
  auto ref = runtime::parseImageReference(config.sensor.image);
  const std::string imageRegistry = ref ? ref->registry : std::string();
  if (auth.kind == "auto") {
    if (platform::ecrRegistryRegion(imageRegistry)) {
      return platform::makeEcrAuth(platform::EcrAuthOptions{},
                                   platform::makeDefaultAwsEnvironment(awsEnvLookup(config.platform.awsImdsEndpoint)));
    }
    if (platform::isAzureRegistry(imageRegistry)) return acr("");
    if (platform::isGoogleRegistry(imageRegistry)) return gcr("");
    return platform::makeNoAuth();
  }
  if (auth.kind == "ecr") {
    platform::EcrAuthOptions options;
    options.registryOverride = auth.ecrRegistry;
    options.endpointOverride = auth.ecrEndpoint;
    options.region = auth.ecrRegion;
    return platform::makeEcrAuth(std::move(options),
                                 platform::makeDefaultAwsEnvironment(awsEnvLookup(config.platform.awsImdsEndpoint)));
  }
  // An explicit acr/gcr serves the sensor image's registry whatever its name (a custom domain, a
  // pull-through cache): the operator chose where the token goes.
  if (auth.kind == "acr") return acr(imageRegistry);
  if (auth.kind == "gcr") return gcr(imageRegistry);
  return makeError(ErrorCode::kInvalidArgument, "registry_auth.kind: \"" + auth.kind +
                                                    "\" is not known (use none, auto, basic, docker-config, ecr, "
                                                    "acr or gcr)");
}

// Reads both IDs and checks their format. Errors name the key and source, never the value.
Result<SensorSecrets> readSensorSecrets(platform::SecretSource& activation, platform::SecretSource& customer) {
  SensorSecrets secrets;
  struct Item {
    const char* key;
    platform::SecretSource& source;
    std::string& out;
  };
  for (Item item : {Item{"secrets.activation_id", activation, secrets.activationId},
                    Item{"secrets.customer_id", customer, secrets.customerId}}) {
    auto value = item.source.read();
    if (!value) return withContext(value.error(), std::string(item.key) + " (" + item.source.describe() + ")");
    if (!platform::isUuid(value.value())) {
      return makeError(ErrorCode::kInvalidArgument, std::string(item.key) + " (" + item.source.describe() +
                                                        "): the value is not a UUID (expected 8-4-4-4-12 hex "
                                                        "digits as shown in the Qualys portal)");
    }
    item.out = std::move(value.value());
  }
  return secrets;
}

std::string stripHostRoot(const std::string& hostRoot, const std::string& path) {
  if (hostRoot.empty() || hostRoot == "/") return path;
  std::string root = hostRoot.back() == '/' ? hostRoot.substr(0, hostRoot.size() - 1) : hostRoot;
  if (path.rfind(root + "/", 0) == 0) return path.substr(root.size());
  return path;
}

runtime::DetectOptions detectOptions(const Config& config) {
  runtime::DetectOptions options;
  options.kind = config.runtime.kind;
  options.endpoint = config.runtime.endpoint;
  options.hostRoot = config.runtime.hostRoot;
  options.dockerHost = processGetEnv("DOCKER_HOST");
  return options;
}

runtime::containerd::ContainerdRuntimeOptions containerdOptions(const Config& config) {
  runtime::containerd::ContainerdRuntimeOptions options;
  options.nameSpace = config.runtime.containerdNamespace;
  options.snapshotter = config.runtime.containerdSnapshotter;
  options.hostRoot = config.runtime.hostRoot;
  options.logDir = config.runtime.containerdLogDir;
  options.logLimits.maxBytes = config.runtime.containerdLogMaxBytes;
  return options;
}

namespace {

// Finds the runtime per SPEC and opens it; on failure says what each candidate was.
class DetectingConnector final : public RuntimeConnector {
 public:
  DetectingConnector(runtime::DetectOptions options, runtime::containerd::ContainerdRuntimeOptions containerd)
      : options_(std::move(options)), containerd_(std::move(containerd)) {}

  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    auto detection = runtime::detectRuntime(options_, runtime::defaultProbe());
    if (!detection.chosen) {
      return makeError(ErrorCode::kUnavailable,
                       "no container runtime answered:\n" + runtime::describeDetection(detection));
    }
    const auto& chosen = *detection.chosen;
    if (chosen.kind == "containerd") {
      auto options = containerd_;
      options.socketPath = chosen.path;
      return runtime::containerd::connectContainerd(options);
    }
    return runtime::docker::connectDocker(chosen.path, options_.timeout);
  }

 private:
  runtime::DetectOptions options_;
  runtime::containerd::ContainerdRuntimeOptions containerd_;
};

// Wraps every runtime the inner connector opens so that its calls are timed and counted.
class InstrumentingConnector final : public RuntimeConnector {
 public:
  InstrumentingConnector(RuntimeConnector& inner, RuntimeObserver& observer, const Clock& clock)
      : inner_(inner), observer_(observer), clock_(clock) {}

  // Connecting (detection, handshake, the instance lock) is timed and counted as op "connect", under
  // runtime "unknown" when nothing answered, so a runtime that cannot be reached shows in
  // qcs_runtime_errors_total and not only as qcs_runtime_up 0.
  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    const SteadyTime started = clock_.now();
    auto connected = inner_.connect();
    const double seconds = std::chrono::duration<double>(clock_.now() - started).count();
    if (!connected) {
      observer_.runtimeCall("unknown", "connect", seconds, true);
      return connected.error();
    }
    observer_.runtimeCall(connected.value()->info().kind, "connect", seconds, false);
    return std::unique_ptr<runtime::ContainerRuntime>(
        std::make_unique<InstrumentedRuntime>(std::move(connected.value()), observer_, clock_));
  }

 private:
  RuntimeConnector& inner_;
  RuntimeObserver& observer_;
  const Clock& clock_;
};

class LockingConnector final : public RuntimeConnector {
 public:
  LockingConnector(RuntimeConnector& inner, const Config& config, std::function<void(const std::string&)> onConflict)
      : inner_(inner),
        hostRoot_(config.runtime.hostRoot),
        nameSpace_(config.runtime.containerdNamespace),
        sensorName_(config.sensor.name),
        onConflict_(std::move(onConflict)) {}

  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    auto connected = inner_.connect();
    if (!connected) return connected.error();
    const auto& info = connected.value()->info();
    const std::string name = instanceLockName(info.kind, info.endpoint, hostRoot_, nameSpace_, sensorName_);
    if (!lock_ || lock_->name() != name) {
      std::string what = "sensor '" + sensorName_ + "' on " + info.kind + " at " + info.endpoint;
      if (info.kind == "containerd") what += " (namespace " + nameSpace_ + ")";
      auto lock = InstanceLock::acquire(name, what);
      if (!lock) {
        if (lock.code() == ErrorCode::kConflict && onConflict_) {
          onConflict_(lock.message());
          onConflict_ = nullptr;
        }
        return lock.error();
      }
      // A different runtime than before (the old one went away): the old lock no longer guards anything.
      lock_ = std::move(lock.value());
    }
    // Only now, under the lock, is what an earlier agent left (containerd: its leases) a dead agent's.
    removeLeftovers(*connected.value());
    return connected;
  }

 private:
  static void removeLeftovers(runtime::ContainerRuntime& runtime) {
    const auto cleanup = runtime.removeLeftovers();
    const std::string& kind = runtime.info().kind;
    for (const auto& what : cleanup.removed) spdlog::info("{}: deleted {} that an earlier agent left", kind, what);
    // Not fatal: a leftover lease only keeps its content from collection until it expires.
    for (const auto& failure : cleanup.failures) {
      spdlog::warn("{} (what an earlier agent left stays until it expires)", failure.message);
    }
  }

  RuntimeConnector& inner_;
  std::string hostRoot_;
  std::string nameSpace_;
  std::string sensorName_;
  std::function<void(const std::string&)> onConflict_;
  std::unique_ptr<InstanceLock> lock_;
};

class ConfigSpecSource final : public DesiredSpecSource {
 public:
  ConfigSpecSource(const Config& config, std::unique_ptr<platform::SecretSource> activation,
                   std::unique_ptr<platform::SecretSource> customer, std::shared_ptr<SecretRedactor> redactor,
                   platform::PlatformInfo platform)
      : config_(config),
        activation_(std::move(activation)),
        customer_(std::move(customer)),
        redactor_(std::move(redactor)),
        platform_(std::move(platform)) {}

  Result<runtime::ContainerSpec> desiredSpec(const runtime::RuntimeInfo& info) override {
    auto secrets = readSensorSecrets(*activation_, *customer_);
    if (!secrets) return secrets.error();
    noteStaleness("secrets.activation_id", *activation_, activationStale_);
    noteStaleness("secrets.customer_id", *customer_, customerStale_);
    redactor_->add(secrets->activationId);
    redactor_->add(secrets->customerId);
    SpecContext context;
    context.runtimeKind = info.kind;
    context.runtimeSocketHost = stripHostRoot(config_.runtime.hostRoot, info.endpoint);
    context.agentVersion = agentVersion();
    std::string hostRoot = config_.runtime.hostRoot;
    context.hostPathExists = [hostRoot](const std::string& p) { return hostPathExistsUnder(hostRoot, p); };
    context.platform = platform_;
    return buildSensorSpec(config_, secrets.value(), context);
  }

 private:
  // A secret served from an earlier fetch keeps the sensor running through the outage of its
  // store, but a rotation would go unnoticed meanwhile: said once when it begins, once when it ends.
  static void noteStaleness(const char* key, const platform::SecretSource& source, bool& wasStale) {
    const std::string reason = source.staleReason();
    if (!reason.empty() && !wasStale) {
      spdlog::warn(
          "{} ({}) could not be read anew: {}; the sensor keeps the value read before, and a rotated "
          "value is picked up once it can be read",
          key, source.describe(), reason);
    } else if (reason.empty() && wasStale) {
      spdlog::info("{} ({}) is read anew again", key, source.describe());
    }
    wasStale = !reason.empty();
  }

  const Config& config_;
  std::unique_ptr<platform::SecretSource> activation_;
  std::unique_ptr<platform::SecretSource> customer_;
  std::shared_ptr<SecretRedactor> redactor_;
  platform::PlatformInfo platform_;
  bool activationStale_ = false;
  bool customerStale_ = false;
};

}  // namespace

std::unique_ptr<RuntimeConnector> makeDetectingConnector(const Config& config) {
  return std::make_unique<DetectingConnector>(detectOptions(config), containerdOptions(config));
}

std::unique_ptr<RuntimeConnector> makeInstrumentingConnector(RuntimeConnector& inner, RuntimeObserver& observer,
                                                             const Clock& clock) {
  return std::make_unique<InstrumentingConnector>(inner, observer, clock);
}

std::unique_ptr<RuntimeConnector> makeLockingConnector(RuntimeConnector& inner, const Config& config,
                                                       std::function<void(const std::string&)> onConflict) {
  return std::make_unique<LockingConnector>(inner, config, std::move(onConflict));
}

std::unique_ptr<DesiredSpecSource> makeConfigSpecSource(const Config& config,
                                                        std::unique_ptr<platform::SecretSource> activation,
                                                        std::unique_ptr<platform::SecretSource> customer,
                                                        std::shared_ptr<SecretRedactor> redactor,
                                                        platform::PlatformInfo platform) {
  return std::make_unique<ConfigSpecSource>(config, std::move(activation), std::move(customer), std::move(redactor),
                                            std::move(platform));
}

platform::PlatformDetectOptions platformDetectOptions(const Config& config) {
  platform::PlatformDetectOptions options;
  options.mode = config.platform.detect;
  options.hostRoot = config.runtime.hostRoot;
  options.awsImdsEndpoint = config.platform.awsImdsEndpoint;
  options.azureImdsEndpoint = config.platform.azureImdsEndpoint;
  options.gcpMetadataHost = config.platform.gcpMetadataHost;
  return options;
}

platform::PlatformInfo detectNodePlatform(const Config& config) {
  auto http = platform::makeDefaultCloudHttpClient();
  return platform::detectPlatform(platformDetectOptions(config), processGetEnv, *http);
}

}  // namespace qcs::agent

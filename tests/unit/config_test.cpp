// Unit tests for agent/config: durations and quantities, defaults, every validation rule, the
// file / environment / --set layering, and the render -> parse round trip.
#include "agent/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

namespace qcs::agent {
namespace {

using std::chrono::milliseconds;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

// A directory of our own under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "qcs-config-test-XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name, const std::string& contents) const {
    const auto path = path_ / name;
    std::ofstream(path) << contents;
    return path.string();
  }
  std::string missing() const { return (path_ / "missing.yaml").string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

Config parseOk(const std::string& yaml) {
  auto config = parseConfig(yaml);
  EXPECT_TRUE(config.ok()) << config.message();
  return config.ok() ? config.value() : Config{};
}

std::string parseError(const std::string& yaml) {
  auto config = parseConfig(yaml);
  EXPECT_FALSE(config.ok()) << "accepted:\n" << yaml;
  if (config.ok()) return "";
  EXPECT_EQ(config.code(), ErrorCode::kInvalidArgument);
  return config.message();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream stream(text);
  for (std::string line; std::getline(stream, line);) out.push_back(line);
  return out;
}

// Loads with no file (a missing default path), the given environment and --set overrides.
class LoadTest : public ::testing::Test {
 protected:
  Result<Config> load(std::map<std::string, std::string> environment,
                      std::vector<std::pair<std::string, std::string>> overrides = {}, std::string path = "") {
    LoadOptions options;
    options.path = path.empty() ? dir_.missing() : path;
    options.pathExplicit = !path.empty();
    options.environment = std::move(environment);
    options.overrides = std::move(overrides);
    return loadConfig(options, &warnings_);
  }
  Config loadOk(std::map<std::string, std::string> environment,
                std::vector<std::pair<std::string, std::string>> overrides = {}, std::string path = "") {
    auto config = load(std::move(environment), std::move(overrides), std::move(path));
    EXPECT_TRUE(config.ok()) << config.message();
    return config.ok() ? config.value() : Config{};
  }

  TempDir dir_;
  std::vector<std::string> warnings_;
};

// ---------------------------------------------------------------------------------------------
// Durations

TEST(DurationTest, ParsesUnitsAndCombinations) {
  const std::vector<std::pair<std::string, int64_t>> cases{
      {"1500ms", 1500},  {"30s", 30'000},       {"5m", 300'000},
      {"1h", 3'600'000}, {"1h30m", 5'400'000},  {"1m30s", 90'000},
      {"0.5s", 500},     {"1.5h", 5'400'000},   {"0s", 0},
      {"0ms", 0},        {"10ms", 10},          {"0.001s", 1},
      {" 45s ", 45'000}, {"2h0m5s", 7'205'000}, {"100h", 360'000'000},
      {"1s500ms", 1500},
  };
  for (const auto& [text, expected] : cases) {
    auto parsed = parseDuration(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.message();
    EXPECT_EQ(parsed->count(), expected) << text;
  }
}

TEST(DurationTest, RejectsWithAReason) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"30", "unit"},
      {"0", "unit"},
      {"1.5", "unit"},
      {"1h30", "unit"},
      {"-5s", "negative"},
      {"-30", "negative"},
      {"", "empty"},
      {"   ", "empty"},
      {"abc", "not a duration"},
      {"s", "not a duration"},
      {"+5s", "not a duration"},
      {"5d", "unknown unit"},
      {"5S", "unknown unit"},
      {"0.0001s", "millisecond"},
      {"1.0005s", "millisecond"},
      {"99999999999999999h", "too long"},
      {"1 h", "unit"},
      {"5s!", "not a duration"},
      {"1234567890123456789012s", "too long"},
      {"0.1234567890123456789012s", "decimal places"},
  };
  for (const auto& [text, reason] : cases) {
    auto parsed = parseDuration(text);
    ASSERT_FALSE(parsed.ok()) << text << " was accepted";
    EXPECT_EQ(parsed.code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(parsed.message(), HasSubstr(reason)) << text;
  }
}

TEST(DurationTest, BareNumberMessageSaysToAddAUnit) {
  auto parsed = parseDuration("30");
  ASSERT_FALSE(parsed.ok());
  EXPECT_THAT(parsed.message(), AllOf(HasSubstr("\"30\""), HasSubstr("add one of ms, s, m, h")));
}

TEST(DurationTest, FormatsShortestNaturalForm) {
  const std::vector<std::pair<int64_t, std::string>> cases{
      {30'000, "30s"}, {300'000, "5m"},   {5'400'000, "1h30m"}, {1500, "1500ms"},
      {0, "0s"},       {3'600'000, "1h"}, {3'605'000, "1h5s"},  {86'400'000, "24h"},
      {1, "1ms"},      {90'000, "1m30s"}, {-2000, "-2s"},
  };
  for (const auto& [ms, text] : cases) EXPECT_EQ(formatDuration(milliseconds(ms)), text) << ms;
}

TEST(DurationTest, FormatThenParseIsIdentity) {
  for (int64_t ms : {0LL, 1LL, 999LL, 1000LL, 1001LL, 59'999LL, 60'000LL, 3'599'000LL, 3'600'001LL, 7'384'000LL,
                     123'456'789LL, 9'000'000'000'000LL}) {
    auto parsed = parseDuration(formatDuration(milliseconds(ms)));
    ASSERT_TRUE(parsed.ok()) << ms;
    EXPECT_EQ(parsed->count(), ms);
  }
}

// ---------------------------------------------------------------------------------------------
// Quantities

TEST(CpuQuantityTest, ParsesCoresAndMillicores) {
  const std::vector<std::pair<std::string, int64_t>> cases{
      {"250m", 250},   {"0.5", 500}, {"2", 2000},   {"1.5", 1500}, {"0.001", 1},
      {"1000m", 1000}, {"0", 0},     {"0.25", 250}, {".5", 500},   {"16", 16'000},
  };
  for (const auto& [text, expected] : cases) {
    auto parsed = parseCpuQuantity(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.message();
    EXPECT_EQ(*parsed, expected) << text;
  }
}

TEST(CpuQuantityTest, RejectsWithAReason) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"-1", "negative"},
      {"-250m", "negative"},
      {"abc", "not a CPU quantity"},
      {"2x", "not a CPU quantity"},
      {"1 core", "not a CPU quantity"},
      {"1e3", "not a CPU quantity"},
      {"", "empty"},
      {"1.5m", "millicore"},
      {"0.0005", "millicore"},
      {"99999999999999999", "too large"},
      {"250M", "not a CPU quantity"},
  };
  for (const auto& [text, reason] : cases) {
    auto parsed = parseCpuQuantity(text);
    ASSERT_FALSE(parsed.ok()) << text << " was accepted";
    EXPECT_THAT(parsed.message(), HasSubstr(reason)) << text;
  }
}

TEST(CpuQuantityTest, FormatsCanonically) {
  EXPECT_EQ(formatCpuQuantity(250), "250m");
  EXPECT_EQ(formatCpuQuantity(500), "500m");
  EXPECT_EQ(formatCpuQuantity(1500), "1500m");
  EXPECT_EQ(formatCpuQuantity(2000), "2");
  EXPECT_EQ(formatCpuQuantity(0), "0");
  for (int64_t milli : {1LL, 250LL, 999LL, 1000LL, 1001LL, 64'000LL}) {
    EXPECT_EQ(*parseCpuQuantity(formatCpuQuantity(milli)), milli);
  }
}

TEST(MemoryQuantityTest, ParsesKubernetesSuffixes) {
  const std::vector<std::pair<std::string, int64_t>> cases{
      {"512Mi", 512LL << 20},    {"1Gi", 1LL << 30},       {"1G", 1'000'000'000}, {"1000", 1000},
      {"128k", 128'000},         {"1.5Gi", 1'610'612'736}, {"1Ki", 1024},         {"1Ti", 1LL << 40},
      {"1T", 1'000'000'000'000}, {"1M", 1'000'000},        {"0.5Ki", 512},        {"0", 0},
      {"2Ei", 2LL << 60},        {"1.5k", 1500},           {"6Mi", 6LL << 20},
  };
  for (const auto& [text, expected] : cases) {
    auto parsed = parseMemoryQuantity(text);
    ASSERT_TRUE(parsed.ok()) << text << ": " << parsed.message();
    EXPECT_EQ(*parsed, expected) << text;
  }
}

TEST(MemoryQuantityTest, RejectsWithAReason) {
  const std::vector<std::pair<std::string, std::string>> cases{
      {"-1Gi", "negative"},
      {"abc", "not a memory quantity"},
      {"1GB", "not a memory quantity"},
      {"1K", "not a memory quantity"},
      {"1e9", "not a memory quantity"},
      {"Gi", "not a memory quantity"},
      {"", "empty"},
      {"1.5", "whole number of bytes"},
      {"0.1Ki", "whole number of bytes"},
      {"10Ei", "too large"},
      {"9223372036854775808", "too large"},
      {"512m", "Mi"},
  };
  for (const auto& [text, reason] : cases) {
    auto parsed = parseMemoryQuantity(text);
    ASSERT_FALSE(parsed.ok()) << text << " was accepted";
    EXPECT_THAT(parsed.message(), HasSubstr(reason)) << text;
  }
}

TEST(MemoryQuantityTest, FormatsCanonically) {
  EXPECT_EQ(formatMemoryQuantity(512LL << 20), "512Mi");
  EXPECT_EQ(formatMemoryQuantity(1LL << 30), "1Gi");
  EXPECT_EQ(formatMemoryQuantity(1536LL << 20), "1536Mi");
  EXPECT_EQ(formatMemoryQuantity(1'000'000'000), "1G");
  EXPECT_EQ(formatMemoryQuantity(1000), "1k");
  EXPECT_EQ(formatMemoryQuantity(1023), "1023");
  EXPECT_EQ(formatMemoryQuantity(0), "0");
  for (int64_t bytes : {1LL, 1000LL, 1024LL, 1'500'000LL, 6LL << 20, 1'610'612'736LL, 3LL << 40}) {
    EXPECT_EQ(*parseMemoryQuantity(formatMemoryQuantity(bytes)), bytes) << bytes;
  }
}

// ---------------------------------------------------------------------------------------------
// Defaults and the SPEC examples

TEST(ConfigDefaultsTest, BytesThatAreNotUtf8AreRefusedWithTheirPlace) {
  // Found by the config fuzzer: yaml-cpp reads such bytes, and `render` wrote U+FFFD instead.
  auto config = parseConfig("sensor:\n  args: [\"--perfor\xff\x0fsca-scan\"]\n");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(config.message(), "agent.yaml line 2 column 19: byte 0xFF is not valid UTF-8; save the file as UTF-8");
  EXPECT_TRUE(parseConfig("sensor:\n  args: [\"--caf\xc3\xa9\"]\n").ok()) << "UTF-8 beyond ASCII is fine";
}

TEST(ConfigDefaultsTest, EmptyOrCommentOnlyDocumentIsAllDefaults) {
  EXPECT_EQ(parseOk(""), Config{});
  EXPECT_EQ(parseOk("# nothing configured\n\n   # still nothing\n"), Config{});
  EXPECT_EQ(parseOk("---\n"), Config{});
}

TEST(ConfigDefaultsTest, DefaultsMatchSpec) {
  const Config c = parseOk("");
  EXPECT_EQ(c.runtime.kind, "auto");
  EXPECT_EQ(c.runtime.endpoint, "");
  EXPECT_EQ(c.runtime.hostRoot, "/");
  EXPECT_EQ(c.runtime.containerdNamespace, "qualys");
  EXPECT_EQ(c.sensor.image, "qualys/qcs-sensor:latest");
  EXPECT_EQ(c.sensor.pullPolicy, "if-not-present");
  EXPECT_EQ(c.sensor.name, "qualys-container-sensor");
  EXPECT_EQ(c.sensor.mode, "registry");
  EXPECT_EQ(c.sensor.podUrl, "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor");
  EXPECT_THAT(c.sensor.args, ElementsAre("--perform-sca-scan", "--optimize-image-scans",
                                         "--sensor-without-persistent-storage", "--enable-console-logs"));
  EXPECT_THAT(c.sensor.env, IsEmpty());
  EXPECT_THAT(c.sensor.capabilities, ElementsAre("SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"));
  EXPECT_EQ(c.sensor.resources.cpuRequestMilli, 250);
  EXPECT_EQ(c.sensor.resources.cpuLimitMilli, 500);
  EXPECT_EQ(c.sensor.resources.memoryRequestBytes, 512LL * 1024 * 1024);
  EXPECT_EQ(c.sensor.resources.memoryLimitBytes, 1024LL * 1024 * 1024);
  EXPECT_EQ(c.sensor.storagePath, "");
  EXPECT_THAT(c.sensor.extraMounts, IsEmpty());
  EXPECT_EQ(c.sensor.proxy.qualysHttpsProxy, "");
  EXPECT_EQ(c.secrets.activationId.source, "env");
  EXPECT_EQ(c.secrets.activationId.name, "QUALYS_ACTIVATION_ID");
  EXPECT_EQ(c.secrets.customerId.source, "file");
  EXPECT_EQ(c.secrets.customerId.path, "/etc/qcs-agent/secrets/customer-id");
  EXPECT_EQ(c.registryAuth.kind, "none");
  EXPECT_EQ(c.supervision.backoff.initial, std::chrono::seconds(1));
  EXPECT_EQ(c.supervision.backoff.max, std::chrono::minutes(5));
  EXPECT_EQ(c.supervision.backoff.multiplier, 2.0);
  EXPECT_EQ(c.supervision.backoff.jitter, 0.1);
  EXPECT_EQ(c.supervision.backoff.resetAfter, std::chrono::minutes(10));
  EXPECT_EQ(c.supervision.reconcileInterval, std::chrono::seconds(30));
  EXPECT_EQ(c.supervision.onStop, "leave");
  EXPECT_EQ(c.platform.detect, "auto");
  EXPECT_EQ(c.http.listen, "127.0.0.1:9819");
  EXPECT_EQ(c.logging.level, "info");
  EXPECT_EQ(c.logging.format, "text");
}

// The block from SPEC "Configuration", verbatim.
constexpr const char* kSpecExample = R"(
runtime:
  kind: auto                 # auto | docker | containerd
  endpoint: ""               # socket path; empty = detect
  host_root: /               # /host when the agent runs in a pod
  containerd_namespace: qualys
sensor:
  image: qualys/qcs-sensor:latest
  pull_policy: if-not-present          # always | if-not-present | never
  name: qualys-container-sensor
  mode: registry                        # general | registry | cicd
  pod_url: https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor
  args: [--perform-sca-scan, --optimize-image-scans, --sensor-without-persistent-storage, --enable-console-logs]
  env: {}                               # extra, non-secret
  capabilities: [SYS_ADMIN, DAC_OVERRIDE, SETUID, SETGID]
  resources: {cpu_request: 250m, cpu_limit: 500m, memory_request: 512Mi, memory_limit: 1Gi}
  storage_path: ""                      # persistent storage on the host, if any
  extra_mounts: []                      # {source, target, read_only}
  proxy: {qualys_https_proxy: "", https_proxy: "", ca_file: ""}
secrets:
  activation_id: {source: env, name: QUALYS_ACTIVATION_ID}
  customer_id: {source: file, path: /etc/qcs-agent/secrets/customer-id}
  # or {source: aws-secretsmanager, secret_id: <arn or name>, json_key: ACTIVATIONID, region: <region>}
registry_auth:
  kind: none                 # none | auto | basic | docker-config | ecr | acr | gcr
supervision:
  backoff: {initial: 1s, max: 5m, multiplier: 2, jitter: 0.1, reset_after: 10m}
  reconcile_interval: 30s
  on_stop: leave             # leave | stop
platform:
  detect: auto               # auto | none | aws | azure | gcp
http:
  listen: 127.0.0.1:9819
logging:
  level: info
  format: text               # text | json
)";

TEST(ConfigDefaultsTest, SpecExampleParsesToTheDefaults) { EXPECT_EQ(parseOk(kSpecExample), Config{}); }

TEST(ConfigDefaultsTest, SpecAwsSecretsManagerExampleParses) {
  const Config c = parseOk(R"(
secrets:
  activation_id: {source: aws-secretsmanager, secret_id: "arn:aws:secretsmanager:eu-west-1:123456789012:secret:qcs", json_key: ACTIVATIONID, region: eu-west-1}
  customer_id: {source: aws-secretsmanager, secret_id: qcs-ids, json_key: CUSTOMERID, version_stage: AWSCURRENT, endpoint: "http://127.0.0.1:4566"}
)");
  EXPECT_EQ(c.secrets.activationId.source, "aws-secretsmanager");
  EXPECT_EQ(c.secrets.activationId.secretId, "arn:aws:secretsmanager:eu-west-1:123456789012:secret:qcs");
  EXPECT_EQ(c.secrets.activationId.jsonKey, "ACTIVATIONID");
  EXPECT_EQ(c.secrets.activationId.region, "eu-west-1");
  EXPECT_EQ(c.secrets.activationId.name, "");  // the source replaced the env default
  EXPECT_EQ(c.secrets.customerId.versionStage, "AWSCURRENT");
  EXPECT_EQ(c.secrets.customerId.endpoint, "http://127.0.0.1:4566");
  EXPECT_EQ(c.secrets.customerId.path, "");
}

TEST(ConfigDefaultsTest, EveryDocumentedEnumValueIsAccepted) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> enums{
      {"runtime: {kind: X}", {"auto", "docker", "containerd"}},
      {"sensor: {pull_policy: X}", {"always", "if-not-present", "never"}},
      {"sensor: {mode: X, args: []}", {"general", "registry", "cicd"}},
      {"registry_auth: {kind: X}", {"none", "auto", "ecr", "acr", "gcr"}},
      {"supervision: {on_stop: X}", {"leave", "stop"}},
      {"platform: {detect: X}", {"auto", "none", "aws", "azure", "gcp"}},
      {"logging: {level: X}", {"trace", "debug", "info", "warn", "error", "critical", "off"}},
      {"logging: {format: X}", {"text", "json"}},
  };
  for (const auto& [pattern, values] : enums) {
    for (const std::string& value : values) {
      std::string yaml = pattern;
      yaml.replace(yaml.find('X'), 1, value);
      EXPECT_TRUE(parseConfig(yaml).ok()) << yaml << ": " << parseConfig(yaml).message();
    }
  }
  EXPECT_TRUE(
      parseConfig("registry_auth: {kind: basic, username: u, password: {source: env, name: REG_PASSWORD}}").ok());
  EXPECT_TRUE(parseConfig("registry_auth: {kind: docker-config, docker_config: /root/.docker/config.json}").ok());
  auto ecr = parseConfig(
      "registry_auth: {kind: ecr, ecr_registry: \"127.0.0.1:5000\", ecr_endpoint: \"http://127.0.0.1:8080\", "
      "ecr_region: eu-west-1}\nsecrets: {refresh_interval: 2s}");
  ASSERT_TRUE(ecr.ok()) << ecr.message();
  EXPECT_EQ(ecr->registryAuth.ecrRegistry, "127.0.0.1:5000");
  EXPECT_EQ(ecr->registryAuth.ecrEndpoint, "http://127.0.0.1:8080");
  EXPECT_EQ(ecr->registryAuth.ecrRegion, "eu-west-1");
  EXPECT_EQ(ecr->secrets.refreshInterval, std::chrono::seconds(2));

  auto cloud = parseConfig(
      "registry_auth: {kind: acr, acr_exchange_endpoint: \"http://127.0.0.1:8081\", azure_client_id: "
      "5e0f7b0c-0000-4000-8000-000000000002}\n"
      "platform: {detect: azure, aws_imds_endpoint: \"http://127.0.0.1:1338\", azure_imds_endpoint: "
      "\"http://127.0.0.1:8082\", gcp_metadata_host: \"127.0.0.1:8083\"}\n"
      "sensor: {log_driver: awslogs, log_options: {awslogs-endpoint: \"http://127.0.0.1:4566\", mode: blocking}}");
  ASSERT_TRUE(cloud.ok()) << cloud.message();
  EXPECT_EQ(cloud->registryAuth.acrExchangeEndpoint, "http://127.0.0.1:8081");
  EXPECT_EQ(cloud->registryAuth.azureClientId, "5e0f7b0c-0000-4000-8000-000000000002");
  EXPECT_EQ(cloud->platform.awsImdsEndpoint, "http://127.0.0.1:1338");
  EXPECT_EQ(cloud->platform.azureImdsEndpoint, "http://127.0.0.1:8082");
  EXPECT_EQ(cloud->platform.gcpMetadataHost, "127.0.0.1:8083");
  EXPECT_EQ(cloud->sensor.logDriver, "awslogs");
  EXPECT_EQ(cloud->sensor.logOptions,
            (std::map<std::string, std::string>{{"awslogs-endpoint", "http://127.0.0.1:4566"}, {"mode", "blocking"}}));
  EXPECT_TRUE(parseConfig("registry_auth: {kind: auto, azure_client_id: abc-1}").ok());
}

TEST(ConfigDefaultsTest, PlatformAndLogDriverDefaults) {
  const Config c;
  EXPECT_EQ(c.platform.detect, "auto");
  EXPECT_EQ(c.platform.awsImdsEndpoint, "");
  EXPECT_EQ(c.sensor.logDriver, "auto");
  EXPECT_TRUE(c.sensor.logOptions.empty());
  // The endpoints are overridable from the environment like every key.
  LoadOptions load;
  load.path = "/nonexistent/agent.yaml";
  load.environment = {{"QCS_PLATFORM_GCP_METADATA_HOST", "127.0.0.1:9"}, {"QCS_SENSOR_LOG_DRIVER", "local"}};
  auto loaded = loadConfig(load);
  ASSERT_TRUE(loaded.ok()) << loaded.message();
  EXPECT_EQ(loaded->platform.gcpMetadataHost, "127.0.0.1:9");
  EXPECT_EQ(loaded->sensor.logDriver, "local");
}

TEST(ConfigDefaultsTest, AcceptsTheWholeRangeOfValidValues) {
  const Config c = parseOk(R"(
runtime: {kind: containerd, endpoint: "unix:///run/k3s/containerd/containerd.sock", host_root: /host, containerd_namespace: k8s.io}
sensor:
  image: "123456789012.dkr.ecr.eu-west-1.amazonaws.com/qualys/qcs-sensor:1.2.3@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  name: qcs_sensor.1
  mode: general
  args: [--perform-sca-scan, --optimize-image-scans, --log-level=3]
  env: {LOG_LEVEL: "3", _PRIVATE: x}
  capabilities: [CAP_SYS_ADMIN, net_admin]
  resources: {cpu_request: "0.5", cpu_limit: 2, memory_request: 1.5Gi, memory_limit: 2G}
  storage_path: /var/lib/qcs
  extra_mounts: [{source: /etc/ssl/certs, target: /etc/ssl/certs, read_only: yes}]
  proxy: {qualys_https_proxy: "http://proxy.corp:3128", https_proxy: "https://[::1]:8443", ca_file: /etc/pki/ca.pem}
http: {listen: "[::1]:0"}
supervision: {stop_timeout: 0s, reconcile_interval: 1s, backoff: {initial: 500ms, max: 500ms, multiplier: 1, jitter: 0}}
)");
  EXPECT_THAT(c.sensor.capabilities, ElementsAre("SYS_ADMIN", "NET_ADMIN"));
  EXPECT_EQ(c.sensor.resources.cpuRequestMilli, 500);
  EXPECT_EQ(c.sensor.resources.memoryRequestBytes, 1'610'612'736);
  EXPECT_EQ(c.sensor.resources.memoryLimitBytes, 2'000'000'000);
  ASSERT_EQ(c.sensor.extraMounts.size(), 1u);
  EXPECT_TRUE(c.sensor.extraMounts[0].readOnly);
  EXPECT_EQ(c.supervision.stopTimeout, milliseconds(0));
  for (const char* image : {"qualys/qcs-sensor", "localhost:5000/sensor", "127.0.0.1:5000/a/b:v1", "sensor",
                            "myregistry.azurecr.io/q/s__x-y.z:V1_2",
                            "gcr.io/p/s@sha256:"
                            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}) {
    EXPECT_TRUE(parseConfig(std::string("sensor: {image: \"") + image + "\"}").ok()) << image;
  }
  for (const char* listen : {"0.0.0.0:9819", "localhost:9819", "[::]:80", "127.0.0.1:0", "node-1.example:65535"}) {
    EXPECT_TRUE(parseConfig(std::string("http: {listen: \"") + listen + "\"}").ok()) << listen;
  }
}

TEST(ConfigDefaultsTest, NullValuesMeanEmpty) {
  const Config c = parseOk("sensor:\n  args:\n  env:\n  storage_path:\nruntime:\n");
  EXPECT_THAT(c.sensor.args, IsEmpty());
  EXPECT_EQ(c.sensor.storagePath, "");
  EXPECT_EQ(c.runtime, Config{}.runtime);
}

// ---------------------------------------------------------------------------------------------
// Validation: one failing document per rule; the error names the key path.

struct RuleCase {
  const char* rule;
  const char* yaml;
  const char* keyPath;      // must appear in the message
  const char* detail = "";  // and so must this, when given
};

class ValidationRuleTest : public ::testing::TestWithParam<RuleCase> {};

TEST_P(ValidationRuleTest, RejectsAndNamesTheKey) {
  const RuleCase& c = GetParam();
  const std::string message = parseError(c.yaml);
  EXPECT_THAT(message, HasSubstr(c.keyPath)) << c.rule;
  EXPECT_THAT(message, HasSubstr(c.detail)) << c.rule;
  EXPECT_THAT(message, HasSubstr("agent.yaml line")) << c.rule;
}

const std::string kDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

INSTANTIATE_TEST_SUITE_P(
    Rules, ValidationRuleTest,
    ::testing::Values(
        // unknown keys and types
        RuleCase{"unknown key", "sensor:\n  imagee: x\n", "sensor.imagee", "did you mean sensor.image"},
        RuleCase{"unknown section", "sensorr: {}\n", "sensorr", "did you mean sensor"},
        RuleCase{"unknown nested key", "supervision: {backoff: {initial: 1s, maximum: 2m}}",
                 "supervision.backoff.maximum"},
        RuleCase{"unknown secret field", "secrets: {activation_id: {source: env, nmae: X}}",
                 "secrets.activation_id.nmae", "secrets.activation_id.name"},
        RuleCase{"unknown mount field", "sensor: {extra_mounts: [{source: /a, target: /b, readonly: true}]}",
                 "sensor.extra_mounts[0].readonly", "read_only"},
        RuleCase{"duplicate key", "sensor:\n  image: a\n  image: b\n", "sensor.image", "twice"},
        RuleCase{"map where a scalar belongs", "sensor: {image: {name: x}}", "sensor.image", "single value"},
        RuleCase{"list where a scalar belongs", "logging: {level: [info]}", "logging.level", "single value"},
        RuleCase{"scalar where a section belongs", "sensor: x", "sensor", "map"},
        RuleCase{"string where a list belongs", "sensor: {args: --perform-sca-scan}", "sensor.args", "list"},
        RuleCase{"non-string list item", "sensor: {capabilities: [{a: b}]}", "sensor.capabilities[0]", "string"},
        RuleCase{"string where a map belongs", "sensor: {env: FOO=1}", "sensor.env", "map"},
        RuleCase{"non-boolean read_only", "sensor: {extra_mounts: [{source: /a, target: /b, read_only: maybe}]}",
                 "sensor.extra_mounts[0].read_only", "\"maybe\""},
        RuleCase{"non-map mount", "sensor: {extra_mounts: [/a:/b]}", "sensor.extra_mounts[0]", "map"},
        RuleCase{"bad duration", "supervision: {reconcile_interval: 30}", "supervision.reconcile_interval", "unit"},
        RuleCase{"bad quantity", "sensor: {resources: {cpu_limit: lots}}", "sensor.resources.cpu_limit", "\"lots\""},
        RuleCase{"bad number", "supervision: {backoff: {multiplier: double}}", "supervision.backoff.multiplier",
                 "number"},
        // enums
        RuleCase{"runtime.kind", "runtime: {kind: podman}", "runtime.kind", "auto, docker, containerd"},
        RuleCase{"pull_policy", "sensor:\n  pull_policy: sometimes\n", "sensor.pull_policy",
                 "\"sometimes\" is not one of always, if-not-present, never (agent.yaml line 2)"},
        RuleCase{"pull_policy suggestion", "sensor: {pull_policy: IfNotPresent}", "sensor.pull_policy",
                 "if-not-present?"},
        RuleCase{"mode", "sensor: {mode: both}", "sensor.mode", "general, registry, cicd"},
        RuleCase{"registry_auth.kind", "registry_auth: {kind: oauth}", "registry_auth.kind", "docker-config"},
        RuleCase{"on_stop", "supervision: {on_stop: kill}", "supervision.on_stop", "leave, stop"},
        RuleCase{"platform.detect", "platform: {detect: ibm}", "platform.detect", "aws, azure, gcp"},
        RuleCase{"logging.level", "logging: {level: verbose}", "logging.level", "critical"},
        RuleCase{"logging.format", "logging: {format: xml}", "logging.format", "text, json"},
        // runtime
        RuleCase{"host_root relative", "runtime: {host_root: host}", "runtime.host_root", "absolute"},
        RuleCase{"host_root empty", "runtime: {host_root: \"\"}", "runtime.host_root", "empty"},
        RuleCase{"endpoint relative", "runtime: {endpoint: run/docker.sock}", "runtime.endpoint", "absolute"},
        RuleCase{"endpoint tcp", "runtime: {endpoint: \"tcp://10.0.0.1:2375\"}", "runtime.endpoint",
                 "only unix sockets"},
        RuleCase{"endpoint unix relative", "runtime: {endpoint: \"unix://run/x.sock\"}", "runtime.endpoint",
                 "absolute"},
        RuleCase{"namespace", "runtime: {containerd_namespace: -qualys}", "runtime.containerd_namespace",
                 "[A-Za-z0-9]"},
        RuleCase{"namespace chars", "runtime: {containerd_namespace: \"qua lys\"}", "runtime.containerd_namespace"},
        // sensor identity
        RuleCase{"image empty", "sensor: {image: \"\"}", "sensor.image", "empty"},
        RuleCase{"image uppercase", "sensor: {image: Qualys/sensor}", "sensor.image", "lowercase"},
        RuleCase{"image empty tag", "sensor: {image: \"qualys/sensor:\"}", "sensor.image", "tag"},
        RuleCase{"image empty component", "sensor: {image: qualys//sensor}", "sensor.image"},
        RuleCase{"image bad digest", "sensor: {image: \"qualys/sensor@sha256:abc\"}", "sensor.image", "sha256"},
        RuleCase{"image bad registry", "sensor: {image: \"reg_istry.io:5000/a\"}", "sensor.image", "registry"},
        RuleCase{"image space", "sensor: {image: \"qualys/sensor:bad tag\"}", "sensor.image"},
        RuleCase{"container name", "sensor: {name: _sensor}", "sensor.name", "[a-zA-Z0-9]"},
        RuleCase{"container name chars", "sensor: {name: \"qualys/sensor\"}", "sensor.name"},
        RuleCase{"pod_url http", "sensor: {pod_url: \"http://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor\"}",
                 "sensor.pod_url", "https://"},
        RuleCase{"pod_url no host", "sensor: {pod_url: \"https:///ContainerSensor\"}", "sensor.pod_url", "host"},
        RuleCase{"pod_url junk", "sensor: {pod_url: qualys.com}", "sensor.pod_url"},
        // args
        RuleCase{"arg without dash", "sensor: {args: [perform-sca-scan]}", "sensor.args[0]", "start with \"-\""},
        RuleCase{"empty arg", "sensor: {args: [--a, \"\"]}", "sensor.args[1]"},
        RuleCase{"mode flag in args", "sensor: {args: [--registry-sensor]}", "sensor.args[0]", "sensor.mode"},
        RuleCase{"cicd flag in args", "sensor: {args: [--cicd-deployed-sensor]}", "sensor.args[0]", "sensor.mode"},
        RuleCase{"storage contradiction",
                 "sensor:\n  storage_path: /var/lib/qcs\n  args: [--sensor-without-persistent-storage]\n",
                 "sensor.args[0]", "sensor.storage_path"},
        RuleCase{"derived storage driver", "sensor: {args: [--storage-driver-type=overlay2]}", "sensor.args[0]",
                 "derive"},
        RuleCase{"derived runtime", "sensor: {args: [--perform-sca-scan, --container-runtime]}", "sensor.args[1]",
                 "derive"},
        // env
        RuleCase{"env bad name", "sensor: {env: {\"1ABC\": x}}", "sensor.env.1ABC", "variable name"},
        RuleCase{"env ACTIVATIONID", "sensor: {env: {ACTIVATIONID: x}}", "sensor.env.ACTIVATIONID",
                 "secrets.activation_id"},
        RuleCase{"env CUSTOMERID", "sensor: {env: {CUSTOMERID: x}}", "sensor.env.CUSTOMERID", "secrets.customer_id"},
        RuleCase{"env POD_URL", "sensor: {env: {POD_URL: x}}", "sensor.env.POD_URL", "sensor.pod_url"},
        RuleCase{"env qualys proxy", "sensor: {env: {qualys_https_proxy: x}}", "sensor.env.qualys_https_proxy",
                 "sensor.proxy.qualys_https_proxy"},
        RuleCase{"env https_proxy", "sensor: {env: {https_proxy: x}}", "sensor.env.https_proxy",
                 "sensor.proxy.https_proxy"},
        // capabilities
        RuleCase{"unknown capability", "sensor: {capabilities: [SYS_ADMIN, CAP_SYS_ADMN]}", "sensor.capabilities[1]",
                 "SYS_ADMIN"},
        RuleCase{"duplicate capability", "sensor: {capabilities: [SYS_ADMIN, cap_sys_admin]}", "sensor.capabilities[1]",
                 "twice"},
        // resources
        RuleCase{"cpu request above limit", "sensor: {resources: {cpu_request: 2, cpu_limit: 500m}}",
                 "sensor.resources.cpu_request", "sensor.resources.cpu_limit"},
        RuleCase{"memory request above limit", "sensor: {resources: {memory_request: 2Gi, memory_limit: 1Gi}}",
                 "sensor.resources.memory_request", "sensor.resources.memory_limit"},
        RuleCase{"zero cpu request", "sensor: {resources: {cpu_request: 0}}", "sensor.resources.cpu_request", "zero"},
        RuleCase{"zero cpu limit", "sensor: {resources: {cpu_limit: \"0\"}}", "sensor.resources.cpu_limit", "zero"},
        RuleCase{"zero memory request", "sensor: {resources: {memory_request: 0}}", "sensor.resources.memory_request"},
        RuleCase{"zero memory limit", "sensor: {resources: {memory_limit: 0, memory_request: 0}}",
                 "sensor.resources.memory_limit"},
        RuleCase{"tiny memory limit", "sensor: {resources: {memory_request: 1Mi, memory_limit: 4Mi}}",
                 "sensor.resources.memory_limit", "6Mi"},
        RuleCase{"negative cpu", "sensor: {resources: {cpu_request: -1}}", "sensor.resources.cpu_request", "negative"},
        // paths and mounts
        RuleCase{"storage_path relative", "sensor: {storage_path: data, args: []}", "sensor.storage_path", "absolute"},
        RuleCase{"ca_file relative", "sensor: {proxy: {ca_file: ca.pem}}", "sensor.proxy.ca_file", "absolute"},
        RuleCase{"mount source relative", "sensor: {extra_mounts: [{source: etc, target: /etc/x}]}",
                 "sensor.extra_mounts[0].source", "absolute"},
        RuleCase{"mount target missing", "sensor: {extra_mounts: [{source: /etc/x}]}", "sensor.extra_mounts[0].target",
                 "required"},
        RuleCase{"mount target duplicate",
                 "sensor: {extra_mounts: [{source: /a, target: /x}, {source: /b, target: /x/}]}",
                 "sensor.extra_mounts[1].target", "already"},
        RuleCase{"mount target reserved", "sensor: {extra_mounts: [{source: /a, target: /var/lib/docker}]}",
                 "sensor.extra_mounts[0].target", "agent mounts"},
        RuleCase{"mount target reserved ca",
                 "sensor: {extra_mounts: [{source: /a, target: /etc/qualys/qpa/cert/custom-ca.crt}]}",
                 "sensor.extra_mounts[0].target", "agent mounts"},
        // proxies
        RuleCase{"proxy scheme", "sensor: {proxy: {https_proxy: \"socks5://proxy:1080\"}}", "sensor.proxy.https_proxy",
                 "http://"},
        RuleCase{"proxy no scheme", "sensor: {proxy: {qualys_https_proxy: \"proxy:3128\"}}",
                 "sensor.proxy.qualys_https_proxy"},
        RuleCase{"proxy no host", "sensor: {proxy: {https_proxy: \"http://:3128\"}}", "sensor.proxy.https_proxy",
                 "host"},
        // secrets
        RuleCase{"secret source unknown", "secrets: {activation_id: {source: vault, name: X}}",
                 "secrets.activation_id.source", "env, file, aws-secretsmanager"},
        RuleCase{"secret source missing", "secrets: {customer_id: {source: \"\"}}", "secrets.customer_id.source",
                 "required"},
        RuleCase{"env secret without name", "secrets: {activation_id: {source: env}}", "secrets.activation_id.name",
                 "required"},
        RuleCase{"env secret bad name", "secrets: {activation_id: {source: env, name: \"MY-ID\"}}",
                 "secrets.activation_id.name", "variable name"},
        RuleCase{"file secret without path", "secrets: {customer_id: {source: file}}", "secrets.customer_id.path",
                 "required"},
        RuleCase{"file secret relative path", "secrets: {customer_id: {source: file, path: id.txt}}",
                 "secrets.customer_id.path", "absolute"},
        RuleCase{"aws secret without id", "secrets: {customer_id: {source: aws-secretsmanager, region: eu-west-1}}",
                 "secrets.customer_id.secret_id", "required"},
        RuleCase{"aws secret bad endpoint",
                 "secrets: {customer_id: {source: aws-secretsmanager, secret_id: x, endpoint: localhost}}",
                 "secrets.customer_id.endpoint", "http://"},
        RuleCase{"field of another source", "secrets: {activation_id: {source: file, path: /x, name: X}}",
                 "secrets.activation_id.name", "not used with source file"},
        RuleCase{"field without source merges and conflicts", "secrets: {activation_id: {path: /run/x}}",
                 "secrets.activation_id.path", "source env"},
        RuleCase{"secret ref as a scalar", "secrets: {activation_id: QUALYS_ACTIVATION_ID}", "secrets.activation_id",
                 "map"},
        // registry auth
        RuleCase{"basic without username", "registry_auth: {kind: basic, password: {source: env, name: P}}",
                 "registry_auth.username", "basic"},
        RuleCase{"basic without password", "registry_auth: {kind: basic, username: u}", "registry_auth.password.source",
                 "required"},
        RuleCase{"basic with bad password ref", "registry_auth: {kind: basic, username: u, password: {source: file}}",
                 "registry_auth.password.path", "required"},
        RuleCase{"docker-config without path", "registry_auth: {kind: docker-config}", "registry_auth.docker_config",
                 "required"},
        RuleCase{"docker-config relative", "registry_auth: {kind: docker-config, docker_config: config.json}",
                 "registry_auth.docker_config", "absolute"},
        RuleCase{"username with ecr", "registry_auth: {kind: ecr, username: u}", "registry_auth.username", "basic"},
        RuleCase{"password with none", "registry_auth: {password: {source: env, name: P}}", "registry_auth.password",
                 "basic"},
        RuleCase{"docker_config with gcr", "registry_auth: {kind: gcr, docker_config: /x.json}",
                 "registry_auth.docker_config", "docker-config"},
        RuleCase{"acr_exchange_endpoint with ecr", "registry_auth: {kind: ecr, acr_exchange_endpoint: \"http://x:1\"}",
                 "registry_auth.acr_exchange_endpoint", "kind acr or auto"},
        RuleCase{"azure_client_id with none", "registry_auth: {kind: none, azure_client_id: abc}",
                 "registry_auth.azure_client_id", "kind acr or auto"},
        RuleCase{"azure_imds_endpoint not a URL", "platform: {azure_imds_endpoint: 169.254.169.254}",
                 "platform.azure_imds_endpoint", "http"},
        RuleCase{"gcp_metadata_host with a scheme", "platform: {gcp_metadata_host: \"http://metadata\"}",
                 "platform.gcp_metadata_host", "host[:port]"},
        RuleCase{"log_driver with a space", "sensor: {log_driver: \"json file\"}", "sensor.log_driver", "awslogs"},
        RuleCase{"log_options not a map", "sensor: {log_options: [a, b]}", "sensor.log_options", "map"},
        RuleCase{"ecr_endpoint with basic", "registry_auth: {kind: none, ecr_endpoint: \"http://127.0.0.1:1\"}",
                 "registry_auth.ecr_endpoint", "kind ecr"},
        RuleCase{"ecr_endpoint not a URL", "registry_auth: {kind: ecr, ecr_endpoint: api.ecr}",
                 "registry_auth.ecr_endpoint", "http"},
        RuleCase{"ecr_registry with a path", "registry_auth: {kind: ecr, ecr_registry: \"host/x\"}",
                 "registry_auth.ecr_registry", "host"},
        RuleCase{"refresh interval too short", "secrets: {refresh_interval: 500ms}", "secrets.refresh_interval",
                 "at least 1s"},
        // supervision
        RuleCase{"initial zero", "supervision: {backoff: {initial: 0s}}", "supervision.backoff.initial", "zero"},
        RuleCase{"max below initial", "supervision: {backoff: {initial: 10s, max: 5s}}", "supervision.backoff.max",
                 "supervision.backoff.initial"},
        RuleCase{"multiplier below one", "supervision: {backoff: {multiplier: 0.9}}", "supervision.backoff.multiplier",
                 "at least 1"},
        RuleCase{"jitter one", "supervision: {backoff: {jitter: 1}}", "supervision.backoff.jitter", "less than 1"},
        RuleCase{"jitter negative", "supervision: {backoff: {jitter: -0.1}}", "supervision.backoff.jitter"},
        RuleCase{"multiplier nan", "supervision: {backoff: {multiplier: .nan}}", "supervision.backoff.multiplier"},
        RuleCase{"reset_after zero", "supervision: {backoff: {reset_after: 0ms}}", "supervision.backoff.reset_after",
                 "zero"},
        RuleCase{"reconcile too short", "supervision: {reconcile_interval: 999ms}", "supervision.reconcile_interval",
                 "1s"},
        RuleCase{"negative stop timeout", "supervision: {stop_timeout: -1s}", "supervision.stop_timeout", "negative"},
        RuleCase{"negative quiet_after", "supervision: {health: {quiet_after: -1s}}", "supervision.health.quiet_after",
                 "negative"},
        RuleCase{"negative startup_grace", "supervision: {health: {startup_grace: -1s}}",
                 "supervision.health.startup_grace", "negative"},
        RuleCase{"probe period too short", "supervision: {health: {period: 0s}}", "supervision.health.period", "1s"},
        RuleCase{"probe timeout zero", "supervision: {health: {timeout: 0s}}", "supervision.health.timeout", "zero"},
        RuleCase{"probe timeout not below period", "supervision: {health: {period: 5s, timeout: 5s}}",
                 "supervision.health.timeout", "less than supervision.health.period"},
        RuleCase{"probe timeout too long", "supervision: {health: {period: 5m, timeout: 2m}}",
                 "supervision.health.timeout", "at most 1m"},
        RuleCase{"failure_threshold zero", "supervision: {health: {failure_threshold: 0}}",
                 "supervision.health.failure_threshold", "at least 1"},
        RuleCase{"failure_threshold fraction", "supervision: {health: {failure_threshold: 1.5}}",
                 "supervision.health.failure_threshold", "whole number"},
        RuleCase{"exec command not a list", "supervision: {health: {exec: {command: \"true\"}}}",
                 "supervision.health.exec.command", "list"},
        RuleCase{"exec program empty", "supervision: {health: {exec: {command: [\"\", x]}}}",
                 "supervision.health.exec.command", "empty"},
        // http
        RuleCase{"listen without port", "http: {listen: 127.0.0.1}", "http.listen", "port"},
        RuleCase{"listen port range", "http: {listen: \"127.0.0.1:70000\"}", "http.listen", "0-65535"},
        RuleCase{"listen bare ipv6", "http: {listen: \"::1:9819\"}", "http.listen", "brackets"},
        RuleCase{"listen bad ipv4", "http: {listen: \"256.1.1.1:80\"}", "http.listen"},
        RuleCase{"listen bad ipv6", "http: {listen: \"[fe80::zz]:80\"}", "http.listen", "IPv6"},
        RuleCase{"listen empty host", "http: {listen: \":9819\"}", "http.listen", "host"},
        RuleCase{"listen bad hostname", "http: {listen: \"my_host:80\"}", "http.listen"},
        // document shape
        RuleCase{"top-level list", "- runtime\n- sensor\n", "(top level)", "map"}),
    [](const ::testing::TestParamInfo<RuleCase>& testInfo) {
      std::string name;
      for (char c : std::string(testInfo.param.rule)) name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return name + "_" + std::to_string(testInfo.index);
    });

TEST(ValidationTest, ReportsEveryProblemAtOnceOneLinePerProblem) {
  const std::string message = parseError(R"(
sensor:
  pull_policy: sometimes
  imagee: x
  resources: {cpu_request: 2, cpu_limit: 1}
logging:
  level: loud
supervision:
  reconcile_interval: 30
)");
  const auto problems = lines(message);
  ASSERT_EQ(problems.size(), 5u) << message;
  EXPECT_THAT(message, HasSubstr("sensor.pull_policy: \"sometimes\" is not one of always, if-not-present, never "
                                 "(agent.yaml line 3)"));
  EXPECT_THAT(message, HasSubstr("sensor.imagee"));
  EXPECT_THAT(message, HasSubstr("sensor.resources.cpu_request"));
  EXPECT_THAT(message, HasSubstr("logging.level"));
  EXPECT_THAT(message, HasSubstr("supervision.reconcile_interval"));
  for (const std::string& problem : problems) EXPECT_THAT(problem, HasSubstr("(agent.yaml line ")) << problem;
}

TEST(ValidationTest, SyntaxErrorNamesTheLine) {
  auto config = parseConfig("sensor:\n  image: [unclosed\n");
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(config.message(), AllOf(HasSubstr("agent.yaml line"), HasSubstr("YAML")));
}

TEST(ValidationTest, NeverEchoesValuesThatMayBeSecret) {
  const std::string message = parseError(R"(
registry_auth:
  kind: basic
  username: robot
  password: hunter2
sensor:
  env: {TOKEN: [hunter3]}
  proxy: {https_proxy: "ftp://user:hunter4@proxy:21"}
)");
  EXPECT_THAT(message, HasSubstr("registry_auth.password"));
  EXPECT_THAT(message, HasSubstr("sensor.env.TOKEN"));
  EXPECT_THAT(message, HasSubstr("sensor.proxy.https_proxy"));
  for (const char* secret : {"hunter2", "hunter3", "hunter4"}) EXPECT_THAT(message, Not(HasSubstr(secret)));
}

TEST(ValidationTest, OptimizeImageScansOutsideGeneralModeIsAWarning) {
  std::vector<std::string> warnings;
  ASSERT_TRUE(parseConfig("sensor: {mode: registry, args: [--optimize-image-scans]}", &warnings).ok());
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], AllOf(HasSubstr("sensor.args[0]"), HasSubstr("general"), HasSubstr("agent.yaml line 1")));

  warnings.clear();
  ASSERT_TRUE(parseConfig("sensor: {mode: general}", &warnings).ok());
  EXPECT_THAT(warnings, IsEmpty());

  warnings.clear();  // SPEC's own defaults combine registry mode with the flag: a warning, not an error
  ASSERT_TRUE(parseConfig("", &warnings).ok());
  EXPECT_EQ(warnings.size(), 1u);
}

TEST(ValidationTest, CapabilitiesAreNormalised) {
  const Config c = parseOk("sensor: {capabilities: [cap_net_admin, Sys_Ptrace, CAP_CHOWN]}");
  EXPECT_THAT(c.sensor.capabilities, ElementsAre("NET_ADMIN", "SYS_PTRACE", "CHOWN"));
}

TEST(ValidationTest, UnknownKeySuggestsTheClosestKnownKey) {
  EXPECT_THAT(parseError("sensor: {imagee: x}"), HasSubstr("sensor.imagee: unknown key; did you mean sensor.image?"));
  EXPECT_THAT(parseError("sensor: {pullPolicy: always}"), HasSubstr("did you mean sensor.pull_policy?"));
  // A key in the wrong section: the same name elsewhere.
  EXPECT_THAT(parseError("image: qualys/qcs-sensor:1.0"), HasSubstr("did you mean sensor.image?"));
  // Nothing close: no guess.
  EXPECT_THAT(parseError("sensor: {frobnicate: 1}"), Not(HasSubstr("did you mean")));
}

// ---------------------------------------------------------------------------------------------
// Files, environment and --set

TEST_F(LoadTest, MissingDefaultFileMeansDefaults) { EXPECT_EQ(loadOk({}), Config{}); }

TEST_F(LoadTest, MissingExplicitFileIsAnErrorNamingThePath) {
  auto config = load({}, {}, dir_.missing());
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), HasSubstr(dir_.missing()));
}

TEST_F(LoadTest, DirectoryIsAnError) {
  auto config = load({}, {}, dir_.path().string());
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), HasSubstr(dir_.path().string()));
}

TEST_F(LoadTest, ReadsTheFileAndNamesItInProblems) {
  const std::string path = dir_.file("agent.yaml", "sensor:\n  image: qualys/qcs-sensor:1.2\n  mode: sometimes\n");
  auto config = load({}, {}, path);
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(),
              HasSubstr("sensor.mode: \"sometimes\" is not one of general, registry, cicd (" + path + " line 3)"));
  const std::string good = dir_.file("good.yaml", "sensor:\n  image: qualys/qcs-sensor:1.2\n");
  EXPECT_EQ(loadOk({}, {}, good).sensor.image, "qualys/qcs-sensor:1.2");
}

TEST_F(LoadTest, EnvironmentBeatsTheFileAndSetBeatsTheEnvironment) {
  const std::string path =
      dir_.file("agent.yaml", "sensor:\n  pull_policy: never\n  image: file/image\nlogging: {level: debug}\n");
  const Config c = loadOk({{"QCS_SENSOR_PULL_POLICY", "always"}, {"QCS_SENSOR_IMAGE", "env/image"}},
                          {{"sensor.image", "set/image"}}, path);
  EXPECT_EQ(c.sensor.pullPolicy, "always");  // env over file
  EXPECT_EQ(c.sensor.image, "set/image");    // --set over env
  EXPECT_EQ(c.logging.level, "debug");       // file over default
}

TEST_F(LoadTest, LaterSetWins) {
  EXPECT_EQ(loadOk({}, {{"logging.level", "debug"}, {"logging.level", "warn"}}).logging.level, "warn");
}

TEST_F(LoadTest, EveryOverridableKeyHasAnEnvironmentVariable) {
  const Config c = loadOk({{"QCS_SUPERVISION_BACKOFF_INITIAL", "2s"},
                           {"QCS_SENSOR_RESOURCES_MEMORY_LIMIT", "2Gi"},
                           {"QCS_SUPERVISION_BACKOFF_JITTER", "0.25"},
                           {"QCS_RUNTIME_HOST_ROOT", "/host"},
                           {"QCS_HTTP_LISTEN", "0.0.0.0:9000"}});
  EXPECT_EQ(c.supervision.backoff.initial, std::chrono::seconds(2));
  EXPECT_EQ(c.sensor.resources.memoryLimitBytes, 2LL << 30);
  EXPECT_EQ(c.supervision.backoff.jitter, 0.25);
  EXPECT_EQ(c.runtime.hostRoot, "/host");
  EXPECT_EQ(c.http.listen, "0.0.0.0:9000");
}

TEST_F(LoadTest, UnknownQcsVariablesAndOthersAreIgnored) {
  const Config c =
      loadOk({{"QCS_SOMETHING_ELSE", "x"}, {"QCS_SENSOR_ENV", "x"}, {"PATH", "/bin"}, {"SENSOR_IMAGE", "x"}});
  EXPECT_EQ(c, Config{});
}

TEST_F(LoadTest, NearMissVariableIsAWarning) {
  loadOk({{"QCS_SENSOR_PULLPOLICY", "always"}});
  EXPECT_THAT(warnings_,
              ::testing::Contains(AllOf(HasSubstr("QCS_SENSOR_PULLPOLICY"), HasSubstr("QCS_SENSOR_PULL_POLICY"))));
}

TEST_F(LoadTest, ProblemsNameTheirVariableOrSet) {
  auto config = load({{"QCS_SUPERVISION_BACKOFF_INITIAL", "30"}, {"QCS_LOGGING_LEVEL", "loud"}},
                     {{"sensor.pull_policy", "sometimes"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), HasSubstr("supervision.backoff.initial: \"30\" has a number without a unit"));
  EXPECT_THAT(config.message(), HasSubstr("(environment QCS_SUPERVISION_BACKOFF_INITIAL)"));
  EXPECT_THAT(config.message(), HasSubstr("logging.level: \"loud\" is not one of"));
  EXPECT_THAT(config.message(), HasSubstr("(environment QCS_LOGGING_LEVEL)"));
  EXPECT_THAT(config.message(),
              HasSubstr("sensor.pull_policy: \"sometimes\" is not one of always, if-not-present, never (--set)"));
}

TEST_F(LoadTest, ABadFileValueFixedByTheEnvironmentIsFine) {
  const std::string path = dir_.file("agent.yaml", "logging: {level: loud}\n");
  EXPECT_EQ(loadOk({{"QCS_LOGGING_LEVEL", "warn"}}, {}, path).logging.level, "warn");
}

TEST_F(LoadTest, UnknownSetKeyIsAnErrorListingCloseMatches) {
  auto config = load({}, {{"sensor.imag", "x"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(),
              AllOf(HasSubstr("sensor.imag: unknown key"), HasSubstr("sensor.image"), HasSubstr("--set")));

  config = load({}, {{"sensor.env", "A=1"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), AllOf(HasSubstr("sensor.env"), HasSubstr("YAML")));

  config = load({}, {{"secrets.activation_id", "env"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), HasSubstr("secrets.activation_id.source"));

  config = load({}, {{"registry_auth.password", "hunter2"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), AllOf(HasSubstr("registry_auth.password"), Not(HasSubstr("hunter2"))));
}

TEST_F(LoadTest, SensorArgsAsACommaSeparatedList) {
  EXPECT_THAT(loadOk({{"QCS_SENSOR_ARGS", "--perform-sca-scan, --enable-console-logs"}}).sensor.args,
              ElementsAre("--perform-sca-scan", "--enable-console-logs"));
  EXPECT_THAT(loadOk({}, {{"sensor.args", ""}}).sensor.args, IsEmpty());
  auto config = load({{"QCS_SENSOR_ARGS", "--a,b"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), AllOf(HasSubstr("sensor.args[1]"), HasSubstr("environment QCS_SENSOR_ARGS")));
}

TEST_F(LoadTest, SettingASecretSourceReplacesTheWholeRef) {
  // The file's {source: file, path} replaces the env default entirely.
  const std::string path =
      dir_.file("agent.yaml", "secrets:\n  activation_id: {source: file, path: /run/secrets/id}\n");
  Config c = loadOk({}, {}, path);
  EXPECT_EQ(c.secrets.activationId, (SecretRef{"file", "", "/run/secrets/id", "", "", "", "", ""}));

  // The environment switches it back: the file's path goes away.
  c = loadOk({{"QCS_SECRETS_ACTIVATION_ID_SOURCE", "env"}, {"QCS_SECRETS_ACTIVATION_ID_NAME", "ACT_ID"}}, {}, path);
  EXPECT_EQ(c.secrets.activationId, (SecretRef{"env", "ACT_ID", "", "", "", "", "", ""}));

  // --set in any order within the layer.
  c = loadOk({}, {{"secrets.customer_id.secret_id", "qcs"}, {"secrets.customer_id.source", "aws-secretsmanager"}});
  EXPECT_EQ(c.secrets.customerId, (SecretRef{"aws-secretsmanager", "", "", "qcs", "", "", "", ""}));

  // A field without a source amends the ref in place.
  c = loadOk({{"QCS_SECRETS_ACTIVATION_ID_NAME", "OTHER"}});
  EXPECT_EQ(c.secrets.activationId, (SecretRef{"env", "OTHER", "", "", "", "", "", ""}));
}

TEST_F(LoadTest, MissingSecretFieldBlamesWhereTheSourceWasSet) {
  auto config = load({{"QCS_SECRETS_CUSTOMER_ID_SOURCE", "aws-secretsmanager"}});
  ASSERT_FALSE(config.ok());
  EXPECT_THAT(config.message(), HasSubstr("secrets.customer_id.secret_id: is required"));
  EXPECT_THAT(config.message(), HasSubstr("(environment QCS_SECRETS_CUSTOMER_ID_SOURCE)"));
}

TEST(OverridableKeysTest, CoverEveryScalarWithUniqueVariables) {
  const auto& keys = overridableKeys();
  for (const char* key : {"runtime.kind",
                          "runtime.host_root",
                          "runtime.containerd_namespace",
                          "sensor.pull_policy",
                          "sensor.pod_url",
                          "sensor.args",
                          "sensor.storage_path",
                          "sensor.proxy.ca_file",
                          "sensor.resources.memory_limit",
                          "secrets.activation_id.source",
                          "secrets.activation_id.name",
                          "secrets.activation_id.path",
                          "secrets.customer_id.secret_id",
                          "registry_auth.username",
                          "registry_auth.password.source",
                          "registry_auth.password.name",
                          "registry_auth.password.path",
                          "registry_auth.docker_config",
                          "supervision.backoff.initial",
                          "supervision.backoff.reset_after",
                          "supervision.stop_timeout",
                          "supervision.health.exec.command",
                          "supervision.health.quiet_after",
                          "supervision.health.failure_threshold",
                          "platform.detect",
                          "http.listen",
                          "logging.format"}) {
    EXPECT_THAT(keys, ::testing::Contains(std::string(key)));
  }
  for (const char* yamlOnly : {"sensor.env", "sensor.capabilities", "sensor.extra_mounts"}) {
    EXPECT_THAT(keys, Not(::testing::Contains(std::string(yamlOnly))));
  }
  std::set<std::string> names;
  for (const std::string& key : keys) EXPECT_TRUE(names.insert(envNameForKey(key)).second) << key;
  EXPECT_EQ(keys.front(), "runtime.kind");  // SPEC order
  EXPECT_EQ(keys.back(), "logging.format");
}

TEST(OverridableKeysTest, EnvironmentNames) {
  EXPECT_EQ(envNameForKey("sensor.image"), "QCS_SENSOR_IMAGE");
  EXPECT_EQ(envNameForKey("sensor.pull_policy"), "QCS_SENSOR_PULL_POLICY");
  EXPECT_EQ(envNameForKey("supervision.backoff.initial"), "QCS_SUPERVISION_BACKOFF_INITIAL");
  EXPECT_EQ(envNameForKey("secrets.activation_id.source"), "QCS_SECRETS_ACTIVATION_ID_SOURCE");
}

// ---------------------------------------------------------------------------------------------
// Rendering

Config customConfig() {
  Config c;
  c.runtime.kind = "containerd";
  c.runtime.endpoint = "unix:///run/k3s/containerd/containerd.sock";
  c.runtime.hostRoot = "/host";
  c.runtime.containerdNamespace = "k8s.io";
  c.sensor.image = "myregistry.azurecr.io/qualys/qcs-sensor:1.2.3@" + kDigest;
  c.sensor.pullPolicy = "always";
  c.sensor.name = "qcs.sensor_1";
  c.sensor.mode = "general";
  c.sensor.podUrl = "https://cmsqagpublic.qg3.apps.qualys.com:443/ContainerSensor";
  c.sensor.args = {"--perform-sca-scan", "--log-level=3"};
  c.sensor.env = {{"LOG_LEVEL", "3"},  {"EMPTY", ""},      {"TRICKY", "a: b # c, \"d\" 'e'\n~"},
                  {"NULLISH", "null"}, {"BOOLISH", "yes"}, {"NUMBER", "0x10"}};
  c.sensor.capabilities = {"SYS_ADMIN", "NET_RAW"};
  c.sensor.resources = {100, 1500, 6LL << 20, 1'500'000'000};
  c.sensor.storagePath = "/var/lib/qcs";
  c.sensor.extraMounts = {{"/etc/ssl/certs", "/etc/ssl/certs", true}, {"/srv/with space", "/mnt/x:y", false}};
  c.sensor.proxy = {"http://proxy.corp:3128", "https://[::1]:8443/", "/etc/pki/ca.pem"};
  c.secrets.activationId = {
      "aws-secretsmanager", "",          "",           "arn:aws:secretsmanager:eu-west-1:1:secret:x",
      "ACTIVATIONID",       "eu-west-1", "AWSCURRENT", "http://127.0.0.1:4566"};
  c.secrets.customerId = {"env", "CUSTOMER_ID", "", "", "", "", "", ""};
  c.registryAuth.kind = "basic";
  c.registryAuth.username = "robot$qcs";
  c.registryAuth.password = {"file", "", "/run/secrets/registry-password", "", "", "", "", ""};
  c.supervision.backoff = {milliseconds(1500), std::chrono::hours(1), 1.5, 0.0, std::chrono::minutes(90)};
  c.supervision.reconcileInterval = std::chrono::seconds(61);
  c.supervision.onStop = "stop";
  c.supervision.stopTimeout = milliseconds(0);
  c.supervision.health = {{"/bin/sh", "-c", "test ! -e /standin/unhealthy"},
                          milliseconds(90000),
                          milliseconds(1500),
                          milliseconds(5000),
                          milliseconds(2500),
                          4};
  c.platform.detect = "azure";
  c.http.listen = "[::1]:0";
  c.logging = {"critical", "json"};
  return c;
}

// The text value of `key` in a rendered document ("" when not rendered); lists comma-joined.
std::string renderedValue(const YAML::Node& root, const std::string& key) {
  YAML::Node node = YAML::Clone(root);
  std::stringstream path(key);
  for (std::string part; std::getline(path, part, '.');) {
    if (!node.IsMap() || !node[part]) return "";
    node = YAML::Node(node[part]);
  }
  if (!node.IsSequence()) return node.Scalar();
  std::string joined;
  for (const auto& item : node) joined += (joined.empty() ? "" : ",") + item.Scalar();
  return joined;
}

TEST(OverridableKeysTest, EachKeyAcceptsItsOwnRenderedValue) {
  // Setting any key to the value render shows for it changes nothing, from --set and from the
  // environment. (A secret-ref `source` replaces its ref, so it is set with its siblings.)
  TempDir dir;
  const Config original = customConfig();
  const YAML::Node rendered = YAML::Load(renderConfigYaml(original));
  for (const std::string& key : overridableKeys()) {
    std::vector<std::pair<std::string, std::string>> overrides{{key, renderedValue(rendered, key)}};
    if (key.ends_with(".source")) {
      const std::string prefix = key.substr(0, key.size() - std::string("source").size());
      for (const std::string& sibling : overridableKeys()) {
        if (sibling.starts_with(prefix) && sibling != key)
          overrides.emplace_back(sibling, renderedValue(rendered, sibling));
      }
    }
    LoadOptions options;
    options.path = dir.file("agent.yaml", renderConfigYaml(original));
    options.overrides = overrides;
    auto viaSet = loadConfig(options);
    ASSERT_TRUE(viaSet.ok()) << key << ": " << viaSet.message();
    EXPECT_EQ(*viaSet, original) << key;

    options.overrides.clear();
    for (const auto& [overrideKey, value] : overrides) options.environment[envNameForKey(overrideKey)] = value;
    auto viaEnvironment = loadConfig(options);
    ASSERT_TRUE(viaEnvironment.ok()) << key << ": " << viaEnvironment.message();
    EXPECT_EQ(*viaEnvironment, original) << key;
  }
}

TEST(RenderTest, DefaultsRenderInSpecShape) {
  const std::string yaml = renderConfigYaml(Config{});
  for (const char* expected :
       {"runtime:\n  kind: auto\n",
        "host_root: /",
        "containerd_namespace: qualys",
        "image: qualys/qcs-sensor:latest",
        "args: [--perform-sca-scan, --optimize-image-scans, --sensor-without-persistent-storage, "
        "--enable-console-logs]",
        "env: {}",
        "capabilities: [SYS_ADMIN, DAC_OVERRIDE, SETUID, SETGID]",
        "resources: {cpu_request: 250m, cpu_limit: 500m, memory_request: 512Mi, memory_limit: 1Gi}",
        "extra_mounts: []",
        "activation_id: {source: env, name: QUALYS_ACTIVATION_ID}",
        "customer_id: {source: file, path: /etc/qcs-agent/secrets/customer-id}",
        "backoff: {initial: 1s, max: 5m, multiplier: 2, jitter: 0.1, reset_after: 10m}",
        "reconcile_interval: 30s",
        "on_stop: leave",
        "stop_timeout: 30s",
        "health:\n    exec:\n      command: []\n    quiet_after: 0s\n    startup_grace: 1m\n    period: 30s\n"
        "    timeout: 10s\n    failure_threshold: 3\n",
        "detect: auto",
        "listen: 127.0.0.1:9819",
        "level: info",
        "format: text"}) {
    EXPECT_THAT(yaml, HasSubstr(expected));
  }
}

TEST(RenderTest, RoundTripsDefaults) { EXPECT_EQ(parseOk(renderConfigYaml(Config{})), Config{}); }

TEST(RenderTest, RoundTripsACustomConfig) {
  const Config original = customConfig();
  auto reparsed = parseConfig(renderConfigYaml(original));
  ASSERT_TRUE(reparsed.ok()) << reparsed.message() << "\n" << renderConfigYaml(original);
  EXPECT_EQ(*reparsed, original) << renderConfigYaml(original);
}

TEST(RenderTest, RoundTripsVariations) {
  std::vector<Config> variations;
  {
    Config c;
    c.registryAuth.kind = "docker-config";
    c.registryAuth.dockerConfig = "/root/.docker/config.json";
    c.sensor.args = {"--filter=a,b", "--x=\"quoted\""};  // YAML keeps what --set's comma list cannot
    c.sensor.capabilities.clear();
    variations.push_back(c);
  }
  {
    Config c;
    c.sensor.env = {{"A", "1"}};
    c.secrets.customerId = {"aws-secretsmanager", "", "", "qcs", "", "", "", ""};
    c.supervision.backoff.multiplier = 1.0000001;
    c.supervision.backoff.jitter = 0.3333333333333333;
    c.sensor.resources = {1, 1, 6LL << 20, 6LL << 20};
    variations.push_back(c);
  }
  {
    Config c;
    c.registryAuth.kind = "ecr";
    c.sensor.resources = {999, 64'000, 1023, 1LL << 40};
    c.supervision.stopTimeout = milliseconds(1);
    c.supervision.backoff.max = milliseconds(3'600'001);
    variations.push_back(c);
  }
  for (const Config& original : variations) {
    auto reparsed = parseConfig(renderConfigYaml(original));
    ASSERT_TRUE(reparsed.ok()) << reparsed.message() << "\n" << renderConfigYaml(original);
    EXPECT_EQ(*reparsed, original) << renderConfigYaml(original);
  }
}

TEST(RenderTest, ProxyCredentialsAreRedacted) {
  Config c;
  c.sensor.proxy.httpsProxy = "http://user:hunter2@proxy.corp:3128";
  ASSERT_TRUE(parseConfig(renderConfigYaml(c)).ok());
  const std::string yaml = renderConfigYaml(c);
  EXPECT_THAT(yaml, AllOf(HasSubstr("http://user:***@proxy.corp:3128"), Not(HasSubstr("hunter2"))));
}

TEST(RenderTest, SecretRefsShowOnlyTheirSourceFields) {
  const std::string yaml = renderConfigYaml(customConfig());
  EXPECT_THAT(yaml, HasSubstr("password: {source: file, path: /run/secrets/registry-password}"));
  EXPECT_THAT(yaml, HasSubstr("customer_id: {source: env, name: CUSTOMER_ID}"));
}

}  // namespace
}  // namespace qcs::agent

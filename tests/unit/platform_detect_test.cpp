// Platform detection over fake host roots (DMI files, ecs.config in a temp dir), a scripted
// environment and a fake HTTP client that records every request: what is detected, which metadata
// requests go out (none without evidence) and how failures turn into warnings.
#include "platform/platform_detect.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "aws_fakes.h"

namespace qcs::platform {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::FakeHttp;
using testing::headerOf;
using testing::reply;

constexpr const char* kAzureTag = "7783-7084-3265-9085-8269-3286-77";
constexpr const char* kAwsImds = "http://127.0.0.1:1";
constexpr const char* kAzureImds = "http://127.0.0.1:2";
constexpr const char* kGcpHost = "127.0.0.1:3";

class FakeHostRoot {
 public:
  FakeHostRoot() {
    char tmpl[] = "/tmp/qcs-platform-detect-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~FakeHostRoot() { fs::remove_all(path_); }
  FakeHostRoot(const FakeHostRoot&) = delete;
  FakeHostRoot& operator=(const FakeHostRoot&) = delete;

  // DMI files end in a newline, as the kernel writes them.
  void dmi(const std::string& name, const std::string& value) { write("sys/class/dmi/id/" + name, value + "\n"); }
  void write(const std::string& relative, const std::string& content) {
    const fs::path p = fs::path(path_) / relative;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
  }
  // A directory where a file is expected: reading it fails even as root.
  void unreadable(const std::string& relative) { fs::create_directories(fs::path(path_) / relative); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool contains(const std::vector<std::string>& list, const std::string& item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

bool anyContains(const std::vector<std::string>& list, const std::string& part) {
  return std::any_of(list.begin(), list.end(), [&](const std::string& s) { return s.find(part) != std::string::npos; });
}

// A metadata service that answers like all three clouds' real ones when asked correctly.
Result<HttpResponse> cloudMetadata(const HttpRequest& request) {
  const std::string url = request.url;
  if (url == std::string(kAwsImds) + "/latest/api/token") {
    if (request.method != "PUT" || !headerOf(request, "X-aws-ec2-metadata-token-ttl-seconds")) return reply(400, "");
    return reply(200, "session-token");
  }
  if (url.rfind(std::string(kAwsImds) + "/latest/meta-data/", 0) == 0) {
    if (headerOf(request, "X-aws-ec2-metadata-token") != "session-token") return reply(401, "");
    if (url.ends_with("/placement/region")) return reply(200, "eu-central-1");
    if (url.ends_with("/placement/availability-zone")) return reply(200, "eu-central-1b");
    return reply(404, "Not Found");
  }
  if (url.rfind(std::string(kAzureImds) + "/metadata/instance/compute", 0) == 0) {
    if (headerOf(request, "Metadata") != "true") {
      return reply(400, R"({"error":"Bad request. Required metadata header not specified"})");
    }
    return reply(200, R"({"location":"westeurope","zone":"2","vmId":"x"})");
  }
  if (url == std::string("http://") + kGcpHost + "/computeMetadata/v1/instance/zone") {
    if (headerOf(request, "Metadata-Flavor") != "Google") return reply(403, "", {{"metadata-flavor", "Google"}});
    return reply(200, "projects/1234/zones/europe-west4-c", {{"metadata-flavor", "Google"}});
  }
  return makeError(ErrorCode::kUnavailable, "GET " + describeEndpoint(url) + ": connection refused");
}

class PlatformDetectTest : public ::testing::Test {
 protected:
  PlatformInfo detect(const std::string& mode = "auto") {
    PlatformDetectOptions options;
    options.mode = mode;
    options.hostRoot = root_.path();
    options.awsImdsEndpoint = overrideEndpoints_ ? kAwsImds : "";
    options.azureImdsEndpoint = overrideEndpoints_ ? kAzureImds : "";
    options.gcpMetadataHost = overrideEndpoints_ ? kGcpHost : "";
    options.metadataTimeout = 700ms;
    return detectPlatform(
        options,
        [this](const std::string& name) -> std::optional<std::string> {
          auto it = env_.find(name);
          return it == env_.end() ? std::nullopt : std::optional<std::string>(it->second);
        },
        http_);
  }

  FakeHostRoot root_;
  std::map<std::string, std::string> env_;
  bool overrideEndpoints_ = true;
  FakeHttp http_{cloudMetadata};
};

TEST_F(PlatformDetectTest, NoEvidenceMeansNoRequestAtAll) {
  auto info = detect();
  EXPECT_EQ(info, PlatformInfo{});
  EXPECT_TRUE(http_.requests.empty());
}

TEST_F(PlatformDetectTest, BareMetalAndPlainHyperVAreNoCloud) {
  root_.dmi("sys_vendor", "Dell Inc.");
  root_.dmi("product_name", "PowerEdge R650");
  root_.dmi("bios_vendor", "Dell Inc.");
  EXPECT_EQ(detect().cloud, "none");

  FakeHostRoot hyperV;
  hyperV.dmi("sys_vendor", "Microsoft Corporation");
  hyperV.dmi("product_name", "Virtual Machine");
  hyperV.dmi("bios_vendor", "Microsoft Corporation");
  hyperV.dmi("chassis_asset_tag", "1234-5678-9012-3456-7890-1234-56");
  PlatformDetectOptions options;
  options.hostRoot = hyperV.path();
  auto info = detectPlatform(options, nullptr, http_);
  EXPECT_EQ(info.cloud, "none");
  EXPECT_TRUE(info.evidence.empty());
  EXPECT_TRUE(http_.requests.empty());
}

TEST_F(PlatformDetectTest, AwsNitroSpeaksImdsV2WithTheTokenOnEveryRead) {
  root_.dmi("sys_vendor", "Amazon EC2");
  root_.dmi("product_name", "m6i.large");
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.orchestrator, "none");
  EXPECT_EQ(info.region, "eu-central-1");
  EXPECT_EQ(info.zone, "eu-central-1b");
  EXPECT_TRUE(info.cluster.empty());
  EXPECT_TRUE(contains(info.evidence, "dmi sys_vendor=Amazon EC2")) << ::testing::PrintToString(info.evidence);
  EXPECT_TRUE(contains(info.evidence, "imds placement/region"));
  EXPECT_TRUE(info.warnings.empty()) << ::testing::PrintToString(info.warnings);

  ASSERT_EQ(http_.requests.size(), 3u);
  const auto& token = http_.requests[0];
  EXPECT_EQ(token.method, "PUT");
  EXPECT_EQ(token.url, std::string(kAwsImds) + "/latest/api/token");
  auto ttl = headerOf(token, "X-aws-ec2-metadata-token-ttl-seconds");
  ASSERT_TRUE(ttl);
  EXPECT_GE(std::stoi(*ttl), 1);
  EXPECT_LE(std::stoi(*ttl), 21600);
  for (const auto& request : http_.requests) {
    EXPECT_EQ(request.connectTimeout, 700ms);
    EXPECT_EQ(request.totalTimeout, 700ms);
  }
  EXPECT_EQ(http_.requests[1].url, std::string(kAwsImds) + "/latest/meta-data/placement/region");
  EXPECT_EQ(http_.requests[2].url, std::string(kAwsImds) + "/latest/meta-data/placement/availability-zone");
  EXPECT_EQ(headerOf(http_.requests[1], "X-aws-ec2-metadata-token"), "session-token");
  EXPECT_EQ(headerOf(http_.requests[2], "X-aws-ec2-metadata-token"), "session-token");
}

TEST_F(PlatformDetectTest, AwsXenEraBiosVersionAndBoardVendorCount) {
  root_.dmi("sys_vendor", "Xen");
  root_.dmi("bios_version", "4.11.amazon");
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_TRUE(contains(info.evidence, "dmi bios_version=4.11.amazon"));

  FakeHostRoot board;
  board.dmi("board_vendor", "Amazon EC2");
  PlatformDetectOptions options;
  options.hostRoot = board.path();
  options.awsImdsEndpoint = kAwsImds;
  EXPECT_EQ(detectPlatform(options, nullptr, http_).cloud, "aws");
}

TEST_F(PlatformDetectTest, AzureByItsChassisAssetTag) {
  root_.dmi("sys_vendor", "Microsoft Corporation");
  root_.dmi("product_name", "Virtual Machine");
  root_.dmi("chassis_asset_tag", kAzureTag);
  auto info = detect();
  EXPECT_EQ(info.cloud, "azure");
  EXPECT_EQ(info.region, "westeurope");
  EXPECT_EQ(info.zone, "2");
  EXPECT_TRUE(contains(info.evidence, std::string("dmi chassis_asset_tag=") + kAzureTag));
  EXPECT_TRUE(info.warnings.empty()) << ::testing::PrintToString(info.warnings);
  ASSERT_EQ(http_.requests.size(), 1u);
  EXPECT_EQ(http_.requests[0].method, "GET");
  EXPECT_EQ(http_.requests[0].url, std::string(kAzureImds) + "/metadata/instance/compute?api-version=2021-02-01");
  EXPECT_EQ(headerOf(http_.requests[0], "Metadata"), "true");
}

TEST_F(PlatformDetectTest, GcpByDmiAndTheFlavorHeaderBothWays) {
  root_.dmi("sys_vendor", "Google");
  root_.dmi("product_name", "Google Compute Engine");
  root_.dmi("bios_vendor", "Google");
  auto info = detect();
  EXPECT_EQ(info.cloud, "gcp");
  EXPECT_EQ(info.zone, "europe-west4-c");
  EXPECT_EQ(info.region, "europe-west4");
  EXPECT_TRUE(contains(info.evidence, "dmi product_name=Google Compute Engine"));
  EXPECT_TRUE(info.warnings.empty()) << ::testing::PrintToString(info.warnings);
  ASSERT_EQ(http_.requests.size(), 1u);
  EXPECT_EQ(http_.requests[0].url, std::string("http://") + kGcpHost + "/computeMetadata/v1/instance/zone");
  EXPECT_EQ(headerOf(http_.requests[0], "Metadata-Flavor"), "Google");
}

TEST_F(PlatformDetectTest, GcpAnswerWithoutTheFlavorHeaderIsNotTrusted) {
  root_.dmi("product_name", "Google Compute Engine");
  FakeHttp impostor([](const HttpRequest&) { return Result<HttpResponse>(reply(200, "projects/1/zones/x-y-z")); });
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.gcpMetadataHost = kGcpHost;
  auto info = detectPlatform(options, nullptr, impostor);
  EXPECT_EQ(info.cloud, "gcp");
  EXPECT_TRUE(info.region.empty());
  EXPECT_TRUE(info.zone.empty());
  EXPECT_TRUE(anyContains(info.warnings, "Metadata-Flavor")) << ::testing::PrintToString(info.warnings);
}

TEST_F(PlatformDetectTest, UnreadableDmiFilesAreSilentNotFatal) {
  root_.unreadable("sys/class/dmi/id/sys_vendor");
  root_.unreadable("sys/class/dmi/id/chassis_asset_tag");
  auto info = detect();
  EXPECT_EQ(info.cloud, "none");
  EXPECT_TRUE(http_.requests.empty());

  // The files that can be read still count.
  root_.dmi("bios_vendor", "Amazon EC2");
  EXPECT_EQ(detect().cloud, "aws");
}

TEST_F(PlatformDetectTest, ModeNoneReadsAndContactsNothing) {
  root_.dmi("sys_vendor", "Amazon EC2");
  root_.write("etc/ecs/ecs.config", "ECS_CLUSTER=prod\n");
  env_["KUBERNETES_SERVICE_HOST"] = "10.0.0.1";
  env_["ECS_CONTAINER_METADATA_URI_V4"] = "http://169.254.170.2/v4/x";
  auto info = detect("none");
  EXPECT_EQ(info.cloud, "none");
  EXPECT_EQ(info.orchestrator, "none");
  EXPECT_TRUE(info.cluster.empty());
  EXPECT_EQ(info.evidence, std::vector<std::string>{"platform.detect: none"});
  EXPECT_TRUE(http_.requests.empty());
}

TEST_F(PlatformDetectTest, ExplicitModeTakesTheCloudAsGiven) {
  auto info = detect("gcp");
  EXPECT_EQ(info.cloud, "gcp");
  EXPECT_EQ(info.region, "europe-west4");
  EXPECT_TRUE(contains(info.evidence, "platform.detect: gcp"));
  EXPECT_EQ(http_.count("/computeMetadata/v1/instance/zone"), 1u);
  EXPECT_EQ(http_.requests.size(), 1u);

  // DMI naming another cloud is reported, and the operator's word stands.
  root_.dmi("sys_vendor", "Amazon EC2");
  http_.requests.clear();
  info = detect("azure");
  EXPECT_EQ(info.cloud, "azure");
  EXPECT_EQ(info.region, "westeurope");
  EXPECT_TRUE(anyContains(info.warnings, "dmi sys_vendor=Amazon EC2"));
  EXPECT_EQ(http_.count("/latest/api/token"), 0u);
}

TEST_F(PlatformDetectTest, UnknownModeIsWarnedAndDetectedAsAuto) {
  root_.dmi("sys_vendor", "Amazon EC2");
  auto info = detect("ec2");
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_TRUE(anyContains(info.warnings, "\"ec2\""));
}

TEST_F(PlatformDetectTest, EcsTaskVariablesMeanAwsAndEcs) {
  env_["AWS_EXECUTION_ENV"] = "AWS_ECS_EC2";
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.orchestrator, "ecs");
  EXPECT_EQ(info.cluster, "default");
  EXPECT_TRUE(contains(info.evidence, "env AWS_EXECUTION_ENV=AWS_ECS_EC2"));
  EXPECT_EQ(info.region, "eu-central-1");

  env_.clear();
  env_["ECS_CONTAINER_METADATA_URI_V4"] = "http://169.254.170.2/v4/abc";
  env_["ECS_CLUSTER"] = "arn:aws:ecs:eu-central-1:123456789012:cluster/payments";
  info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.orchestrator, "ecs");
  EXPECT_EQ(info.cluster, "payments");
  EXPECT_TRUE(contains(info.evidence, "env ECS_CONTAINER_METADATA_URI_V4"));
  EXPECT_TRUE(contains(info.evidence, "env ECS_CLUSTER"));

  // Not an ECS marker: Lambda's execution environment.
  env_.clear();
  env_["AWS_EXECUTION_ENV"] = "AWS_Lambda_python3.12";
  EXPECT_EQ(detect().orchestrator, "none");
}

TEST_F(PlatformDetectTest, EcsConfigNamesTheClusterAheadOfTheVariable) {
  root_.dmi("sys_vendor", "Amazon EC2");
  root_.write("etc/ecs/ecs.config",
              "# written by user data\n"
              "ECS_ENABLE_TASK_IAM_ROLE=true\n"
              "export ECS_CLUSTER=\"prod-east\"\n"
              "ECS_LOGLEVEL=info\n");
  env_["ECS_CLUSTER"] = "from-env";
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.orchestrator, "ecs");
  EXPECT_EQ(info.cluster, "prod-east");
  EXPECT_TRUE(contains(info.evidence, "file /etc/ecs/ecs.config"));
  EXPECT_TRUE(contains(info.evidence, "ecs.config ECS_CLUSTER"));
}

TEST_F(PlatformDetectTest, EcsConfigWithoutClusterAndUnreadableConfig) {
  root_.write("etc/ecs/ecs.config", "ECS_LOGLEVEL=debug\n");
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");  // the ECS agent on a host whose DMI is not visible
  EXPECT_EQ(info.cluster, "default");

  FakeHostRoot other;
  other.unreadable("etc/ecs/ecs.config");
  PlatformDetectOptions options;
  options.hostRoot = other.path();
  options.awsImdsEndpoint = kAwsImds;
  info = detectPlatform(options, nullptr, http_);
  EXPECT_EQ(info.orchestrator, "ecs");
  EXPECT_EQ(info.cluster, "default");
  EXPECT_TRUE(anyContains(info.warnings, "ecs: cannot read")) << ::testing::PrintToString(info.warnings);
}

TEST_F(PlatformDetectTest, EcsAnywhereIsEcsWithoutAwsMetadata) {
  root_.dmi("sys_vendor", "Dell Inc.");
  root_.write("etc/ecs/ecs.config", "ECS_CLUSTER=edge\nECS_EXTERNAL=true\nAWS_DEFAULT_REGION=ap-south-1\n");
  auto info = detect();
  EXPECT_EQ(info.cloud, "none");
  EXPECT_EQ(info.orchestrator, "ecs");
  EXPECT_EQ(info.cluster, "edge");
  EXPECT_EQ(info.region, "ap-south-1");
  EXPECT_TRUE(contains(info.evidence, "ecs.config AWS_DEFAULT_REGION"));
  EXPECT_TRUE(http_.requests.empty());
}

TEST(ParseEcsConfig, ToleratesCommentsQuotesExportAndSpaces) {
  auto settings = parseEcsConfig(
      "# comment\n"
      "\n"
      "  ECS_CLUSTER = 'single'  \r\n"
      "ECS_LOGLEVEL=info # trailing comment\n"
      "export ECS_RESERVED_MEMORY=\"32\"\n"
      "not a setting\n"
      "=novalue\n"
      "BAD KEY=x\n"
      "ECS_EMPTY=\n"
      "ECS_CLUSTER=last-wins");
  EXPECT_EQ(settings["ECS_CLUSTER"], "last-wins");
  EXPECT_EQ(settings["ECS_LOGLEVEL"], "info");
  EXPECT_EQ(settings["ECS_RESERVED_MEMORY"], "32");
  EXPECT_EQ(settings.count("ECS_EMPTY"), 1u);
  EXPECT_EQ(settings["ECS_EMPTY"], "");
  EXPECT_EQ(settings.size(), 4u);
  EXPECT_EQ(parseEcsConfig("ECS_CLUSTER=\"quoted # not a comment\"")["ECS_CLUSTER"], "quoted # not a comment");
}

TEST_F(PlatformDetectTest, KubernetesFlavourFollowsTheCloud) {
  env_["KUBERNETES_SERVICE_HOST"] = "10.96.0.1";
  auto info = detect();
  EXPECT_EQ(info.cloud, "none");
  EXPECT_EQ(info.orchestrator, "kubernetes");
  EXPECT_TRUE(contains(info.evidence, "env KUBERNETES_SERVICE_HOST"));
  EXPECT_TRUE(http_.requests.empty());

  const std::vector<std::pair<std::pair<std::string, std::string>, std::string>> cases{
      {{"sys_vendor", "Amazon EC2"}, "eks"},
      {{"chassis_asset_tag", kAzureTag}, "aks"},
      {{"product_name", "Google Compute Engine"}, "gke"}};
  for (const auto& [dmi, orchestrator] : cases) {
    FakeHostRoot host;
    host.dmi(dmi.first, dmi.second);
    PlatformDetectOptions options;
    options.hostRoot = host.path();
    options.awsImdsEndpoint = kAwsImds;
    options.azureImdsEndpoint = kAzureImds;
    options.gcpMetadataHost = kGcpHost;
    auto detected = detectPlatform(
        options,
        [](const std::string& name) -> std::optional<std::string> {
          if (name == "KUBERNETES_SERVICE_HOST") return "10.96.0.1";
          return std::nullopt;
        },
        http_);
    EXPECT_EQ(detected.orchestrator, orchestrator) << dmi.second;
    EXPECT_FALSE(detected.region.empty()) << dmi.second;
  }
}

TEST_F(PlatformDetectTest, AwsMetadataFailureIsAWarningAndEnvRegionStandsIn) {
  root_.dmi("sys_vendor", "Amazon EC2");
  FakeHttp down([](const HttpRequest& request) -> Result<HttpResponse> {
    return makeError(ErrorCode::kTimeout, request.method + " " + describeEndpoint(request.url) + ": timed out");
  });
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.awsImdsEndpoint = kAwsImds;
  auto info = detectPlatform(options, nullptr, down);
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_TRUE(info.region.empty());
  ASSERT_EQ(info.warnings.size(), 1u);
  EXPECT_TRUE(info.warnings[0].rfind("aws: ", 0) == 0) << info.warnings[0];
  EXPECT_TRUE(anyContains(info.warnings, "region unknown"));
  EXPECT_EQ(down.requests.size(), 1u) << "no GET without a token, no retries";

  info = detectPlatform(
      options,
      [](const std::string& name) -> std::optional<std::string> {
        if (name == "AWS_DEFAULT_REGION") return "sa-east-1";
        return std::nullopt;
      },
      down);
  EXPECT_EQ(info.region, "sa-east-1");
  EXPECT_TRUE(contains(info.evidence, "env AWS_DEFAULT_REGION"));
  EXPECT_TRUE(anyContains(info.warnings, "region from env AWS_DEFAULT_REGION"));
}

TEST_F(PlatformDetectTest, ImdsTokenRefusedAndZoneMissing) {
  root_.dmi("sys_vendor", "Amazon EC2");
  FakeHttp refusing([](const HttpRequest&) { return Result<HttpResponse>(reply(403, "")); });
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.awsImdsEndpoint = kAwsImds;
  auto info = detectPlatform(options, nullptr, refusing);
  EXPECT_TRUE(info.region.empty());
  EXPECT_TRUE(anyContains(info.warnings, "HTTP 403"));
  EXPECT_EQ(refusing.requests.size(), 1u);

  FakeHttp noZone([](const HttpRequest& request) -> Result<HttpResponse> {
    if (request.url.ends_with("/latest/api/token")) return reply(200, "t");
    if (request.url.ends_with("/placement/region")) return reply(200, "us-west-2\n");
    return reply(404, "Not Found");
  });
  info = detectPlatform(options, nullptr, noZone);
  EXPECT_EQ(info.region, "us-west-2");
  EXPECT_TRUE(info.zone.empty());
  ASSERT_EQ(info.warnings.size(), 1u);
  EXPECT_TRUE(anyContains(info.warnings, "zone unknown"));
}

TEST_F(PlatformDetectTest, MetadataDisabledKeepsAwayFromImds) {
  root_.dmi("sys_vendor", "Amazon EC2");
  env_["AWS_EC2_METADATA_DISABLED"] = "true";
  env_["AWS_REGION"] = "ca-central-1";
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.region, "ca-central-1");
  EXPECT_TRUE(contains(info.evidence, "env AWS_REGION"));
  EXPECT_TRUE(info.warnings.empty()) << ::testing::PrintToString(info.warnings);
  EXPECT_TRUE(http_.requests.empty());

  env_.erase("AWS_REGION");
  info = detect();
  EXPECT_TRUE(info.region.empty());
  EXPECT_TRUE(anyContains(info.warnings, "AWS_EC2_METADATA_DISABLED"));
  EXPECT_TRUE(http_.requests.empty());
}

TEST_F(PlatformDetectTest, EndpointsComeFromTheStandardVariablesThenTheDefaults) {
  overrideEndpoints_ = false;
  root_.dmi("sys_vendor", "Amazon EC2");
  env_["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = std::string(kAwsImds) + "/";
  EXPECT_EQ(detect().region, "eu-central-1");
  EXPECT_EQ(http_.requests.front().url, std::string(kAwsImds) + "/latest/api/token");

  http_.requests.clear();
  env_.clear();
  detect();
  EXPECT_EQ(http_.requests.front().url, "http://169.254.169.254/latest/api/token");

  FakeHostRoot azure;
  azure.dmi("chassis_asset_tag", kAzureTag);
  FakeHostRoot gcp;
  gcp.dmi("sys_vendor", "Google");
  PlatformDetectOptions options;
  auto envWith = [](std::string name, std::string value) {
    return [name, value](const std::string& asked) -> std::optional<std::string> {
      if (asked == name) return value;
      return std::nullopt;
    };
  };
  options.hostRoot = azure.path();
  EXPECT_EQ(detectPlatform(options, envWith("QCS_AZURE_IMDS_ENDPOINT", kAzureImds), http_).region, "westeurope");
  http_.requests.clear();
  detectPlatform(options, nullptr, http_);
  EXPECT_EQ(http_.requests.front().url, "http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01");

  options.hostRoot = gcp.path();
  EXPECT_EQ(detectPlatform(options, envWith("GCE_METADATA_HOST", kGcpHost), http_).zone, "europe-west4-c");
  http_.requests.clear();
  detectPlatform(options, nullptr, http_);
  EXPECT_EQ(http_.requests.front().url, "http://metadata.google.internal/computeMetadata/v1/instance/zone");
}

TEST_F(PlatformDetectTest, AzureErrorsBecomeWarnings) {
  root_.dmi("chassis_asset_tag", kAzureTag);
  FakeHttp refusing([](const HttpRequest&) {
    return Result<HttpResponse>(reply(400, R"({"error":"Bad request. api-version is invalid"})"));
  });
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.azureImdsEndpoint = kAzureImds;
  auto info = detectPlatform(options, nullptr, refusing);
  EXPECT_EQ(info.cloud, "azure");
  EXPECT_TRUE(info.region.empty());
  ASSERT_EQ(info.warnings.size(), 1u);
  EXPECT_TRUE(anyContains(info.warnings, "api-version is invalid")) << info.warnings[0];
}

TEST_F(PlatformDetectTest, TwoCloudsEvidenceIsWarned) {
  root_.dmi("sys_vendor", "Google");
  env_["AWS_EXECUTION_ENV"] = "AWS_ECS_FARGATE";
  auto info = detect();
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_TRUE(anyContains(info.warnings, "gcp (dmi sys_vendor=Google)")) << ::testing::PrintToString(info.warnings);
  EXPECT_EQ(http_.count("/computeMetadata/v1/instance/zone"), 0u);
}

}  // namespace
}  // namespace qcs::platform

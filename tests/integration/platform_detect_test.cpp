// Platform detection over real HTTP (libcurl) against the loopback AWS, Azure and GCP metadata
// emulators, with fake DMI roots; and against loopback ports that refuse or never answer, to show
// a missing metadata service costs a warning within the timeout. Nothing leaves 127.0.0.1.
#include "platform/platform_detect.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "harness/aws_emulator.h"
#include "harness/cloud_metadata_emulator.h"
#include "platform/cloud_http.h"

namespace qcs::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using platform::detectPlatform;
using platform::HttpRequest;
using platform::PlatformDetectOptions;

constexpr const char* kAzureTag = "7783-7084-3265-9085-8269-3286-77";

class FakeHostRoot {
 public:
  FakeHostRoot() {
    char tmpl[] = "/tmp/qcs-platform-root-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~FakeHostRoot() { fs::remove_all(path_); }
  FakeHostRoot(const FakeHostRoot&) = delete;
  FakeHostRoot& operator=(const FakeHostRoot&) = delete;

  void write(const std::string& relative, const std::string& content) {
    const fs::path p = fs::path(path_) / relative;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << content;
  }
  void dmi(const std::string& name, const std::string& value) { write("sys/class/dmi/id/" + name, value + "\n"); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A loopback TCP socket: listening (connections queue in the backlog and are never answered), or
// closed right away so that its port refuses connections.
class LoopbackSocket {
 public:
  explicit LoopbackSocket(bool listening) : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    if (listening) {
      if (::listen(fd_, 16) != 0) port_ = 0;
    } else {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~LoopbackSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  LoopbackSocket(const LoopbackSocket&) = delete;
  LoopbackSocket& operator=(const LoopbackSocket&) = delete;
  int port() const { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

platform::GetEnvFn envOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

std::string join(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& s : list) out += s + "\n";
  return out;
}

class PlatformDetectIntegrationTest : public ::testing::Test {
 protected:
  std::unique_ptr<platform::CloudHttpClient> http_ = platform::makeCurlHttpClient();
  FakeHostRoot root_;
};

TEST_F(PlatformDetectIntegrationTest, AwsWithEcsAgainstTheImdsEmulator) {
  AwsEmulator::Options emulatorOptions;
  emulatorOptions.region = "eu-west-3";
  emulatorOptions.availabilityZone = "eu-west-3c";
  auto aws = AwsEmulator::start(emulatorOptions);
  ASSERT_NE(aws, nullptr);
  root_.dmi("sys_vendor", "Amazon EC2");
  root_.dmi("bios_vendor", "Amazon EC2");
  root_.write("etc/ecs/ecs.config", "ECS_CLUSTER=payments-prod\nECS_ENABLE_TASK_IAM_ROLE=true\n");

  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.awsImdsEndpoint = aws->endpoint();
  auto info = detectPlatform(options, envOf({}), *http_);

  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.orchestrator, "ecs");
  EXPECT_EQ(info.cluster, "payments-prod");
  EXPECT_EQ(info.region, "eu-west-3");
  EXPECT_EQ(info.zone, "eu-west-3c");
  EXPECT_TRUE(info.warnings.empty()) << join(info.warnings);
  EXPECT_EQ(aws->calls("imds-token"), 1);
  EXPECT_EQ(aws->calls("imds-region"), 1);
  EXPECT_EQ(aws->calls("imds-zone"), 1);
  EXPECT_TRUE(aws->rejections().empty()) << join(aws->rejections());
}

TEST_F(PlatformDetectIntegrationTest, AwsEndpointFromTheStandardVariable) {
  auto aws = AwsEmulator::start();
  ASSERT_NE(aws, nullptr);
  root_.dmi("bios_version", "4.11.amazon");
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  auto info = detectPlatform(
      options,
      envOf({{"AWS_EC2_METADATA_SERVICE_ENDPOINT", aws->endpoint() + "/"}, {"KUBERNETES_SERVICE_HOST", "10.100.0.1"}}),
      *http_);
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_EQ(info.orchestrator, "eks");
  EXPECT_EQ(info.region, "us-east-1");
  EXPECT_EQ(info.zone, "us-east-1a");
  EXPECT_TRUE(info.warnings.empty()) << join(info.warnings);
}

TEST_F(PlatformDetectIntegrationTest, AzureWithAksAgainstTheImdsEmulator) {
  CloudMetadataEmulator::Options emulatorOptions;
  emulatorOptions.azureLocation = "northeurope";
  emulatorOptions.azureZone = "3";
  auto azure = CloudMetadataEmulator::start(emulatorOptions);
  ASSERT_NE(azure, nullptr);
  root_.dmi("sys_vendor", "Microsoft Corporation");
  root_.dmi("product_name", "Virtual Machine");
  root_.dmi("chassis_asset_tag", kAzureTag);

  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  auto info = detectPlatform(
      options, envOf({{"QCS_AZURE_IMDS_ENDPOINT", azure->endpoint()}, {"KUBERNETES_SERVICE_HOST", "10.0.0.1"}}),
      *http_);

  EXPECT_EQ(info.cloud, "azure");
  EXPECT_EQ(info.orchestrator, "aks");
  EXPECT_EQ(info.region, "northeurope");
  EXPECT_EQ(info.zone, "3");
  EXPECT_TRUE(info.cluster.empty());
  EXPECT_TRUE(info.warnings.empty()) << join(info.warnings);
  EXPECT_EQ(azure->calls("azure-compute"), 1);
  EXPECT_TRUE(azure->rejections().empty()) << join(azure->rejections());
}

TEST_F(PlatformDetectIntegrationTest, GcpWithGkeAgainstTheMetadataEmulator) {
  CloudMetadataEmulator::Options emulatorOptions;
  emulatorOptions.gcpZone = "asia-northeast1-b";
  auto gcp = CloudMetadataEmulator::start(emulatorOptions);
  ASSERT_NE(gcp, nullptr);
  root_.dmi("sys_vendor", "Google");
  root_.dmi("product_name", "Google Compute Engine");

  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  auto info = detectPlatform(
      options, envOf({{"GCE_METADATA_HOST", gcp->hostAndPort()}, {"KUBERNETES_SERVICE_HOST", "10.0.0.1"}}), *http_);

  EXPECT_EQ(info.cloud, "gcp");
  EXPECT_EQ(info.orchestrator, "gke");
  EXPECT_EQ(info.zone, "asia-northeast1-b");
  EXPECT_EQ(info.region, "asia-northeast1");
  EXPECT_TRUE(info.warnings.empty()) << join(info.warnings);
  EXPECT_EQ(gcp->calls("gcp-zone"), 1);
  EXPECT_TRUE(gcp->rejections().empty()) << join(gcp->rejections());
}

TEST_F(PlatformDetectIntegrationTest, NoEvidenceContactsNoEmulator) {
  auto aws = AwsEmulator::start();
  auto cloud = CloudMetadataEmulator::start();
  ASSERT_NE(aws, nullptr);
  ASSERT_NE(cloud, nullptr);
  root_.dmi("sys_vendor", "QEMU");
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.awsImdsEndpoint = aws->endpoint();
  options.azureImdsEndpoint = cloud->endpoint();
  options.gcpMetadataHost = cloud->hostAndPort();
  auto info = detectPlatform(options, envOf({}), *http_);
  EXPECT_EQ(info.cloud, "none");
  EXPECT_EQ(aws->calls("imds-token"), 0);
  EXPECT_EQ(cloud->calls("azure-compute"), 0);
  EXPECT_EQ(cloud->calls("gcp-zone"), 0);
}

// The emulators refuse what the real services refuse, with their documented error shapes.
TEST_F(PlatformDetectIntegrationTest, EmulatorsCheckWhatTheRealServicesCheck) {
  auto aws = AwsEmulator::start();
  auto cloud = CloudMetadataEmulator::start();
  ASSERT_NE(aws, nullptr);
  ASSERT_NE(cloud, nullptr);
  auto get = [&](const std::string& url, std::vector<std::pair<std::string, std::string>> headers) {
    HttpRequest request;
    request.url = url;
    request.headers = std::move(headers);
    auto response = http_->send(request);
    EXPECT_TRUE(response) << response.message();
    return response ? response.value() : platform::HttpResponse{};
  };

  EXPECT_EQ(get(aws->endpoint() + "/latest/meta-data/placement/availability-zone", {}).status, 401);
  EXPECT_EQ(
      get(aws->endpoint() + "/latest/meta-data/placement/availability-zone", {{"X-aws-ec2-metadata-token", "made-up"}})
          .status,
      401);

  const std::string compute = cloud->endpoint() + "/metadata/instance/compute";
  auto noHeader = get(compute + "?api-version=2021-02-01", {});
  EXPECT_EQ(noHeader.status, 400);
  EXPECT_EQ(json::parse(noHeader.body).value("error", ""), "Bad request. Required metadata header not specified");
  auto noVersion = get(compute, {{"Metadata", "true"}});
  EXPECT_EQ(noVersion.status, 400);
  auto noVersionBody = json::parse(noVersion.body);
  EXPECT_TRUE(noVersionBody.contains("newest-versions"));
  EXPECT_EQ(get(compute + "?api-version=1999-01-01", {{"Metadata", "true"}}).status, 400);
  EXPECT_EQ(get(compute + "?api-version=2021-02-01", {{"Metadata", "true"}, {"X-Forwarded-For", "10.0.0.9"}}).status,
            400);
  auto good = get(compute + "?api-version=2021-02-01", {{"Metadata", "true"}});
  EXPECT_EQ(good.status, 200);
  EXPECT_EQ(json::parse(good.body).value("location", ""), "westeurope");

  const std::string zone = cloud->endpoint() + "/computeMetadata/v1/instance/zone";
  auto noFlavor = get(zone, {});
  EXPECT_EQ(noFlavor.status, 403);
  EXPECT_EQ(noFlavor.header("Metadata-Flavor"), "Google");
  auto zoneAnswer = get(zone, {{"Metadata-Flavor", "Google"}});
  EXPECT_EQ(zoneAnswer.status, 200);
  EXPECT_EQ(zoneAnswer.body, "projects/123456789012/zones/us-central1-a");
  EXPECT_EQ(zoneAnswer.header("Metadata-Flavor"), "Google");
  EXPECT_EQ(cloud->rejections().size(), 5u) << join(cloud->rejections());
}

TEST_F(PlatformDetectIntegrationTest, ClosedMetadataPortIsAWarningWithinTheTimeout) {
  LoopbackSocket closed(false);
  ASSERT_NE(closed.port(), 0);
  root_.dmi("sys_vendor", "Amazon EC2");
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.awsImdsEndpoint = "http://127.0.0.1:" + std::to_string(closed.port());
  options.metadataTimeout = 500ms;
  const auto started = std::chrono::steady_clock::now();
  auto info = detectPlatform(options, envOf({}), *http_);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(info.cloud, "aws");
  EXPECT_TRUE(info.region.empty());
  ASSERT_EQ(info.warnings.size(), 1u) << join(info.warnings);
  EXPECT_EQ(info.warnings[0].rfind("aws: instance metadata did not answer", 0), 0u) << info.warnings[0];
  EXPECT_LT(elapsed, options.metadataTimeout);
}

TEST_F(PlatformDetectIntegrationTest, SilentMetadataServerTimesOutWithAWarning) {
  LoopbackSocket silent(true);
  ASSERT_NE(silent.port(), 0);
  root_.dmi("product_name", "Google Compute Engine");
  PlatformDetectOptions options;
  options.hostRoot = root_.path();
  options.gcpMetadataHost = "127.0.0.1:" + std::to_string(silent.port());
  options.metadataTimeout = 400ms;
  const auto started = std::chrono::steady_clock::now();
  auto info = detectPlatform(options, envOf({}), *http_);
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(info.cloud, "gcp");
  EXPECT_TRUE(info.zone.empty());
  ASSERT_EQ(info.warnings.size(), 1u) << join(info.warnings);
  EXPECT_EQ(info.warnings[0].rfind("gcp: metadata server did not answer", 0), 0u) << info.warnings[0];
  EXPECT_GE(elapsed, 350ms);
  EXPECT_LT(elapsed, 400ms + 1500ms);  // the timeout plus scheduling slack on a loaded machine
}

}  // namespace
}  // namespace qcs::testing

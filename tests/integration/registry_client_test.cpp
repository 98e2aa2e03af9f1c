// RegistryClient against a real registry (Debian's docker-registry with htpasswd Basic auth on
// 127.0.0.1), holding the stand-in image pushed by a private dockerd.
#include "runtime/registry/registry_client.h"

#include <gtest/gtest.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "harness/harness.h"

namespace qcs::runtime::registry {
namespace {

using namespace std::chrono_literals;
using qcs::testing::Dockerd;
using qcs::testing::Registry;

class RegistryClientIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dockerd_ = Dockerd::start();
    if (!dockerd_) return;
    auto image = qcs::testing::buildStandinImage(*dockerd_, "qcs-standin:registry-client");
    if (!image.ok()) {
      setupError_ = "building the stand-in failed: " + image.message();
      return;
    }
    registry_ = Registry::start("qcs", "right-password");
    if (!registry_) return;
    auto pushed = registry_->push(*dockerd_, *image, "qcs/standin:1");
    if (!pushed.ok()) setupError_ = "pushing the stand-in failed: " + pushed.message();
  }
  static void TearDownTestSuite() {
    registry_.reset();
    dockerd_.reset();
  }
  void SetUp() override {
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    ASSERT_NE(registry_, nullptr) << "the registry did not start";
    ASSERT_TRUE(setupError_.empty()) << setupError_;
  }

  RegistryClientOptions options(const std::string& password) const {
    RegistryClientOptions o;
    o.registry = registry_->address();
    o.credentials = RegistryCredentials{"qcs", password, "", registry_->address()};
    o.connectTimeout = 5s;
    o.requestTimeout = 30s;
    o.blobTimeout = 60s;
    return o;
  }
  ImageReference ref(const std::string& tag) const {
    return ImageReference{registry_->address(), "qcs/standin", tag, ""};
  }

  static std::unique_ptr<Dockerd> dockerd_;
  static std::unique_ptr<Registry> registry_;
  static std::string setupError_;
};

std::unique_ptr<Dockerd> RegistryClientIntegrationTest::dockerd_;
std::unique_ptr<Registry> RegistryClientIntegrationTest::registry_;
std::string RegistryClientIntegrationTest::setupError_;

TEST_F(RegistryClientIntegrationTest, ResolvesAndFetchesThePushedImage) {
  RegistryClient client(options("right-password"));
  auto resolved = client.resolve(ref("1"));
  ASSERT_TRUE(resolved.ok()) << resolved.message();
  EXPECT_EQ(resolved->mediaType, kDockerManifestV2) << "docker push writes Docker v2 schema 2";
  EXPECT_TRUE(isSha256Digest(resolved->digest));
  EXPECT_EQ(resolved->digest, "sha256:" + sha256Hex(resolved->raw));
  EXPECT_TRUE(resolved->indexDigest.empty());
  EXPECT_EQ(resolved->config.mediaType, "application/vnd.docker.container.image.v1+json");
  ASSERT_FALSE(resolved->layers.empty());

  // The config is the image's: its entrypoint is the stand-in sensor.
  std::string config;
  auto fetchedConfig = client.fetchBlob("qcs/standin", resolved->config, [&](std::string_view chunk) {
    config.append(chunk);
    return okStatus();
  });
  ASSERT_TRUE(fetchedConfig.ok()) << fetchedConfig.message();
  EXPECT_EQ("sha256:" + sha256Hex(config), resolved->config.digest);
  auto configJson = nlohmann::json::parse(config, nullptr, false);
  ASSERT_TRUE(configJson.is_object());
  EXPECT_EQ(configJson.value("os", ""), "linux");

  for (const auto& layer : resolved->layers) {
    std::string bytes;
    auto fetched = client.fetchBlob("qcs/standin", layer, [&](std::string_view chunk) {
      bytes.append(chunk);
      return okStatus();
    });
    ASSERT_TRUE(fetched.ok()) << fetched.message();
    EXPECT_EQ(int64_t(bytes.size()), layer.size);
    EXPECT_EQ("sha256:" + sha256Hex(bytes), layer.digest);
  }

  // Pinned by digest, the same manifest comes back.
  auto pinned = client.resolve(ImageReference{registry_->address(), "qcs/standin", "", resolved->digest});
  ASSERT_TRUE(pinned.ok()) << pinned.message();
  EXPECT_EQ(pinned->raw, resolved->raw);

  // A descriptor that lies about the size is caught.
  Descriptor lying = resolved->config;
  lying.size -= 1;
  auto mismatch = client.fetchBlob("qcs/standin", lying, [](std::string_view) { return okStatus(); });
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.code(), ErrorCode::kProtocol);
  EXPECT_NE(mismatch.message().find("size mismatch"), std::string::npos) << mismatch.message();
}

TEST_F(RegistryClientIntegrationTest, WrongPasswordIsUnauthenticatedWithTheRegistrysMessage) {
  RegistryClient client(options("wrong-password"));
  auto resolved = client.resolve(ref("1"));
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.code(), ErrorCode::kUnauthenticated) << resolved.message();
  EXPECT_NE(resolved.message().find("authentication required"), std::string::npos) << resolved.message();
  EXPECT_EQ(resolved.message().find("wrong-password"), std::string::npos) << "no credentials in errors";

  RegistryClientOptions anonymousOptions = options("");
  anonymousOptions.credentials.reset();
  RegistryClient anonymous(std::move(anonymousOptions));
  auto denied = anonymous.resolve(ref("1"));
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.code(), ErrorCode::kUnauthenticated) << denied.message();
}

TEST_F(RegistryClientIntegrationTest, UnknownTagIsNotFound) {
  RegistryClient client(options("right-password"));
  auto resolved = client.resolve(ref("no-such-tag"));
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.code(), ErrorCode::kNotFound) << resolved.message();
  EXPECT_NE(resolved.message().find("manifest unknown"), std::string::npos) << resolved.message();

  auto unknownRepo = client.resolve(ImageReference{registry_->address(), "qcs/nothing-here", "1", ""});
  ASSERT_FALSE(unknownRepo.ok());
  EXPECT_EQ(unknownRepo.code(), ErrorCode::kNotFound) << unknownRepo.message();
}

}  // namespace
}  // namespace qcs::runtime::registry

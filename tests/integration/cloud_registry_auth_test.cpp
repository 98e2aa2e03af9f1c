// Registry auth `acr` and `gcr` over real HTTP (libcurl) against the loopback Azure IMDS / ACR
// exchange / GCP metadata emulator, which checks the headers, parameters and token lifetimes the
// real services check. Every endpoint is overridden to 127.0.0.1; nothing leaves the machine.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "harness/cloud_metadata_emulator.h"
#include "platform/acr_auth.h"
#include "platform/cloud_http.h"
#include "platform/gcr_auth.h"
#include "runtime/image_reference.h"

namespace qcs::testing {
namespace {

using nlohmann::json;
using platform::HttpRequest;
using runtime::ImageReference;

ImageReference image(const std::string& text) { return runtime::parseImageReference(text).value(); }

platform::EnvLookup envOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

class CloudRegistryAuthTest : public ::testing::Test {
 protected:
  void start(CloudMetadataEmulator::Options options = {}) {
    emulator_ = CloudMetadataEmulator::start(std::move(options));
    ASSERT_NE(emulator_, nullptr);
  }

  std::unique_ptr<platform::RegistryAuthProvider> gcr(platform::GcrAuthOptions options = {}) {
    // Through the environment variable, as on a real node with GCE_METADATA_HOST set.
    return platform::makeGcrAuth(std::move(options), envOf({{"GCE_METADATA_HOST", emulator_->hostAndPort()}}), http_,
                                 clock_);
  }

  std::unique_ptr<platform::RegistryAuthProvider> acr(platform::AcrAuthOptions options = {}) {
    options.exchangeEndpoint = emulator_->endpoint();
    if (options.registryOverride.empty()) options.registryOverride = emulator_->acrService();
    return platform::makeAcrAuth(std::move(options), envOf({{"QCS_AZURE_IMDS_ENDPOINT", emulator_->endpoint()}}), http_,
                                 clock_);
  }

  std::unique_ptr<CloudMetadataEmulator> emulator_;
  std::shared_ptr<platform::CloudHttpClient> http_ = platform::makeCurlHttpClient();
  std::shared_ptr<const Clock> clock_ = std::make_shared<SystemClock>();
};

// ---- the emulator checks what the services check ----

TEST_F(CloudRegistryAuthTest, EmulatorRefusesRequestsWithoutTheRequiredHeaders) {
  start();
  auto imds = http_->send(HttpRequest{
      "GET", emulator_->endpoint() + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x", {}, ""});
  ASSERT_TRUE(imds.ok()) << imds.message();
  EXPECT_EQ(imds->status, 400);
  EXPECT_EQ(json::parse(imds->body)["error_description"], "Required metadata header not specified");

  auto proxied =
      http_->send(HttpRequest{"GET",
                              emulator_->endpoint() + "/computeMetadata/v1/instance/service-accounts/default/token",
                              {{"Metadata-Flavor", "Google"}, {"X-Forwarded-For", "10.0.0.1"}},
                              ""});
  ASSERT_TRUE(proxied.ok());
  EXPECT_EQ(proxied->status, 403);
  auto bare = http_->send(HttpRequest{
      "GET", emulator_->endpoint() + "/computeMetadata/v1/instance/service-accounts/default/token", {}, ""});
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->status, 403);
  EXPECT_EQ(emulator_->rejections().size(), 3u);
}

// ---- GCR ----

TEST_F(CloudRegistryAuthTest, GcrTokenIsOneTheRegistryAcceptsAndIsCached) {
  start();
  auto provider = gcr();
  auto creds = provider->credentialsFor(image("europe-west1-docker.pkg.dev/proj/qualys/qcs-sensor:1.2.3"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds.value().has_value());
  EXPECT_EQ(creds.value()->username, "oauth2accesstoken");
  EXPECT_TRUE(emulator_->acceptsGcpToken(creds.value()->password));
  EXPECT_TRUE(emulator_->rejections().empty()) << emulator_->rejections().front();

  auto again = provider->credentialsFor(image("gcr.io/proj/qcs-sensor"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value()->password, creds.value()->password);
  EXPECT_EQ(emulator_->calls("gcp-token"), 1);

  auto other = provider->credentialsFor(image("docker.io/qualys/qcs-sensor"));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other.value().has_value());
  EXPECT_EQ(emulator_->calls("gcp-token"), 1);
}

TEST_F(CloudRegistryAuthTest, GcrTokenShorterThanTheMarginIsFetchedEachTime) {
  CloudMetadataEmulator::Options options;
  options.gcpTokenLifetime = std::chrono::seconds(30);
  start(options);
  auto provider = gcr();
  auto first = provider->credentialsFor(image("gcr.io/proj/x"));
  auto second = provider->credentialsFor(image("gcr.io/proj/x"));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first.value()->password, second.value()->password);
  EXPECT_EQ(emulator_->calls("gcp-token"), 2);
}

TEST_F(CloudRegistryAuthTest, GcrWithoutServiceAccountSaysSo) {
  CloudMetadataEmulator::Options options;
  options.gcpServiceAccount = false;
  start(options);
  auto creds = gcr()->credentialsFor(image("gcr.io/proj/x"));
  ASSERT_FALSE(creds.ok());
  EXPECT_EQ(creds.code(), ErrorCode::kNotFound);
  EXPECT_NE(creds.message().find("service account"), std::string::npos) << creds.message();
}

TEST_F(CloudRegistryAuthTest, GcrMetadataServerDownIsUnavailable) {
  start();
  platform::GcrAuthOptions options;
  options.metadataHost = "127.0.0.1:1";  // nothing listens on port 1
  auto creds = gcr(options)->credentialsFor(image("gcr.io/proj/x"));
  ASSERT_FALSE(creds.ok());
  EXPECT_NE(creds.message().find("GCE_METADATA_HOST"), std::string::npos) << creds.message();
  EXPECT_EQ(emulator_->calls("gcp-token"), 0);
}

// ---- ACR ----

TEST_F(CloudRegistryAuthTest, AcrRefreshTokenIsOneTheRegistryAcceptsAndIsCached) {
  start();
  auto provider = acr();
  auto creds = provider->credentialsFor(image(emulator_->acrService() + "/qualys/qcs-sensor:1.2.3"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds.value().has_value());
  EXPECT_EQ(creds.value()->username, "00000000-0000-0000-0000-000000000000");
  EXPECT_TRUE(emulator_->acceptsAcrRefreshToken(creds.value()->password));
  EXPECT_TRUE(emulator_->rejections().empty()) << emulator_->rejections().front();
  EXPECT_EQ(emulator_->imdsClientIds(), std::vector<std::string>{""});

  auto again = provider->credentialsFor(image(emulator_->acrService() + "/qualys/qcs-sensor:1.2.4"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value()->password, creds.value()->password);
  EXPECT_EQ(emulator_->calls("azure-imds"), 1);
  EXPECT_EQ(emulator_->calls("acr-exchange"), 1);
}

TEST_F(CloudRegistryAuthTest, AcrByHostNameWithTheExchangeRedirected) {
  CloudMetadataEmulator::Options options;
  options.acrService = "qcstest.azurecr.io";
  start(options);
  platform::AcrAuthOptions acrOptions;
  acrOptions.registryOverride = "unused.example";  // the azurecr.io name alone selects acr
  auto creds = acr(acrOptions)->credentialsFor(image("qcstest.azurecr.io/qualys/qcs-sensor:1"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds.value().has_value());
  EXPECT_TRUE(emulator_->acceptsAcrRefreshToken(creds.value()->password));
}

TEST_F(CloudRegistryAuthTest, AcrShortRefreshTokenLifetimeIsExchangedAgain) {
  CloudMetadataEmulator::Options options;
  options.refreshTokenLifetime = std::chrono::minutes(10);  // below the 15-minute margin
  start(options);
  auto provider = acr();
  ASSERT_TRUE(provider->credentialsFor(image(emulator_->acrService() + "/x")).ok());
  ASSERT_TRUE(provider->credentialsFor(image(emulator_->acrService() + "/x")).ok());
  EXPECT_EQ(emulator_->calls("acr-exchange"), 2);
}

TEST_F(CloudRegistryAuthTest, AcrUserAssignedIdentity) {
  CloudMetadataEmulator::Options options;
  options.userAssignedClientIds = {"7d3c1a2b-1111-4222-8333-944455556666"};
  start(options);
  platform::AcrAuthOptions known;
  known.clientId = "7d3c1a2b-1111-4222-8333-944455556666";
  auto creds = acr(known)->credentialsFor(image(emulator_->acrService() + "/x"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  EXPECT_EQ(emulator_->imdsClientIds().back(), known.clientId);

  platform::AcrAuthOptions unknown;
  unknown.clientId = "00000000-dead-4bee-8f00-000000000000";
  auto refused = acr(unknown)->credentialsFor(image(emulator_->acrService() + "/x"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(refused.message().find("Identity not found"), std::string::npos) << refused.message();
}

TEST_F(CloudRegistryAuthTest, AcrWithoutPullPermissionIsDenied) {
  start();
  emulator_->setAcrPull(false);
  auto refused = acr()->credentialsFor(image(emulator_->acrService() + "/x"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.message().find("AcrPull"), std::string::npos) << refused.message();
  EXPECT_EQ(emulator_->rejections().back(), "acr-exchange: no AcrPull");
}

TEST_F(CloudRegistryAuthTest, AcrExpiredAadTokenIsRefusedByTheExchange) {
  start();
  // The lifetime check itself: an AAD token past its expiry cannot be exchanged.
  auto imds = http_->send(HttpRequest{"GET",
                                      emulator_->endpoint() +
                                          "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%"
                                          "2Fmanagement.azure.com%2F",
                                      {{"Metadata", "true"}},
                                      ""});
  ASSERT_TRUE(imds.ok());
  ASSERT_EQ(imds->status, 200);
  auto doc = json::parse(imds->body);
  EXPECT_TRUE(doc["expires_on"].is_string());
  emulator_->expireAadTokens();
  auto exchange = http_->send(HttpRequest{"POST",
                                          emulator_->endpoint() + "/oauth2/exchange",
                                          {{"Content-Type", "application/x-www-form-urlencoded"}},
                                          "grant_type=access_token&service=" + emulator_->acrService() +
                                              "&access_token=" + doc["access_token"].get<std::string>()});
  ASSERT_TRUE(exchange.ok());
  EXPECT_EQ(exchange->status, 401);
  EXPECT_EQ(json::parse(exchange->body)["errors"][0]["code"], "UNAUTHORIZED");
  // The provider fetches a fresh AAD token each time, so it still succeeds.
  auto creds = acr()->credentialsFor(image(emulator_->acrService() + "/x"));
  ASSERT_TRUE(creds.ok()) << creds.message();
}

}  // namespace
}  // namespace qcs::testing

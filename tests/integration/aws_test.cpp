// The cloud HTTP client (libcurl), the credential chain, Secrets Manager and ECR against the
// loopback AWS emulator: real HTTP, real signatures checked the way AWS checks them.
// Every endpoint is overridden to 127.0.0.1; nothing leaves the machine.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <map>
#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "harness/aws_emulator.h"
#include "harness/harness.h"
#include "platform/aws_credentials.h"
#include "platform/aws_secrets.h"
#include "platform/cloud_http.h"
#include "platform/ecr_auth.h"
#include "runtime/image_reference.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using platform::AwsChainOptions;
using platform::AwsEnvironment;
using platform::AwsSecretRef;
using platform::HttpRequest;

constexpr const char* kActivationId = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
constexpr const char* kCustomerId = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";

// Sets environment variables for the test's duration (curl reads the proxy variables itself).
class ScopedEnv {
 public:
  void set(const std::string& name, const std::string& value) {
    const char* old = std::getenv(name.c_str());
    saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
    ::setenv(name.c_str(), value.c_str(), 1);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ::setenv(it->first.c_str(), it->second->c_str(), 1);
      } else {
        ::unsetenv(it->first.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

class AwsTest : public ::testing::Test {
 protected:
  void SetUp() override { start(AwsEmulator::Options{}); }

  void start(AwsEmulator::Options options) {
    emulator_ = AwsEmulator::start(options);
    ASSERT_NE(emulator_, nullptr);
    // Every path the chain could take points at the emulator; nothing else is configured.
    vars_ = {{"AWS_EC2_METADATA_SERVICE_ENDPOINT", emulator_->endpoint()}};
  }

  platform::EnvLookup env() {
    return [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars_.find(name);
      return it == vars_.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
  }

  AwsEnvironment aws() {
    AwsEnvironment out;
    out.env = env();
    out.http = platform::makeRetryingHttpClient(
        platform::makeCurlHttpClient(), platform::RetryPolicy{4, 10ms, 50ms, 2.0, 0.5},
        [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); }, std::make_shared<SystemRandom>());
    out.clock = clock_;
    AwsChainOptions chain;
    chain.env = out.env;
    chain.http = out.http;
    chain.clock = out.clock;
    out.credentials = platform::makeAwsCredentialChain(chain);
    return out;
  }

  AwsSecretRef ref(const std::string& id, const std::string& key = "") {
    AwsSecretRef r;
    r.secretId = id;
    r.jsonKey = key;
    r.region = "us-east-1";
    r.endpoint = emulator_->endpoint();
    return r;
  }

  std::unique_ptr<AwsEmulator> emulator_;
  std::map<std::string, std::string> vars_;
  std::shared_ptr<SystemClock> clock_ = std::make_shared<SystemClock>();
};

// ---- the HTTP client ----

TEST_F(AwsTest, HttpClientCapsTheResponseSize) {
  platform::CurlHttpOptions options;
  options.maxResponseBytes = 1000;
  auto client = platform::makeCurlHttpClient(options);
  HttpRequest small{"GET", emulator_->endpoint() + "/qcs-test/bytes?n=1000", {}, "", 0ms, 0ms};
  auto ok = client->send(small);
  ASSERT_TRUE(ok.ok()) << ok.message();
  EXPECT_EQ(ok->body.size(), 1000u);
  HttpRequest large{"GET", emulator_->endpoint() + "/qcs-test/bytes?n=1001", {}, "", 0ms, 0ms};
  auto tooLarge = client->send(large);
  ASSERT_FALSE(tooLarge.ok());
  EXPECT_EQ(tooLarge.code(), ErrorCode::kProtocol);
  EXPECT_NE(tooLarge.message().find("/qcs-test/bytes"), std::string::npos);
  EXPECT_EQ(tooLarge.message().find("n=1001"), std::string::npos) << "the query is not put in messages";
}

TEST_F(AwsTest, HttpClientRetriesServerErrorsAgainstARealServer) {
  auto client = aws().http;
  auto response = client->send(HttpRequest{"GET", emulator_->endpoint() + "/qcs-test/status?code=503", {}, ""});
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(emulator_->calls("status"), 4);
  auto forbidden = client->send(HttpRequest{"GET", emulator_->endpoint() + "/qcs-test/status?code=403", {}, ""});
  ASSERT_TRUE(forbidden.ok());
  EXPECT_EQ(forbidden->status, 403);
  EXPECT_EQ(emulator_->calls("status"), 5) << "a 403 is not retried";
}

TEST_F(AwsTest, HttpClientNamesAnUnreachableEndpoint) {
  // The emulator's port once it is gone: nothing listens there.
  const std::string gone = emulator_->endpoint();
  emulator_.reset();
  auto response = platform::makeCurlHttpClient()->send(HttpRequest{"GET", gone + "/x?token=abc", {}, ""});
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.code(), ErrorCode::kUnavailable);
  EXPECT_NE(response.message().find(gone + "/x"), std::string::npos);
  EXPECT_EQ(response.message().find("token=abc"), std::string::npos);
}

TEST_F(AwsTest, ProxyVariablesAreHonouredButNeverForLoopbackOrMetadata) {
  ScopedEnv scoped;
  // The emulator doubles as a forward proxy that refuses every CONNECT.
  scoped.set("HTTPS_PROXY", emulator_->endpoint());
  scoped.set("https_proxy", emulator_->endpoint());
  scoped.set("HTTP_PROXY", "http://127.0.0.1:1");
  scoped.set("http_proxy", "http://127.0.0.1:1");
  scoped.set("NO_PROXY", "");
  scoped.set("no_proxy", "");
  auto client = platform::makeCurlHttpClient();
  // Loopback goes direct although HTTP_PROXY points at nothing.
  auto direct = client->send(HttpRequest{"GET", emulator_->endpoint() + "/qcs-test/status?code=200", {}, ""});
  ASSERT_TRUE(direct.ok()) << direct.message();
  EXPECT_EQ(direct->status, 200);
  // An https host goes through HTTPS_PROXY (which refuses the tunnel; .invalid never resolves).
  auto proxied = client->send(HttpRequest{"GET", "https://secretsmanager.qcs-test.invalid/", {}, ""});
  EXPECT_FALSE(proxied.ok());
  EXPECT_EQ(emulator_->calls("proxy-connect"), 1);
}

TEST_F(AwsTest, TlsVerificationFailsAgainstAPlainServerAndTheCaBundleIsUsed) {
  platform::CurlHttpOptions options;
  options.caBundlePath = "/nonexistent/qcs-ca.pem";
  auto client = platform::makeCurlHttpClient(options);
  // https to a plain-http port: the handshake fails; the message points at the CA bundle.
  std::string url = emulator_->endpoint();
  url.replace(0, 4, "https");
  auto response = client->send(HttpRequest{"GET", url + "/", {}, ""});
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.code(), ErrorCode::kUnavailable);
  EXPECT_NE(response.message().find("/nonexistent/qcs-ca.pem"), std::string::npos) << response.message();
  // With the system store: still no answer from a server that does not speak TLS.
  auto plain = platform::makeCurlHttpClient()->send(HttpRequest{"GET", url + "/", {}, ""});
  EXPECT_FALSE(plain.ok());
}

// ---- credentials ----

TEST_F(AwsTest, InstanceRoleThroughImdsV2SignsASecretsManagerCall) {
  emulator_->putSecret("qcs/ids", json{{"ACTIVATIONID", kActivationId}, {"CUSTOMERID", kCustomerId}}.dump());
  auto activation = platform::makeAwsSecretsManagerSecret(ref("qcs/ids", "ACTIVATIONID"), aws());
  auto value = activation->read();
  ASSERT_TRUE(value.ok()) << value.message();
  EXPECT_EQ(value.value(), kActivationId);
  EXPECT_EQ(emulator_->calls("imds-token"), 1);
  EXPECT_EQ(emulator_->calls("imds-credentials"), 2);  // role name, then the role's credentials
  EXPECT_EQ(emulator_->calls("GetSecretValue"), 1);
  EXPECT_TRUE(emulator_->rejections().empty()) << emulator_->rejections().front();
  for (const auto& authorization : emulator_->receivedAuthorizations()) {
    EXPECT_EQ(authorization.find(kActivationId), std::string::npos);
  }
  // Cached: the next reads do not call AWS.
  EXPECT_EQ(activation->read().value(), kActivationId);
  EXPECT_EQ(emulator_->calls("GetSecretValue"), 1);
}

TEST_F(AwsTest, EcsCredentialsEndpointWithAuthorizationToken) {
  AwsEmulator::Options options;
  options.ecsAuthorizationToken = "ecs-auth-token-123";
  start(options);
  vars_["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = options.ecsPath;
  vars_["QCS_AWS_CONTAINER_CREDENTIALS_HOST"] = emulator_->endpoint().substr(7);
  vars_["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "ecs-auth-token-123";
  emulator_->putSecret("qcs/ids", kCustomerId);
  auto value = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), aws())->read();
  ASSERT_TRUE(value.ok()) << value.message();
  EXPECT_EQ(value.value(), kCustomerId);
  EXPECT_EQ(emulator_->calls("ecs-credentials"), 1);
  EXPECT_EQ(emulator_->calls("imds-token"), 0) << "a configured ECS endpoint wins over IMDS";

  vars_["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "wrong";
  auto refused = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), aws())->read();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(refused.message().find("wrong"), std::string::npos);
}

TEST_F(AwsTest, EcsFullUriOnLoopback) {
  vars_["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = emulator_->endpoint() + emulator_->options().ecsPath;
  emulator_->putSecret("qcs/ids", kCustomerId);
  auto value = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), aws())->read();
  ASSERT_TRUE(value.ok()) << value.message();
  EXPECT_EQ(emulator_->calls("ecs-credentials"), 1);
}

TEST_F(AwsTest, EnvironmentKeysAreAcceptedAndWrongOnesRefused) {
  auto key = emulator_->addAccessKey();
  vars_["AWS_ACCESS_KEY_ID"] = key.accessKeyId;
  vars_["AWS_SECRET_ACCESS_KEY"] = key.secretAccessKey;
  emulator_->putSecret("qcs/ids", kCustomerId);
  EXPECT_EQ(platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), aws())->read().value(), kCustomerId);
  EXPECT_EQ(emulator_->calls("imds-token"), 0);

  vars_["AWS_SECRET_ACCESS_KEY"] = "not-the-secret";
  auto refused = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), aws())->read();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(refused.message().find("InvalidSignatureException"), std::string::npos);
  EXPECT_EQ(refused.message().find("not-the-secret"), std::string::npos);
}

TEST_F(AwsTest, ExpiredTokenIsRefreshedOnceAndTheCallSucceeds) {
  emulator_->putSecret("qcs/ids", kCustomerId);
  auto env = aws();
  auto value = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), env)->read();
  ASSERT_TRUE(value.ok()) << value.message();
  emulator_->expireIssuedCredentials();
  emulator_->expireImdsTokens();
  auto again = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), env)->read();
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(emulator_->calls("GetSecretValue"), 3);  // ok, ExpiredTokenException, ok
  EXPECT_EQ(emulator_->calls("imds-token"), 2);      // the stale session token got a 401
  auto rejections = emulator_->rejections();
  EXPECT_TRUE(std::any_of(rejections.begin(), rejections.end(),
                          [](const std::string& r) { return r.find("ExpiredTokenException") != std::string::npos; }));
}

// ---- Secrets Manager ----

TEST_F(AwsTest, SecretsManagerErrorShapes) {
  emulator_->putSecret("qcs/ids", kCustomerId);
  emulator_->putSecret("qcs/denied", kCustomerId);
  emulator_->denySecret("qcs/denied");
  auto env = aws();

  auto missing = platform::makeAwsSecretsManagerSecret(ref("qcs/nope"), env)->read();
  EXPECT_EQ(missing.code(), ErrorCode::kNotFound) << missing.message();
  EXPECT_NE(missing.message().find("ResourceNotFoundException"), std::string::npos);

  auto denied = platform::makeAwsSecretsManagerSecret(ref("qcs/denied"), env)->read();
  EXPECT_EQ(denied.code(), ErrorCode::kPermissionDenied) << denied.message();
  EXPECT_NE(denied.message().find("AccessDeniedException"), std::string::npos);
  EXPECT_NE(denied.message().find("kms:Decrypt"), std::string::npos);
  EXPECT_EQ(denied.message().find(kCustomerId), std::string::npos);

  auto stage = ref("qcs/ids");
  stage.versionStage = "AWSPENDING";
  EXPECT_EQ(platform::makeAwsSecretsManagerSecret(stage, env)->read().code(), ErrorCode::kNotFound);

  // Throttling is retried by the client; two throttles then success.
  const int before = emulator_->calls("GetSecretValue");
  emulator_->failNext("GetSecretValue", "ThrottlingException", 2);
  auto throttled = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), env)->read();
  ASSERT_TRUE(throttled.ok()) << throttled.message();
  EXPECT_EQ(emulator_->calls("GetSecretValue") - before, 3);

  // Throttled past the retries: kUnavailable.
  emulator_->failNext("GetSecretValue", "ThrottlingException", 4);
  auto exhausted = platform::makeAwsSecretsManagerSecret(ref("qcs/ids"), env)->read();
  EXPECT_EQ(exhausted.code(), ErrorCode::kUnavailable) << exhausted.message();
}

TEST_F(AwsTest, RotationIsSeenAfterTheRefreshInterval) {
  emulator_->putSecret("qcs/ids", json{{"ACTIVATIONID", kActivationId}}.dump());
  auto r = ref("qcs/ids", "ACTIVATIONID");
  r.refreshInterval = 300ms;
  auto source = platform::makeAwsSecretsManagerSecret(r, aws());
  ASSERT_EQ(source->read().value(), kActivationId);
  const std::string rotated = "99999999-8888-4777-8666-555555555555";
  emulator_->putSecret("qcs/ids", json{{"ACTIVATIONID", rotated}}.dump());
  EXPECT_TRUE(waitFor([&] { return source->read().value() == rotated; }, 10s));
  auto previous = ref("qcs/ids", "ACTIVATIONID");
  previous.versionStage = "AWSPREVIOUS";
  EXPECT_EQ(platform::makeAwsSecretsManagerSecret(previous, aws())->read().value(), kActivationId);
}

TEST_F(AwsTest, RegionFromImdsWhenNothingElseSaysIt) {
  AwsEmulator::Options options;
  options.region = "eu-central-1";
  start(options);
  emulator_->putSecret("qcs/ids", kCustomerId);
  auto r = ref("qcs/ids");
  r.region.clear();
  auto value = platform::makeAwsSecretsManagerSecret(r, aws())->read();
  ASSERT_TRUE(value.ok()) << value.message();
  EXPECT_EQ(emulator_->calls("imds-region"), 1);
}

// ---- ECR ----

TEST_F(AwsTest, EcrTokenDecodesAndIsCached) {
  AwsEmulator::Options options;
  options.ecrPassword = "ecr-pass-42";
  start(options);
  platform::EcrAuthOptions ecr;
  ecr.registryOverride = "127.0.0.1:5999";
  ecr.endpointOverride = emulator_->endpoint();
  vars_["AWS_REGION"] = "us-east-1";
  auto provider = platform::makeEcrAuth(ecr, aws());
  auto image = runtime::parseImageReference("127.0.0.1:5999/qualys/qcs-sensor:1");
  ASSERT_TRUE(image.ok());
  auto creds = provider->credentialsFor(image.value());
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds->has_value());
  EXPECT_EQ((*creds)->username, "AWS");
  EXPECT_EQ((*creds)->password, "ecr-pass-42");
  EXPECT_TRUE(provider->credentialsFor(image.value()).ok());
  EXPECT_EQ(emulator_->calls("GetAuthorizationToken"), 1);
  EXPECT_TRUE(emulator_->rejections().empty());
}

TEST_F(AwsTest, EcrAccessDeniedIsAPermissionError) {
  emulator_->failNext("GetAuthorizationToken", "AccessDeniedException");
  platform::EcrAuthOptions ecr;
  ecr.registryOverride = "127.0.0.1:5999";
  ecr.endpointOverride = emulator_->endpoint();
  vars_["AWS_REGION"] = "us-east-1";
  auto creds = platform::makeEcrAuth(ecr, aws())
                   ->credentialsFor(runtime::parseImageReference("127.0.0.1:5999/qualys/qcs-sensor:1").value());
  ASSERT_FALSE(creds.ok());
  EXPECT_EQ(creds.code(), ErrorCode::kPermissionDenied);
}

}  // namespace
}  // namespace qcs::testing

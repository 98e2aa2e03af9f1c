// The Secrets Manager secret source and the ECR auth provider, against a scripted HTTP client that
// checks the requests the way the services do (target, signature scope, body) and simulated time.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "aws_fakes.h"
#include "common/encoding.h"
#include "platform/aws_secrets.h"
#include "platform/ecr_auth.h"
#include "runtime/image_reference.h"

namespace qcs::platform {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::FakeHttp;
using testing::headerOf;
using testing::reply;

constexpr const char* kActivation = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

class AwsSecretsTest : public ::testing::Test {
 protected:
  AwsEnvironment aws(FakeHttp::Handler handler) {
    fake_ = std::make_shared<FakeHttp>(std::move(handler));
    AwsEnvironment env;
    env.env = [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars_.find(name);
      return it == vars_.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
    env.http = fake_;
    env.credentials = makeStaticAwsCredentials(AwsCredentials{"AKIDTEST", "SECRETTEST", "", std::nullopt, "test"});
    env.clock = clock_;
    return env;
  }

  // A Secrets Manager that checks what the service checks and answers with `secretString`.
  FakeHttp::Handler secretsManager(std::string* secretString, std::string expectedStage = "") {
    return [this, secretString, expectedStage](const HttpRequest& r) -> Result<HttpResponse> {
      EXPECT_EQ(r.method, "POST");
      EXPECT_EQ(headerOf(r, "X-Amz-Target"), std::optional<std::string>("secretsmanager.GetSecretValue"));
      EXPECT_EQ(headerOf(r, "Content-Type"), std::optional<std::string>("application/x-amz-json-1.1"));
      auto auth = parseSigV4Authorization(headerOf(r, "Authorization").value_or(""));
      if (!auth || auth->service != "secretsmanager") {
        return reply(400, R"({"__type":"IncompleteSignatureException"})");
      }
      lastRegion_ = auth->region;
      auto body = json::parse(r.body);
      EXPECT_EQ(body.value("VersionStage", ""), expectedStage);
      if (body["SecretId"] != "qcs/ids") {
        return reply(
            400,
            R"({"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."})");
      }
      return reply(200, json{{"ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:qcs/ids-AbCdEf"},
                             {"Name", "qcs/ids"},
                             {"SecretString", *secretString},
                             {"VersionId", "v1"},
                             {"VersionStages", {"AWSCURRENT"}}}
                            .dump());
    };
  }

  std::map<std::string, std::string> vars_;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::shared_ptr<FakeHttp> fake_;
  std::string lastRegion_;
};

TEST_F(AwsSecretsTest, SelectsTheJsonKeyAndCachesForTheRefreshInterval) {
  std::string secret = json{{"ACTIVATIONID", kActivation}, {"CUSTOMERID", "c"}}.dump();
  AwsSecretRef ref{"qcs/ids", "ACTIVATIONID", "eu-west-1", "", "http://127.0.0.1:1", 5min, 1min};
  auto source = makeAwsSecretsManagerSecret(ref, aws(secretsManager(&secret)));
  EXPECT_EQ(source->describe(), "aws-secretsmanager qcs/ids key ACTIVATIONID");
  auto value = source->read();
  ASSERT_TRUE(value.ok()) << value.message();
  EXPECT_EQ(value.value(), kActivation);
  EXPECT_EQ(lastRegion_, "eu-west-1");
  // Every 30s reconcile reads; AWS is asked once per refresh interval.
  for (int i = 0; i < 9; ++i) {
    clock_->advance(30s);
    EXPECT_EQ(source->read().value(), kActivation);
  }
  EXPECT_EQ(fake_->requests.size(), 1u);

  // Rotation: noticed after the refresh interval.
  secret = json{{"ACTIVATIONID", "11111111-2222-3333-4444-555555555555"}}.dump();
  EXPECT_EQ(source->read().value(), kActivation);
  clock_->advance(31s);
  EXPECT_EQ(source->read().value(), "11111111-2222-3333-4444-555555555555");
  EXPECT_EQ(fake_->requests.size(), 2u);
}

TEST_F(AwsSecretsTest, AMissingKeyListsTheKeysButNoValue) {
  std::string secret = json{{"CUSTOMERID", "c-value-secret"}, {"OTHER", "o-value-secret"}}.dump();
  AwsSecretRef ref{"qcs/ids", "ACTIVATIONID", "eu-west-1", "", "http://127.0.0.1:1"};
  auto value = makeAwsSecretsManagerSecret(ref, aws(secretsManager(&secret)))->read();
  ASSERT_FALSE(value.ok());
  EXPECT_EQ(value.code(), ErrorCode::kNotFound);
  EXPECT_NE(value.message().find("ACTIVATIONID"), std::string::npos);
  EXPECT_NE(value.message().find("CUSTOMERID, OTHER"), std::string::npos);
  EXPECT_EQ(value.message().find("value-secret"), std::string::npos);
}

TEST_F(AwsSecretsTest, PlainSecretStringAndVersionStage) {
  std::string secret = std::string("  ") + kActivation + "\n";
  AwsSecretRef ref{"qcs/ids", "", "eu-west-1", "AWSPREVIOUS", "http://127.0.0.1:1"};
  auto source = makeAwsSecretsManagerSecret(ref, aws(secretsManager(&secret, "AWSPREVIOUS")));
  EXPECT_EQ(source->read().value(), kActivation);
  EXPECT_EQ(source->describe(), "aws-secretsmanager qcs/ids stage AWSPREVIOUS");
}

TEST_F(AwsSecretsTest, RegionFromTheEnvironmentAndThePublicEndpointByDefault) {
  vars_ = {{"AWS_REGION", "ap-south-1"}};
  std::string secret = kActivation;
  auto env = aws([&](const HttpRequest& r) -> Result<HttpResponse> {
    EXPECT_EQ(r.url, "https://secretsmanager.ap-south-1.amazonaws.com/");
    EXPECT_EQ(headerOf(r, "Host"), std::optional<std::string>("secretsmanager.ap-south-1.amazonaws.com"));
    return reply(200, json{{"SecretString", secret}}.dump());
  });
  AwsSecretRef ref{"qcs/ids", "", "", "", ""};
  EXPECT_EQ(makeAwsSecretsManagerSecret(ref, env)->read().value(), kActivation);
}

TEST_F(AwsSecretsTest, ServiceErrorsBecomeActionableErrors) {
  std::string secret = kActivation;
  AwsSecretRef missing{"qcs/other", "", "eu-west-1", "", "http://127.0.0.1:1"};
  auto notFound = makeAwsSecretsManagerSecret(missing, aws(secretsManager(&secret)))->read();
  EXPECT_EQ(notFound.code(), ErrorCode::kNotFound);
  EXPECT_NE(notFound.message().find("qcs/other"), std::string::npos);

  auto denied = makeAwsSecretsManagerSecret(AwsSecretRef{"qcs/ids", "", "eu-west-1", "", "http://127.0.0.1:1"},
                                            aws([](const HttpRequest&) -> Result<HttpResponse> {
                                              return reply(400, R"({"__type":"AccessDeniedException"})");
                                            }))
                    ->read();
  EXPECT_EQ(denied.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.message().find("secretsmanager:GetSecretValue"), std::string::npos);
}

TEST_F(AwsSecretsTest, AnOutageKeepsServingTheCachedValue) {
  std::string secret = kActivation;
  bool up = true;
  auto handler = secretsManager(&secret);
  AwsSecretRef ref{"qcs/ids", "", "eu-west-1", "", "http://127.0.0.1:1", 5min, 1min};
  auto source = makeAwsSecretsManagerSecret(ref, aws([&](const HttpRequest& r) -> Result<HttpResponse> {
                                              if (!up) return makeError(ErrorCode::kUnavailable, "cannot connect");
                                              return handler(r);
                                            }));
  ASSERT_TRUE(source->read().ok());
  EXPECT_EQ(source->staleReason(), "");
  up = false;
  clock_->advance(6min);
  EXPECT_EQ(source->read().value(), kActivation);
  EXPECT_EQ(fake_->requests.size(), 2u);
  // Served from the cache, and said so: the error, never the value.
  EXPECT_NE(source->staleReason().find("cannot connect"), std::string::npos) << source->staleReason();
  EXPECT_EQ(source->staleReason().find(kActivation), std::string::npos);
  clock_->advance(30s);  // within retryAfterFailure: no new call
  EXPECT_EQ(source->read().value(), kActivation);
  EXPECT_EQ(fake_->requests.size(), 2u);
  EXPECT_FALSE(source->staleReason().empty());

  // Back: the next fetch (after retryAfterFailure) is current again, a rotation included.
  up = true;
  secret = "11111111-2222-3333-4444-555555555555";
  clock_->advance(31s);
  EXPECT_EQ(source->read().value(), secret);
  EXPECT_EQ(fake_->requests.size(), 3u);
  EXPECT_EQ(source->staleReason(), "");
}

TEST_F(AwsSecretsTest, JsonKeySelection) {
  EXPECT_EQ(selectJsonKey(R"({"A":"x","N":42})", "N", "s").value(), "42");
  EXPECT_EQ(selectJsonKey("not json", "A", "s").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(selectJsonKey(R"({"A":{"nested":1}})", "A", "s").code(), ErrorCode::kInvalidArgument);
}

// ---- ECR ----

TEST(EcrRegistryHosts, RecognisesEcrHostsAndTheirRegion) {
  EXPECT_EQ(ecrRegistryRegion("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), std::optional<std::string>("eu-west-1"));
  EXPECT_EQ(ecrRegistryRegion("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"),
            std::optional<std::string>("us-east-1"));
  EXPECT_EQ(ecrRegistryRegion("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"),
            std::optional<std::string>("cn-north-1"));
  EXPECT_FALSE(ecrRegistryRegion("docker.io").has_value());
  EXPECT_FALSE(ecrRegistryRegion("12345.dkr.ecr.eu-west-1.amazonaws.com").has_value());
  EXPECT_FALSE(ecrRegistryRegion("123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io").has_value());
}

class EcrAuthTest : public AwsSecretsTest {
 protected:
  FakeHttp::Handler ecr(std::string password, std::chrono::seconds lifetime, int* calls) {
    return [this, password, lifetime, calls](const HttpRequest& r) -> Result<HttpResponse> {
      ++*calls;
      EXPECT_EQ(headerOf(r, "X-Amz-Target"),
                std::optional<std::string>("AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"));
      auto auth = parseSigV4Authorization(headerOf(r, "Authorization").value_or(""));
      if (!auth || auth->service != "ecr") return reply(400, R"({"__type":"InvalidSignatureException"})");
      lastRegion_ = auth->region;
      auto expires =
          std::chrono::duration_cast<std::chrono::seconds>((clock_->wallNow() + lifetime).time_since_epoch()).count();
      return reply(200, json{{"authorizationData",
                              {{{"authorizationToken", base64Encode("AWS:" + password + std::to_string(*calls))},
                                {"expiresAt", double(expires) + 0.25},
                                {"proxyEndpoint", "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"}}}}}
                            .dump());
    };
  }
};

TEST_F(EcrAuthTest, TokenForEcrHostsCachedUntilNearExpiry) {
  int calls = 0;
  auto provider = makeEcrAuth(EcrAuthOptions{}, aws(ecr("pw", 12h, &calls)));
  auto image = runtime::parseImageReference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/qualys/sensor:1");
  ASSERT_TRUE(image.ok());
  auto creds = provider->credentialsFor(image.value());
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds->has_value());
  EXPECT_EQ((*creds)->username, "AWS");
  EXPECT_EQ((*creds)->password, "pw1");
  EXPECT_EQ((*creds)->serverAddress, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
  EXPECT_EQ(lastRegion_, "eu-west-1");
  clock_->advance(11h);
  EXPECT_EQ((*provider->credentialsFor(image.value()))->password, "pw1");
  EXPECT_EQ(calls, 1);
  clock_->advance(40min);  // 20 minutes left: renewed
  EXPECT_EQ((*provider->credentialsFor(image.value()))->password, "pw2");
  EXPECT_EQ(calls, 2);
}

TEST_F(EcrAuthTest, OtherRegistriesAreAnonymousAndTheOverrideIsServed) {
  int calls = 0;
  vars_ = {{"AWS_REGION", "us-east-2"}};
  EcrAuthOptions options;
  options.registryOverride = "127.0.0.1:5000";
  options.endpointOverride = "http://127.0.0.1:9";
  auto provider = makeEcrAuth(options, aws(ecr("pw", 12h, &calls)));
  auto hub = provider->credentialsFor(runtime::parseImageReference("qualys/qcs-sensor:latest").value());
  ASSERT_TRUE(hub.ok());
  EXPECT_FALSE(hub->has_value());
  EXPECT_EQ(calls, 0);
  auto local = provider->credentialsFor(runtime::parseImageReference("127.0.0.1:5000/qcs/sensor:1").value());
  ASSERT_TRUE(local.ok()) << local.message();
  ASSERT_TRUE(local->has_value());
  EXPECT_EQ(lastRegion_, "us-east-2");
  EXPECT_EQ(fake_->requests.back().url, "http://127.0.0.1:9/");
}

TEST_F(EcrAuthTest, AccessDeniedNamesThePermission) {
  auto provider =
      makeEcrAuth(EcrAuthOptions{}, aws([](const HttpRequest&) -> Result<HttpResponse> {
                    return reply(400, R"({"__type":"AccessDeniedException","message":"User is not authorized"})");
                  }));
  auto creds = provider->credentialsFor(
      runtime::parseImageReference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/qualys/sensor:1").value());
  ASSERT_FALSE(creds.ok());
  EXPECT_EQ(creds.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(creds.message().find("ecr:GetAuthorizationToken"), std::string::npos);
}

}  // namespace
}  // namespace qcs::platform

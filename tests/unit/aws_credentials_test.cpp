// The AWS credential chain (environment, ECS endpoint, IMDSv2), its cache, region resolution and
// the signed JSON call, against a scripted HTTP client and simulated time.
#include "platform/aws_credentials.h"

#include <gtest/gtest.h>

#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "aws_fakes.h"

namespace qcs::platform {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::FakeHttp;
using testing::headerOf;
using testing::reply;

std::string iso(std::chrono::system_clock::time_point t) {
  std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Env {
  std::map<std::string, std::string> vars;
  EnvLookup lookup() const {
    return [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars.find(name);
      return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
  }
};

class AwsCredentialsTest : public ::testing::Test {
 protected:
  std::shared_ptr<AwsCredentialsProvider> chain(FakeHttp::Handler handler) {
    fake_ = std::make_shared<FakeHttp>(std::move(handler));
    AwsChainOptions options;
    options.env = env_.lookup();
    options.http = fake_;
    options.clock = clock_;
    return makeAwsCredentialChain(std::move(options));
  }
  std::string credsJson(const std::string& key, std::chrono::seconds lifetime, bool imds = false) {
    json doc{{"AccessKeyId", key},
             {"SecretAccessKey", "secret-" + key},
             {"Token", "token-" + key},
             {"Expiration", iso(clock_->wallNow() + lifetime)}};
    if (imds) {
      doc["Code"] = "Success";
      doc["Type"] = "AWS-HMAC";
    }
    return doc.dump();
  }

  Env env_;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::shared_ptr<FakeHttp> fake_;
};

TEST_F(AwsCredentialsTest, EnvironmentComesFirstAndNeedsNoNetwork) {
  env_.vars = {{"AWS_ACCESS_KEY_ID", "AKIAENV"},
               {"AWS_SECRET_ACCESS_KEY", "envsecret"},
               {"AWS_SESSION_TOKEN", "envtoken"},
               {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x"}};
  auto provider = chain([](const HttpRequest&) -> Result<HttpResponse> { return reply(500, ""); });
  auto creds = provider->credentials();
  ASSERT_TRUE(creds.ok()) << creds.message();
  EXPECT_EQ(creds->accessKeyId, "AKIAENV");
  EXPECT_EQ(creds->sessionToken, "envtoken");
  EXPECT_EQ(creds->source, "environment");
  EXPECT_TRUE(fake_->requests.empty());
}

TEST_F(AwsCredentialsTest, HalfTheEnvironmentIsAnErrorWithoutTheValue) {
  env_.vars = {{"AWS_SECRET_ACCESS_KEY", "envsecret"}};
  auto creds = chain([](const HttpRequest&) -> Result<HttpResponse> { return reply(500, ""); })->credentials();
  ASSERT_FALSE(creds.ok());
  EXPECT_NE(creds.message().find("AWS_ACCESS_KEY_ID"), std::string::npos);
  EXPECT_EQ(creds.message().find("envsecret"), std::string::npos);
}

TEST_F(AwsCredentialsTest, EcsRelativeUriIsCachedUntilFiveMinutesBeforeExpiry) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc"},
               {"QCS_AWS_CONTAINER_CREDENTIALS_HOST", "127.0.0.1:1"}};
  int served = 0;
  auto provider = chain([&](const HttpRequest& r) -> Result<HttpResponse> {
    EXPECT_EQ(r.url, "http://127.0.0.1:1/v2/credentials/abc");
    return reply(200, credsJson("ASIA" + std::to_string(++served), 1h));
  });
  auto first = provider->credentials();
  ASSERT_TRUE(first.ok()) << first.message();
  EXPECT_EQ(first->accessKeyId, "ASIA1");
  EXPECT_EQ(first->source, "ecs");
  clock_->advance(54min);
  EXPECT_EQ(provider->credentials()->accessKeyId, "ASIA1");
  EXPECT_EQ(served, 1);
  clock_->advance(2min);  // 4 minutes left: refreshed
  EXPECT_EQ(provider->credentials()->accessKeyId, "ASIA2");
  EXPECT_EQ(served, 2);
}

TEST_F(AwsCredentialsTest, EcsDefaultHostIsTheLinkLocalAddress) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc"}};
  // The fake answers; nothing leaves the process.
  auto provider = chain([&](const HttpRequest& r) -> Result<HttpResponse> {
    EXPECT_EQ(r.url, "http://169.254.170.2/v2/credentials/abc");
    return reply(200, credsJson("ASIA", 1h));
  });
  EXPECT_TRUE(provider->credentials().ok());
}

TEST_F(AwsCredentialsTest, EcsFullUriSendsTheAuthorizationToken) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds"},
               {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Basic abc"}};
  auto provider = chain([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (headerOf(r, "Authorization") != std::optional<std::string>("Basic abc")) return reply(401, "");
    return reply(200, credsJson("ASIA", 1h));
  });
  auto creds = provider->credentials();
  ASSERT_TRUE(creds.ok()) << creds.message();
}

TEST_F(AwsCredentialsTest, EcsFullUriMustBeHttpsOrLocal) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.5/creds"}};
  auto creds = chain([](const HttpRequest&) -> Result<HttpResponse> { return reply(200, ""); })->credentials();
  ASSERT_FALSE(creds.ok());
  EXPECT_EQ(creds.code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(fake_->requests.empty());
}

TEST_F(AwsCredentialsTest, EcsRejectionIsUnauthenticatedAndNamesTheFix) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds"},
               {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong-token"}};
  auto creds = chain([](const HttpRequest&) -> Result<HttpResponse> {
                 return reply(401, R"({"message":"invalid authorization token"})");
               })->credentials();
  ASSERT_FALSE(creds.ok());
  EXPECT_EQ(creds.code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(creds.message().find("AWS_CONTAINER_AUTHORIZATION_TOKEN"), std::string::npos);
  EXPECT_EQ(creds.message().find("wrong-token"), std::string::npos);
}

TEST_F(AwsCredentialsTest, ImdsV2TokenRoleThenCredentials) {
  env_.vars = {{"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:7/"}};
  int tokens = 0;
  auto provider = chain([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.url == "http://127.0.0.1:7/latest/api/token") {
      EXPECT_EQ(r.method, "PUT");
      EXPECT_EQ(headerOf(r, "X-aws-ec2-metadata-token-ttl-seconds"), std::optional<std::string>("21600"));
      return reply(200, "tok" + std::to_string(++tokens));
    }
    if (headerOf(r, "X-aws-ec2-metadata-token") != std::optional<std::string>("tok" + std::to_string(tokens))) {
      return reply(401, "");
    }
    if (r.url == "http://127.0.0.1:7/latest/meta-data/iam/security-credentials/") return reply(200, "node-role\n");
    if (r.url == "http://127.0.0.1:7/latest/meta-data/iam/security-credentials/node-role") {
      return reply(200, credsJson("ASIAIMDS", 6h, true));
    }
    return reply(404, "");
  });
  auto creds = provider->credentials();
  ASSERT_TRUE(creds.ok()) << creds.message();
  EXPECT_EQ(creds->accessKeyId, "ASIAIMDS");
  EXPECT_EQ(creds->source, "imds");
  EXPECT_EQ(tokens, 1);
  EXPECT_EQ(fake_->requests.size(), 3u);
}

TEST_F(AwsCredentialsTest, ImdsTokenIsRenewedAfterA401) {
  int tokens = 0;
  auto fake = std::make_shared<FakeHttp>([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.url.ends_with("/latest/api/token")) return reply(200, "tok" + std::to_string(++tokens));
    // The first token is refused, as IMDS does with an expired one.
    if (headerOf(r, "X-aws-ec2-metadata-token") == std::optional<std::string>("tok1")) return reply(401, "");
    return reply(200, "eu-west-3");
  });
  ImdsClient imds(fake, "http://127.0.0.1:7", *clock_);
  auto region = imds.get("/latest/meta-data/placement/region");
  ASSERT_TRUE(region.ok()) << region.message();
  EXPECT_EQ(region.value(), "eu-west-3");
  EXPECT_EQ(tokens, 2);
  // The good token is reused until near its TTL.
  EXPECT_TRUE(imds.get("/x").ok());
  EXPECT_EQ(tokens, 2);
  clock_->advance(6h);
  EXPECT_TRUE(imds.get("/x").ok());
  EXPECT_EQ(tokens, 3);
}

TEST_F(AwsCredentialsTest, ImdsDisabledMeansNoCallAndAClearError) {
  env_.vars = {{"AWS_EC2_METADATA_DISABLED", "true"}};
  auto creds = chain([](const HttpRequest&) -> Result<HttpResponse> { return reply(200, ""); })->credentials();
  ASSERT_FALSE(creds.ok());
  EXPECT_EQ(creds.code(), ErrorCode::kUnauthenticated);
  EXPECT_TRUE(fake_->requests.empty());
}

TEST_F(AwsCredentialsTest, AFailedRefreshKeepsStillValidCredentials) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds"}};
  bool up = true;
  auto provider = chain([&](const HttpRequest&) -> Result<HttpResponse> {
    if (!up) return makeError(ErrorCode::kUnavailable, "cannot connect");
    return reply(200, credsJson("ASIA", 1h));
  });
  ASSERT_TRUE(provider->credentials().ok());
  up = false;
  clock_->advance(58min);
  EXPECT_TRUE(provider->credentials().ok());
  clock_->advance(3min);
  EXPECT_EQ(provider->credentials().code(), ErrorCode::kUnavailable);
}

TEST_F(AwsCredentialsTest, RegionOrder) {
  EXPECT_EQ(resolveAwsRegion("eu-north-1", env_.lookup(), nullptr).value(), "eu-north-1");
  env_.vars = {{"AWS_DEFAULT_REGION", "us-west-1"}};
  EXPECT_EQ(resolveAwsRegion("", env_.lookup(), nullptr).value(), "us-west-1");
  env_.vars["AWS_REGION"] = "us-east-2";
  EXPECT_EQ(resolveAwsRegion("", env_.lookup(), nullptr).value(), "us-east-2");
  env_.vars.clear();
  EXPECT_EQ(resolveAwsRegion("", env_.lookup(), nullptr).code(), ErrorCode::kInvalidArgument);
}

TEST_F(AwsCredentialsTest, Iso8601Forms) {
  auto base = parseIso8601("2026-11-26T23:00:00Z");
  ASSERT_TRUE(base.has_value());
  EXPECT_EQ(parseIso8601("2026-11-26T23:00:00.123Z"), base);
  EXPECT_EQ(parseIso8601("2026-11-26T23:00:00+00:00"), base);
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*base), 1795734000);
  EXPECT_FALSE(parseIso8601("yesterday").has_value());
}

TEST_F(AwsCredentialsTest, JsonCallRetriesOnceWithFreshCredentialsAfterExpiredToken) {
  env_.vars = {{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9/creds"}};
  int issued = 0;
  std::vector<std::string> usedKeys;
  auto provider = chain([&](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.url.ends_with("/creds")) return reply(200, credsJson("ASIA" + std::to_string(++issued), 1h));
    auto auth = parseSigV4Authorization(headerOf(r, "Authorization").value_or(""));
    EXPECT_TRUE(auth.has_value());
    if (!auth) return reply(400, "");
    usedKeys.push_back(auth->accessKeyId);
    EXPECT_EQ(auth->service, "secretsmanager");
    EXPECT_EQ(auth->region, "eu-west-1");
    EXPECT_EQ(headerOf(r, "X-Amz-Target"), std::optional<std::string>("secretsmanager.GetSecretValue"));
    EXPECT_EQ(headerOf(r, "X-Amz-Security-Token"), std::optional<std::string>("token-" + auth->accessKeyId));
    if (auth->accessKeyId == "ASIA1") {
      return reply(
          400,
          R"({"__type":"ExpiredTokenException","message":"The security token included in the request is expired"})");
    }
    return reply(200, R"({"ok":true})");
  });
  AwsCallContext context{fake_, provider, clock_};
  auto body = callAwsJsonApi(context, "http://127.0.0.1:5/", "eu-west-1", "secretsmanager",
                             "secretsmanager.GetSecretValue", "{}", "test");
  ASSERT_TRUE(body.ok()) << body.message();
  EXPECT_EQ(usedKeys, (std::vector<std::string>{"ASIA1", "ASIA2"}));
}

TEST_F(AwsCredentialsTest, JsonCallErrorsCarryTheAwsCodeAndKind) {
  auto provider = makeStaticAwsCredentials(AwsCredentials{"AKID", "SECRET", "", std::nullopt, "test"});
  struct Case {
    long status;
    std::string body;
    ErrorCode code;
  };
  for (const Case& c :
       {Case{400, R"({"__type":"AccessDeniedException","Message":"not allowed"})", ErrorCode::kPermissionDenied},
        Case{400, R"({"__type":"ResourceNotFoundException"})", ErrorCode::kNotFound},
        Case{400, R"({"__type":"ThrottlingException"})", ErrorCode::kUnavailable},
        Case{400, R"({"__type":"UnrecognizedClientException"})", ErrorCode::kUnauthenticated},
        Case{400, R"({"__type":"ExpiredTokenException"})", ErrorCode::kUnauthenticated}}) {
    auto fake =
        std::make_shared<FakeHttp>([&](const HttpRequest&) -> Result<HttpResponse> { return reply(c.status, c.body); });
    AwsCallContext context{fake, provider, clock_};
    auto body = callAwsJsonApi(context, "http://127.0.0.1:5", "us-east-1", "ecr", "X.Y", "{}", "what");
    ASSERT_FALSE(body.ok());
    EXPECT_EQ(body.code(), c.code) << c.body << ": " << body.message();
    EXPECT_EQ(body.message().find("SECRET"), std::string::npos);
  }
}

}  // namespace
}  // namespace qcs::platform

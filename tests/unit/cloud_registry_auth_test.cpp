// ACR and GCR registry auth against a scripted HTTP client and simulated time: the requests they
// send (headers, query, form), what they hand to the runtime, caching, renewal and errors.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "aws_fakes.h"
#include "common/clock.h"
#include "common/encoding.h"
#include "platform/acr_auth.h"
#include "platform/gcr_auth.h"
#include "runtime/image_reference.h"

namespace qcs::platform {
namespace {

using json = nlohmann::json;
using testing::FakeHttp;
using testing::headerOf;
using testing::reply;

ImageReference image(const std::string& text) { return runtime::parseImageReference(text).value(); }

EnvLookup envOf(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::string queryOf(const std::string& url) {
  auto q = url.find('?');
  return q == std::string::npos ? "" : url.substr(q + 1);
}

std::map<std::string, std::string> formOf(const std::string& body) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= body.size()) {
    auto end = body.find('&', start);
    if (end == std::string::npos) end = body.size();
    std::string pair = body.substr(start, end - start);
    auto eq = pair.find('=');
    if (eq != std::string::npos) out[pair.substr(0, eq)] = pair.substr(eq + 1);
    start = end + 1;
  }
  return out;
}

// ---- GCR ----

class GcrAuthTest : public ::testing::Test {
 protected:
  std::unique_ptr<RegistryAuthProvider> provider(GcrAuthOptions options = {},
                                                 std::map<std::string, std::string> vars = {
                                                     {"GCE_METADATA_HOST", "127.0.0.1:8080"}}) {
    return makeGcrAuth(std::move(options), envOf(std::move(vars)), http_, clock_);
  }

  int expiresIn_ = 3599;
  int tokenNumber_ = 0;
  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  std::shared_ptr<FakeHttp> http_ = std::make_shared<FakeHttp>([this](const HttpRequest&) -> Result<HttpResponse> {
    return reply(200,
                 json{{"access_token", "ya29.token-" + std::to_string(++tokenNumber_)},
                      {"expires_in", expiresIn_},
                      {"token_type", "Bearer"}}
                     .dump(),
                 {{"metadata-flavor", "Google"}});
  });
};

TEST_F(GcrAuthTest, AsksTheMetadataServerWithTheFlavorHeader) {
  auto creds = provider()->credentialsFor(image("europe-west1-docker.pkg.dev/proj/repo/qcs-sensor:1"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds.value().has_value());
  EXPECT_EQ(creds.value()->username, "oauth2accesstoken");
  EXPECT_EQ(creds.value()->password, "ya29.token-1");
  EXPECT_EQ(creds.value()->serverAddress, "europe-west1-docker.pkg.dev");
  EXPECT_TRUE(creds.value()->identityToken.empty());
  ASSERT_EQ(http_->requests.size(), 1u);
  const auto& request = http_->requests[0];
  EXPECT_EQ(request.method, "GET");
  EXPECT_EQ(request.url, "http://127.0.0.1:8080/computeMetadata/v1/instance/service-accounts/default/token");
  EXPECT_EQ(headerOf(request, "Metadata-Flavor"), "Google");
}

TEST_F(GcrAuthTest, DefaultMetadataAddressIsTheLinkLocalOne) {
  ASSERT_TRUE(provider({}, {})->credentialsFor(image("gcr.io/proj/qcs-sensor")).ok());
  ASSERT_EQ(http_->requests.size(), 1u);
  EXPECT_EQ(http_->requests[0].url.rfind("http://169.254.169.254/computeMetadata/", 0), 0u);
}

TEST_F(GcrAuthTest, OptionBeatsTheEnvironment) {
  GcrAuthOptions options;
  options.metadataHost = "127.0.0.1:9999";
  ASSERT_TRUE(provider(options)->credentialsFor(image("gcr.io/proj/qcs-sensor")).ok());
  EXPECT_EQ(http_->requests[0].url.rfind("http://127.0.0.1:9999/", 0), 0u);
}

TEST_F(GcrAuthTest, OtherRegistriesAreAnonymousAndNotAsked) {
  auto p = provider();
  for (const char* ref : {"qualys/qcs-sensor:latest", "evilgcr.io/x/y", "gcr.io.example.com/x/y", "a.b.gcr.io/x/y",
                          "us-docker.pkg.dev.example.com/x/y", "myreg.azurecr.io/x"}) {
    auto creds = p->credentialsFor(image(ref));
    ASSERT_TRUE(creds.ok()) << ref;
    EXPECT_FALSE(creds.value().has_value()) << ref;
  }
  EXPECT_TRUE(http_->requests.empty());
}

TEST_F(GcrAuthTest, GoogleHostNames) {
  EXPECT_TRUE(isGoogleRegistry("gcr.io"));
  EXPECT_TRUE(isGoogleRegistry("eu.gcr.io"));
  EXPECT_TRUE(isGoogleRegistry("us-central1-docker.pkg.dev"));
  EXPECT_FALSE(isGoogleRegistry("docker.pkg.dev"));
  EXPECT_FALSE(isGoogleRegistry("-docker.pkg.dev"));
  EXPECT_FALSE(isGoogleRegistry(".gcr.io"));
  EXPECT_FALSE(isGoogleRegistry("notgcr.io"));
  EXPECT_FALSE(isGoogleRegistry("x.eu.gcr.io"));
}

TEST_F(GcrAuthTest, RegistryOverrideIsServed) {
  GcrAuthOptions options;
  options.registryOverride = "127.0.0.1:5000";
  auto creds = provider(options)->credentialsFor(image("127.0.0.1:5000/qcs-sensor:1"));
  ASSERT_TRUE(creds.ok());
  ASSERT_TRUE(creds.value().has_value());
  EXPECT_EQ(creds.value()->serverAddress, "127.0.0.1:5000");
}

TEST_F(GcrAuthTest, CachedUntilTheMarginBeforeExpiry) {
  auto p = provider();  // margin 60s, tokens live 3599s
  ASSERT_EQ(p->credentialsFor(image("gcr.io/p/a")).value()->password, "ya29.token-1");
  clock_->advance(std::chrono::seconds(3500));
  // One token serves every Google registry.
  EXPECT_EQ(p->credentialsFor(image("eu.gcr.io/p/a")).value()->password, "ya29.token-1");
  EXPECT_EQ(http_->requests.size(), 1u);
  clock_->advance(std::chrono::seconds(40));  // 3540s: inside the margin
  EXPECT_EQ(p->credentialsFor(image("gcr.io/p/a")).value()->password, "ya29.token-2");
  EXPECT_EQ(http_->requests.size(), 2u);
}

TEST_F(GcrAuthTest, ShortLivedTokenIsUsedButNotReused) {
  expiresIn_ = 30;  // shorter than the margin
  auto p = provider();
  EXPECT_EQ(p->credentialsFor(image("gcr.io/p/a")).value()->password, "ya29.token-1");
  EXPECT_EQ(p->credentialsFor(image("gcr.io/p/a")).value()->password, "ya29.token-2");
}

TEST_F(GcrAuthTest, RenewalFailureKeepsAnUnexpiredToken) {
  bool fail = false;
  auto http = std::make_shared<FakeHttp>([&](const HttpRequest&) -> Result<HttpResponse> {
    if (fail) return makeError(ErrorCode::kUnavailable, "connect refused");
    return reply(200, R"({"access_token":"t1","expires_in":3599,"token_type":"Bearer"})");
  });
  auto p = makeGcrAuth({}, envOf({}), http, clock_);
  ASSERT_TRUE(p->credentialsFor(image("gcr.io/p/a")).ok());
  fail = true;
  clock_->advance(std::chrono::seconds(3560));  // due for renewal, not expired
  auto kept = p->credentialsFor(image("gcr.io/p/a"));
  ASSERT_TRUE(kept.ok()) << kept.message();
  EXPECT_EQ(kept.value()->password, "t1");
  clock_->advance(std::chrono::seconds(60));  // expired
  auto gone = p->credentialsFor(image("gcr.io/p/a"));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.code(), ErrorCode::kUnavailable);
  EXPECT_NE(gone.message().find("GCE_METADATA_HOST"), std::string::npos);
}

TEST_F(GcrAuthTest, MetadataErrorsNameTheCause) {
  struct Case {
    long status;
    std::string body;
    ErrorCode code;
    std::string mentions;
  };
  for (const auto& c : std::vector<Case>{
           {404, "Not Found\n", ErrorCode::kNotFound, "service account"},
           {403, "Forbidden", ErrorCode::kPermissionDenied, "access scopes"},
           {500, "oops", ErrorCode::kUnavailable, "HTTP 500"},
           {200, "not json", ErrorCode::kProtocol, "not JSON"},
           {200, R"({"expires_in":3599})", ErrorCode::kProtocol, "access_token"},
           {200, R"({"access_token":"x"})", ErrorCode::kProtocol, "expires_in"},
       }) {
    auto http =
        std::make_shared<FakeHttp>([&](const HttpRequest&) -> Result<HttpResponse> { return reply(c.status, c.body); });
    auto result = makeGcrAuth({}, envOf({}), http, clock_)->credentialsFor(image("gcr.io/p/a"));
    ASSERT_FALSE(result.ok()) << c.status << " " << c.body;
    EXPECT_EQ(result.code(), c.code) << result.message();
    EXPECT_NE(result.message().find(c.mentions), std::string::npos) << result.message();
    EXPECT_NE(result.message().find("gcr.io"), std::string::npos) << result.message();
  }
}

// ---- ACR ----

std::string jwtWithExp(int64_t exp) {
  return base64UrlEncode(R"({"alg":"RS256","typ":"JWT"})") + "." +
         base64UrlEncode(json{{"exp", exp}, {"grant_type", "refresh_token"}}.dump()) + ".c2ln";
}

class AcrAuthTest : public ::testing::Test {
 protected:
  std::unique_ptr<RegistryAuthProvider> provider(AcrAuthOptions options = {},
                                                 std::map<std::string, std::string> vars = {
                                                     {"QCS_AZURE_IMDS_ENDPOINT", "http://127.0.0.1:7070/"}}) {
    return makeAcrAuth(std::move(options), envOf(std::move(vars)), http_, clock_);
  }
  int64_t wallSeconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_->wallNow().time_since_epoch()).count();
  }

  std::shared_ptr<FakeClock> clock_ = std::make_shared<FakeClock>();
  int exchanges_ = 0;
  std::chrono::seconds refreshLifetime_{3 * 3600};
  bool jwtRefresh_ = true;
  bool failExchange_ = false;
  std::shared_ptr<FakeHttp> http_ = std::make_shared<FakeHttp>([this](const HttpRequest& r) -> Result<HttpResponse> {
    if (r.url.find("/metadata/identity/oauth2/token") != std::string::npos) {
      return reply(200, json{{"access_token", "aad-token"},
                             {"expires_in", "86399"},
                             {"expires_on", std::to_string(wallSeconds() + 86399)},
                             {"resource", "https://management.azure.com/"},
                             {"token_type", "Bearer"}}
                            .dump());
    }
    if (failExchange_) return reply(503, R"({"errors":[{"code":"UNAVAILABLE","message":"try later"}]})");
    ++exchanges_;
    std::string token = jwtRefresh_ ? jwtWithExp(wallSeconds() + refreshLifetime_.count())
                                    : "opaque-refresh-" + std::to_string(exchanges_);
    return reply(200, json{{"refresh_token", token}}.dump());
  });
};

TEST_F(AcrAuthTest, ImdsTokenIsExchangedForARefreshToken) {
  auto creds = provider()->credentialsFor(image("myreg.azurecr.io/qualys/qcs-sensor:1"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds.value().has_value());
  EXPECT_EQ(creds.value()->username, "00000000-0000-0000-0000-000000000000");
  EXPECT_EQ(jwtExpiry(creds.value()->password), wallSeconds() + 3 * 3600);
  EXPECT_TRUE(creds.value()->identityToken.empty());
  EXPECT_EQ(creds.value()->serverAddress, "myreg.azurecr.io");

  ASSERT_EQ(http_->requests.size(), 2u);
  const auto& imds = http_->requests[0];
  EXPECT_EQ(imds.method, "GET");
  EXPECT_EQ(imds.url.substr(0, imds.url.find('?')), "http://127.0.0.1:7070/metadata/identity/oauth2/token");
  EXPECT_EQ(queryOf(imds.url), "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F");
  EXPECT_EQ(headerOf(imds, "Metadata"), "true");

  const auto& exchange = http_->requests[1];
  EXPECT_EQ(exchange.method, "POST");
  EXPECT_EQ(exchange.url, "https://myreg.azurecr.io/oauth2/exchange");
  EXPECT_EQ(headerOf(exchange, "Content-Type"), "application/x-www-form-urlencoded");
  auto form = formOf(exchange.body);
  EXPECT_EQ(form["grant_type"], "access_token");
  EXPECT_EQ(form["service"], "myreg.azurecr.io");
  EXPECT_EQ(form["access_token"], "aad-token");
}

TEST_F(AcrAuthTest, UserAssignedIdentityAndEndpointOverrides) {
  AcrAuthOptions options;
  options.clientId = "11111111-2222-3333-4444-555555555555";
  options.imdsEndpoint = "http://127.0.0.1:1234";
  options.exchangeEndpoint = "http://127.0.0.1:4321/";
  options.registryOverride = "127.0.0.1:5000";
  auto creds = provider(options)->credentialsFor(image("127.0.0.1:5000/qcs-sensor:1"));
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds.value().has_value());
  ASSERT_EQ(http_->requests.size(), 2u);
  EXPECT_EQ(http_->requests[0].url.rfind("http://127.0.0.1:1234/metadata/identity/oauth2/token?", 0), 0u);
  EXPECT_NE(queryOf(http_->requests[0].url).find("&client_id=11111111-2222-3333-4444-555555555555"), std::string::npos);
  EXPECT_EQ(http_->requests[1].url, "http://127.0.0.1:4321/oauth2/exchange");
  EXPECT_EQ(formOf(http_->requests[1].body)["service"], "127.0.0.1%3A5000");
}

TEST_F(AcrAuthTest, DefaultImdsIsTheLinkLocalAddress) {
  ASSERT_TRUE(provider({}, {})->credentialsFor(image("myreg.azurecr.io/x")).ok());
  EXPECT_EQ(http_->requests[0].url.rfind("http://169.254.169.254/metadata/identity/oauth2/token?", 0), 0u);
}

TEST_F(AcrAuthTest, OtherRegistriesAreAnonymousAndNotAsked) {
  auto p = provider();
  for (const char* ref : {"qualys/qcs-sensor", "gcr.io/p/x", "azurecr.io/x", "myreg.westeurope.data.azurecr.io/x",
                          "myreg.azurecr.io.example.com/x"}) {
    auto creds = p->credentialsFor(image(ref));
    ASSERT_TRUE(creds.ok()) << ref;
    EXPECT_FALSE(creds.value().has_value()) << ref;
  }
  EXPECT_TRUE(http_->requests.empty());
  EXPECT_TRUE(isAzureRegistry("myreg.azurecr.io"));
  EXPECT_TRUE(isAzureRegistry("myreg.azurecr.cn"));
}

TEST_F(AcrAuthTest, RefreshTokenCachedPerRegistryUntilItsExpMinusMargin) {
  auto p = provider();  // margin 15 minutes, refresh tokens live 3 hours
  auto first = p->credentialsFor(image("one.azurecr.io/x")).value()->password;
  clock_->advance(std::chrono::minutes(160));
  EXPECT_EQ(p->credentialsFor(image("one.azurecr.io/x")).value()->password, first);
  EXPECT_EQ(exchanges_, 1);
  // Each registry has its own refresh token (the exchange names the service).
  ASSERT_TRUE(p->credentialsFor(image("two.azurecr.io/x")).ok());
  EXPECT_EQ(exchanges_, 2);
  clock_->advance(std::chrono::minutes(6));  // 166 min: within 15 min of expiry
  EXPECT_NE(p->credentialsFor(image("one.azurecr.io/x")).value()->password, first);
  EXPECT_EQ(exchanges_, 3);
}

TEST_F(AcrAuthTest, OpaqueRefreshTokenAssumesThreeHours) {
  jwtRefresh_ = false;
  auto p = provider();
  EXPECT_EQ(p->credentialsFor(image("one.azurecr.io/x")).value()->password, "opaque-refresh-1");
  clock_->advance(std::chrono::minutes(164));
  EXPECT_EQ(p->credentialsFor(image("one.azurecr.io/x")).value()->password, "opaque-refresh-1");
  clock_->advance(std::chrono::minutes(2));
  EXPECT_EQ(p->credentialsFor(image("one.azurecr.io/x")).value()->password, "opaque-refresh-2");
}

TEST_F(AcrAuthTest, RenewalFailureKeepsAnUnexpiredRefreshToken) {
  auto p = provider();
  auto first = p->credentialsFor(image("one.azurecr.io/x")).value()->password;
  failExchange_ = true;
  clock_->advance(std::chrono::minutes(170));  // due for renewal, not expired
  auto kept = p->credentialsFor(image("one.azurecr.io/x"));
  ASSERT_TRUE(kept.ok()) << kept.message();
  EXPECT_EQ(kept.value()->password, first);
  clock_->advance(std::chrono::minutes(11));  // expired
  auto gone = p->credentialsFor(image("one.azurecr.io/x"));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.code(), ErrorCode::kUnavailable);
  EXPECT_NE(gone.message().find("HTTP 503"), std::string::npos) << gone.message();
}

TEST_F(AcrAuthTest, ImdsTransportErrorNamesTheOverride) {
  auto http = std::make_shared<FakeHttp>(
      [](const HttpRequest&) -> Result<HttpResponse> { return makeError(ErrorCode::kTimeout, "timed out"); });
  auto refused = makeAcrAuth({}, envOf({}), http, clock_)->credentialsFor(image("one.azurecr.io/x"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kTimeout);
  EXPECT_NE(refused.message().find("QCS_AZURE_IMDS_ENDPOINT"), std::string::npos) << refused.message();
}

TEST_F(AcrAuthTest, ErrorsNameTheCauseAndTheFix) {
  struct Case {
    long imdsStatus;
    std::string imdsBody;
    long exchangeStatus;
    std::string exchangeBody;
    ErrorCode code;
    std::string mentions;
  };
  const std::string goodImds = R"({"access_token":"aad","expires_on":"1800086399","token_type":"Bearer"})";
  for (const auto& c : std::vector<Case>{
           {400, R"({"error":"invalid_request","error_description":"Identity not found"})", 0, "",
            ErrorCode::kUnauthenticated, "Identity not found"},
           {500, R"({"error":"unknown_error","error_description":"boom"})", 0, "", ErrorCode::kUnavailable, "HTTP 500"},
           {200, "{}", 0, "", ErrorCode::kProtocol, "access_token"},
           {200, goodImds, 401, R"({"errors":[{"code":"UNAUTHORIZED","message":"no AcrPull"}]})",
            ErrorCode::kPermissionDenied, "AcrPull"},
           {200, goodImds, 400, R"({"errors":[{"code":"UNSUPPORTED","message":"bad grant"}]})",
            ErrorCode::kInvalidArgument, "UNSUPPORTED: bad grant"},
           {200, goodImds, 200, R"({"access_token":"x"})", ErrorCode::kProtocol, "refresh_token"},
       }) {
    auto http = std::make_shared<FakeHttp>([&](const HttpRequest& r) -> Result<HttpResponse> {
      if (r.url.find("/metadata/identity/") != std::string::npos) return reply(c.imdsStatus, c.imdsBody);
      return reply(c.exchangeStatus, c.exchangeBody);
    });
    auto result = makeAcrAuth({}, envOf({}), http, clock_)->credentialsFor(image("one.azurecr.io/x"));
    ASSERT_FALSE(result.ok()) << c.mentions;
    EXPECT_EQ(result.code(), c.code) << result.message();
    EXPECT_NE(result.message().find(c.mentions), std::string::npos) << result.message();
    EXPECT_NE(result.message().find("one.azurecr.io"), std::string::npos) << result.message();
    EXPECT_EQ(result.message().find("aad"), std::string::npos) << "the token must not leak: " << result.message();
  }
}

TEST(JwtExpiry, ReadsTheExpClaim) {
  EXPECT_EQ(jwtExpiry(jwtWithExp(1900000000)), 1900000000);
  EXPECT_EQ(jwtExpiry("not-a-jwt"), std::nullopt);
  EXPECT_EQ(jwtExpiry("a." + base64UrlEncode(R"({"iat":1})") + ".c"), std::nullopt);
  EXPECT_EQ(jwtExpiry("a.%%%.c"), std::nullopt);
}

}  // namespace
}  // namespace qcs::platform

// SigV4 against the published AWS Signature Version 4 test suite (tests/fixtures/sigv4/suite.json,
// written from AWS's documentation), plus the pieces the emulators and clients rely on.
#include "platform/sigv4.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/encoding.h"

namespace qcs::platform {
namespace {

using nlohmann::json;

std::string fixtureDir() { return std::string(QCS_TEST_FIXTURES_DIR) + "/sigv4"; }

json loadSuite() {
  std::ifstream in(fixtureDir() + "/suite.json");
  if (!in) return json();
  return json::parse(in, nullptr, false);
}

std::chrono::system_clock::time_point suiteTime() {
  // 2015-08-30T12:36:00Z
  return std::chrono::system_clock::time_point(std::chrono::seconds(1440938160));
}

TEST(SigV4, HmacSha256MatchesRfc4231Case2) {
  EXPECT_EQ(hexEncode(hmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(SigV4, AmzDateIsUtcBasicFormat) { EXPECT_EQ(amzDate(suiteTime()), "20150830T123600Z"); }

TEST(SigV4, SigningKeyMatchesTheDocumentedExample) {
  // The derived key from AWS's "Derive a signing key" example (iam, us-east-1, 20150830).
  EXPECT_EQ(hexEncode(sigV4SigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam")),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
}

TEST(SigV4, PublishedTestSuite) {
  json suite = loadSuite();
  ASSERT_TRUE(suite.is_object()) << "cannot read " << fixtureDir() << "/suite.json";
  ASSERT_GE(suite["vectors"].size(), 20u);
  for (const auto& v : suite["vectors"]) {
    SCOPED_TRACE(v["name"].get<std::string>());
    SigV4Request request;
    request.method = v["method"];
    request.path = v["path"];
    request.query = parseQueryString(v["query"].get<std::string>());
    request.body = v["body"];
    AwsCredentials creds{suite["accessKeyId"], suite["secretAccessKey"], "", std::nullopt, "test"};
    for (const auto& h : v["headers"]) {
      // The session-token vectors: the token comes with the credentials, as in real use.
      if (h[0] == "X-Amz-Security-Token") {
        creds.sessionToken = h[1];
        continue;
      }
      request.headers.emplace_back(h[0], h[1]);
    }
    SigV4Scope scope{suite["region"], suite["service"], suiteTime(), false};
    auto signature = signSigV4(request, creds, scope);
    ASSERT_TRUE(signature.ok()) << signature.message();
    EXPECT_EQ(signature->canonicalRequest, v["canonicalRequest"].get<std::string>());
    EXPECT_EQ(signature->stringToSign, v["stringToSign"].get<std::string>());
    EXPECT_EQ(signature->authorization, v["authorization"].get<std::string>());
  }
}

TEST(SigV4, SessionTokenIsSignedAndAdded) {
  SigV4Request request{"POST", "/", {}, {{"Host", "secretsmanager.us-east-1.amazonaws.com"}}, "{}"};
  AwsCredentials creds{"AKID", "SECRET", "TOKEN", std::nullopt, "test"};
  auto signature = signSigV4(request, creds, SigV4Scope{"us-east-1", "secretsmanager", suiteTime(), false});
  ASSERT_TRUE(signature.ok());
  EXPECT_EQ(signature->signedHeaders, "host;x-amz-date;x-amz-security-token");
  ASSERT_EQ(signature->headersToAdd.size(), 3u);
  EXPECT_EQ(signature->headersToAdd[0], (std::pair<std::string, std::string>{"X-Amz-Date", "20150830T123600Z"}));
  EXPECT_EQ(signature->headersToAdd[1], (std::pair<std::string, std::string>{"X-Amz-Security-Token", "TOKEN"}));
  EXPECT_EQ(signature->headersToAdd[2].first, "Authorization");
}

TEST(SigV4, UnsignableHeadersAreLeftOut) {
  SigV4Request a{"GET", "/", {}, {{"Host", "h"}}, ""};
  SigV4Request b = a;
  b.headers.emplace_back("User-Agent", "curl/8");
  b.headers.emplace_back("Expect", "100-continue");
  AwsCredentials creds{"AKID", "SECRET", "", std::nullopt, "test"};
  SigV4Scope scope{"us-east-1", "svc", suiteTime(), false};
  EXPECT_EQ(signSigV4(a, creds, scope)->signature, signSigV4(b, creds, scope)->signature);
}

TEST(SigV4, PathSegmentsAreEncodedOnceMoreAndNormalised) {
  EXPECT_EQ(sigV4CanonicalPath("/a%20b/c"), "/a%2520b/c");
  EXPECT_EQ(sigV4CanonicalPath("/a/./b/../c/"), "/a/c/");
  EXPECT_EQ(sigV4CanonicalPath(""), "/");
  EXPECT_EQ(sigV4CanonicalQuery({{"b", "2"}, {"a", "x y"}, {"a", "1"}}), "a=1&a=x%20y&b=2");
}

TEST(SigV4, ContentSha256HeaderWhenAsked) {
  SigV4Request request{"PUT", "/", {}, {{"Host", "h"}}, "abc"};
  AwsCredentials creds{"AKID", "SECRET", "", std::nullopt, "test"};
  auto signature = signSigV4(request, creds, SigV4Scope{"us-east-1", "svc", suiteTime(), true});
  ASSERT_TRUE(signature.ok());
  EXPECT_EQ(signature->signedHeaders, "host;x-amz-content-sha256;x-amz-date");
  EXPECT_NE(signature->canonicalRequest.find("x-amz-content-sha256:" + sha256Hex("abc")), std::string::npos);
}

TEST(SigV4, RefusesRequestsItCannotSign) {
  AwsCredentials creds{"AKID", "SECRET", "", std::nullopt, "test"};
  SigV4Scope scope{"us-east-1", "svc", suiteTime(), false};
  EXPECT_EQ(signSigV4(SigV4Request{"GET", "/", {}, {}, ""}, creds, scope).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(signSigV4(SigV4Request{"GET", "/", {}, {{"Host", "h"}}, ""}, AwsCredentials{}, scope).code(),
            ErrorCode::kUnauthenticated);
}

TEST(SigV4, ParsesAuthorizationHeaders) {
  auto parsed = parseSigV4Authorization(
      "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
      "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->accessKeyId, "AKIDEXAMPLE");
  EXPECT_EQ(parsed->date, "20150830");
  EXPECT_EQ(parsed->region, "us-east-1");
  EXPECT_EQ(parsed->service, "service");
  EXPECT_EQ(parsed->signedHeaders, "host;x-amz-date");
  EXPECT_EQ(parsed->signature.size(), 64u);
  EXPECT_FALSE(parseSigV4Authorization("Bearer x").has_value());
  EXPECT_FALSE(parseSigV4Authorization("AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=h, Signature=s").has_value());
}

TEST(SigV4, QueryStringsAreDecoded) {
  auto q = parseQueryString("a=1&b=%20x&c&=d");
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[1], (std::pair<std::string, std::string>{"b", " x"}));
  EXPECT_EQ(q[2], (std::pair<std::string, std::string>{"c", ""}));
}

}  // namespace
}  // namespace qcs::platform

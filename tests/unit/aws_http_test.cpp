// The retrying cloud HTTP client: what is retried, how long it waits, and the AWS error parsing.
#include <gtest/gtest.h>

#include "aws_fakes.h"
#include "platform/cloud_http.h"

namespace qcs::platform {
namespace {

using namespace std::chrono_literals;
using testing::FakeHttp;
using testing::FixedRandom;
using testing::reply;

struct Retrying {
  std::vector<std::chrono::milliseconds> sleeps;
  std::shared_ptr<FakeHttp> fake;
  std::unique_ptr<CloudHttpClient> client;

  explicit Retrying(FakeHttp::Handler handler, RetryPolicy policy = {}) {
    fake = std::make_shared<FakeHttp>(std::move(handler));
    client = makeRetryingHttpClient(
        fake, policy, [this](std::chrono::milliseconds d) { sleeps.push_back(d); }, std::make_shared<FixedRandom>(0.0));
  }
};

TEST(AwsHttp, RetriesServerErrorsWithGrowingCappedDelays) {
  int calls = 0;
  Retrying r([&](const HttpRequest&) -> Result<HttpResponse> { return reply(++calls < 4 ? 503 : 200, "ok"); },
             RetryPolicy{5, 100ms, 250ms, 2.0, 0.0});
  auto response = r.client->send(HttpRequest{});
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(r.sleeps, (std::vector<std::chrono::milliseconds>{100ms, 200ms, 250ms}));
}

TEST(AwsHttp, GivesUpAfterMaxAttemptsWithTheLastAnswer) {
  Retrying r([](const HttpRequest&) -> Result<HttpResponse> { return reply(500, "{}"); },
             RetryPolicy{3, 10ms, 1s, 2.0, 0.0});
  auto response = r.client->send(HttpRequest{});
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status, 500);
  EXPECT_EQ(r.fake->requests.size(), 3u);
}

TEST(AwsHttp, RetriesThrottlingAnd429ButNotAuthErrors) {
  EXPECT_TRUE(isRetryableResponse(reply(429, "")));
  EXPECT_TRUE(isRetryableResponse(reply(400, R"({"__type":"ThrottlingException","message":"Rate exceeded"})")));
  EXPECT_TRUE(isRetryableResponse(reply(400, "", {{"x-amzn-errortype", "ThrottlingException:http://internal/"}})));
  EXPECT_FALSE(isRetryableResponse(reply(400, R"({"__type":"AccessDeniedException"})")));
  EXPECT_FALSE(isRetryableResponse(reply(403, R"({"__type":"ExpiredTokenException"})")));
  EXPECT_FALSE(isRetryableResponse(reply(401, "")));
  EXPECT_FALSE(isRetryableResponse(reply(404, "")));
  EXPECT_FALSE(isRetryableResponse(reply(200, "")));

  Retrying r([](const HttpRequest&) -> Result<HttpResponse> {
    return reply(400, R"({"__type":"com.amazonaws.secretsmanager#AccessDeniedException","Message":"no"})");
  });
  auto response = r.client->send(HttpRequest{});
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(r.fake->requests.size(), 1u);
  EXPECT_TRUE(r.sleeps.empty());
}

TEST(AwsHttp, RetriesTransportFailuresButNotBadRequests) {
  Retrying unavailable(
      [](const HttpRequest&) -> Result<HttpResponse> { return makeError(ErrorCode::kUnavailable, "cannot connect"); });
  EXPECT_FALSE(unavailable.client->send(HttpRequest{}).ok());
  EXPECT_EQ(unavailable.fake->requests.size(), 4u);

  Retrying invalid([](const HttpRequest&) -> Result<HttpResponse> {
    return makeError(ErrorCode::kInvalidArgument, "plain http refused");
  });
  EXPECT_FALSE(invalid.client->send(HttpRequest{}).ok());
  EXPECT_EQ(invalid.fake->requests.size(), 1u);
}

TEST(AwsHttp, JitterShortensTheDelay) {
  RetryPolicy policy{4, 1000ms, 10s, 2.0, 0.5};
  EXPECT_EQ(retryDelay(policy, 1, 0.0), 1000ms);
  EXPECT_EQ(retryDelay(policy, 1, 0.5), 750ms);
  EXPECT_EQ(retryDelay(policy, 2, 0.0), 2000ms);
  EXPECT_EQ(retryDelay(policy, 10, 0.0), 10s);
}

TEST(AwsHttp, ErrorCodesAndMessagesFromEveryShape) {
  EXPECT_EQ(awsErrorCode(reply(400, R"({"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException"})")),
            "ResourceNotFoundException");
  EXPECT_EQ(awsErrorCode(reply(400, "", {{"x-amzn-errortype", "AccessDeniedException:http://x/"}})),
            "AccessDeniedException");
  EXPECT_EQ(awsErrorCode(reply(400, "not json")), "");
  EXPECT_EQ(awsErrorMessage(reply(400, R"({"Message":"Secrets Manager can't find it"})")),
            "Secrets Manager can't find it");
}

TEST(AwsHttp, EndpointDescriptionsDropQueryAndUserinfo) {
  EXPECT_EQ(describeEndpoint("https://user:pw@host:8443/path?X-Amz-Signature=abc"), "https://host:8443/path");
  EXPECT_EQ(describeEndpoint("http://169.254.169.254/latest/api/token"), "http://169.254.169.254/latest/api/token");
}

TEST(AwsHttp, CurlClientRefusesPlainHttpOffLoopback) {
  auto client = makeCurlHttpClient();
  HttpRequest request;
  request.url = "http://example.com/";
  auto response = client->send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.code(), ErrorCode::kInvalidArgument);
  request.url = "ftp://127.0.0.1/";
  EXPECT_EQ(client->send(request).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace qcs::platform

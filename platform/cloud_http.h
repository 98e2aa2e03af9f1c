// CloudHttpClient: the one HTTP client every cloud call goes through (metadata services, AWS APIs).
//
// Contract: send() performs one request and returns the response whatever its status (a 404 or a
// 500 is a response, not an error); an error means no usable response arrived (connect failure,
// timeout, TLS failure, response too large) and its message names the method and endpoint (scheme,
// host, path — never the query, headers or body, which may carry tokens) and what to check.
// TLS verification is always on; the CA bundle is configurable. The standard proxy variables
// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) are honoured by libcurl, with loopback and the link-local
// metadata addresses always exempt: a metadata service is never reached through a proxy.
//
// The retrying client wraps another client: it retries transport errors, 5xx, 429 and AWS
// throttling error codes with capped exponential backoff and jitter (sleep and randomness injected),
// and never retries other 4xx answers (bad credentials do not improve by asking again).
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/random.h"
#include "common/result.h"

namespace qcs::platform {

struct HttpRequest {
  std::string method = "GET";
  std::string url;  // scheme://host[:port]/path[?query]
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Zero means the client's default.
  std::chrono::milliseconds connectTimeout{0};
  std::chrono::milliseconds totalTimeout{0};
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string body;

  // The header's value, or "" when absent; name in any case.
  std::string header(const std::string& name) const;
};

class CloudHttpClient {
 public:
  virtual ~CloudHttpClient() = default;
  virtual Result<HttpResponse> send(const HttpRequest& request) = 0;
};

struct CurlHttpOptions {
  std::string caBundlePath;  // empty: the system's CA store
  std::chrono::milliseconds connectTimeout{3000};
  std::chrono::milliseconds totalTimeout{15000};
  size_t maxResponseBytes = size_t{1} << 20;
};

// The libcurl implementation.
std::unique_ptr<CloudHttpClient> makeCurlHttpClient(CurlHttpOptions options = {});

struct RetryPolicy {
  int maxAttempts = 4;  // the first try included
  std::chrono::milliseconds initialDelay{200};
  std::chrono::milliseconds maxDelay{5000};
  double multiplier = 2.0;
  double jitter = 0.5;  // the delay is scaled by a factor in [1 - jitter, 1]
};

using Sleeper = std::function<void(std::chrono::milliseconds)>;

// Retries `inner`'s sends per `policy`. `sleep` and `random` are injected so tests need no time.
std::unique_ptr<CloudHttpClient> makeRetryingHttpClient(std::shared_ptr<CloudHttpClient> inner, RetryPolicy policy,
                                                        Sleeper sleep, std::shared_ptr<Random> random);

// What production uses: libcurl with retries, real sleeps and real randomness.
std::shared_ptr<CloudHttpClient> makeDefaultCloudHttpClient(CurlHttpOptions options = {});

// Whether a response is worth retrying: 5xx, 429, or an AWS throttling error code (from the
// x-amzn-errortype header or the JSON body's "__type"/"code").
bool isRetryableResponse(const HttpResponse& response);

// The AWS error code of a JSON error response ("ThrottlingException" from
// "com.amazonaws.secretsmanager#ThrottlingException" or from x-amzn-errortype); "" if none.
std::string awsErrorCode(const HttpResponse& response);
// The error's human message ("message"/"Message" in the JSON body), "" if none. Service messages
// never carry secret values, but callers still cap its length.
std::string awsErrorMessage(const HttpResponse& response);

// "https://host:port/path" without the query: safe to put in a message.
std::string describeEndpoint(const std::string& url);

// The delay before retry number `retry` (1 = the first retry): initial * multiplier^(retry-1),
// capped at max, scaled by (1 - jitter * u) with u from random in [0, 1).
std::chrono::milliseconds retryDelay(const RetryPolicy& policy, int retry, double u);

}  // namespace qcs::platform

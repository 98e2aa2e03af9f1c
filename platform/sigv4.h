// AWS Signature Version 4 (AWS4-HMAC-SHA256) for requests signed in the Authorization header.
//
// Contract: signSigV4() computes the canonical request, string to sign and signature of a request
// exactly as AWS does for every service except S3 (paths are normalised and each segment is
// URI-encoded once more on top of the wire encoding; S3 is not needed here), and returns the
// headers to add: X-Amz-Date, X-Amz-Security-Token (when the credentials have a session token) and
// Authorization. Headers are canonicalised as AWS's own signer does: names lower-cased, values
// trimmed with inner whitespace runs collapsed, repeated names joined with ",", and the headers no
// signer signs (user-agent, authorization, expect, ...) left out. Nothing here does I/O; the
// secret key appears only inside the HMAC chain.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qcs::platform {

struct AwsCredentials {
  std::string accessKeyId;
  std::string secretAccessKey;
  std::string sessionToken;                                         // empty for long-term keys
  std::optional<std::chrono::system_clock::time_point> expiration;  // none for long-term keys
  std::string source;                                               // "environment", "ecs", "imds": for messages
};

struct SigV4Request {
  std::string method;
  // The path as sent on the wire (already percent-encoded where the protocol needs it).
  std::string path = "/";
  // Decoded query parameters, in any order; repeated names allowed.
  std::vector<std::pair<std::string, std::string>> query;
  // Must include Host. Names in any case; repeated names allowed.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct SigV4Scope {
  std::string region;
  std::string service;
  std::chrono::system_clock::time_point time;
  // Also sign the payload hash as X-Amz-Content-Sha256 (AWS's signer does by default for S3).
  bool addContentSha256Header = false;
};

struct SigV4Signature {
  std::string canonicalRequest;
  std::string stringToSign;
  std::string signature;  // lower-case hex
  std::string signedHeaders;
  std::string authorization;
  // The headers the caller adds to the request it sends (Authorization last).
  std::vector<std::pair<std::string, std::string>> headersToAdd;
};

// HMAC-SHA256 of data under key: the raw 32-byte digest.
std::string hmacSha256(std::string_view key, std::string_view data);
std::string hexEncode(std::string_view bytes);

// "20150830T123600Z"
std::string amzDate(std::chrono::system_clock::time_point time);

// The signing key: HMAC chain over "AWS4"+secret, date (YYYYMMDD), region, service, "aws4_request".
std::string sigV4SigningKey(std::string_view secretAccessKey, std::string_view date, std::string_view region,
                            std::string_view service);

// The canonical pieces, exposed for tests and for verifiers (the emulators recompute signatures).
std::string sigV4CanonicalPath(std::string_view wirePath);
std::string sigV4CanonicalQuery(const std::vector<std::pair<std::string, std::string>>& query);

// Signs the request. Errors when the request has no Host header or the credentials are empty.
Result<SigV4Signature> signSigV4(const SigV4Request& request, const AwsCredentials& credentials,
                                 const SigV4Scope& scope);

// Splits a raw query string ("a=1&b=%20") into decoded pairs.
std::vector<std::pair<std::string, std::string>> parseQueryString(std::string_view query);

// The parts of an Authorization header value: Credential=<key>/<date>/<region>/<service>/aws4_request,
// SignedHeaders=..., Signature=...; nullopt when it is not an AWS4-HMAC-SHA256 authorization.
struct SigV4Authorization {
  std::string accessKeyId, date, region, service, signedHeaders, signature;
};
std::optional<SigV4Authorization> parseSigV4Authorization(std::string_view header);

}  // namespace qcs::platform

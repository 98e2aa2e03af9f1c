#include "harness/sigv4_verifier.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <sstream>
#include <vector>

#include "platform/aws_credentials.h"
#include "platform/sigv4.h"

namespace qcs::testing {
namespace {

std::string lowerCase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

SigV4Rejection reject(std::string code, std::string message) { return {std::move(code), std::move(message)}; }

}  // namespace

std::optional<std::chrono::system_clock::time_point> parseAmzDate(const std::string& text) {
  std::tm tm{};
  int consumed = 0;
  if (text.size() != 16 ||
      std::sscanf(text.c_str(), "%4d%2d%2dT%2d%2d%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
                  &tm.tm_sec, &consumed) != 6 ||
      consumed != 16) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::optional<SigV4Rejection> verifySigV4(const LoopbackHttpRequest& request,
                                          const std::function<std::optional<SigV4Key>(const std::string&)>& lookup,
                                          const std::string& region, const std::string& service) {
  const std::string authorization = request.header("Authorization");
  if (authorization.empty()) return reject("MissingAuthenticationTokenException", "Missing Authentication Token");
  auto parsed = platform::parseSigV4Authorization(authorization);
  if (!parsed) {
    return reject("IncompleteSignatureException",
                  "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters");
  }
  const auto key = lookup(parsed->accessKeyId);
  if (!key || request.header("X-Amz-Security-Token") != key->sessionToken) {
    return reject("UnrecognizedClientException", "The security token included in the request is invalid.");
  }
  if (key->expired) return reject("ExpiredTokenException", "The security token included in the request is expired");
  const std::string amzDate = request.header("X-Amz-Date");
  auto date = parseAmzDate(amzDate);
  if (!date) {
    return reject("IncompleteSignatureException", "X-Amz-Date is missing or not in the basic ISO 8601 format");
  }
  const std::string invalid = "InvalidSignatureException";
  const auto skew = std::chrono::system_clock::now() - *date;
  if (skew > std::chrono::minutes(5) || skew < -std::chrono::minutes(5)) {
    return reject(invalid, "Signature expired: " + amzDate + " is more than 5 minutes away from now");
  }
  if (parsed->date != amzDate.substr(0, 8)) {
    return reject(invalid, "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP");
  }
  if (parsed->region != region) return reject(invalid, "Credential should be scoped to a valid region.");
  if (parsed->service != service) {
    return reject(invalid, "Credential should be scoped to correct service: '" + service + "'.");
  }
  std::vector<std::string> signedNames;
  std::stringstream names(parsed->signedHeaders);
  for (std::string name; std::getline(names, name, ';');) signedNames.push_back(name);
  if (std::find(signedNames.begin(), signedNames.end(), "host") == signedNames.end()) {
    return reject(invalid, "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
  }
  // Recompute over exactly the headers the client says it signed, as AWS does.
  platform::SigV4Request toCheck;
  toCheck.method = request.method;
  toCheck.path = request.target.substr(0, request.target.find('?'));
  if (auto q = request.target.find('?'); q != std::string::npos) {
    toCheck.query = platform::parseQueryString(request.target.substr(q + 1));
  }
  for (const auto& [name, value] : request.headers) {
    if (std::find(signedNames.begin(), signedNames.end(), lowerCase(name)) != signedNames.end()) {
      toCheck.headers.emplace_back(name, value);
    }
  }
  toCheck.body = request.body;
  const platform::AwsCredentials credentials{parsed->accessKeyId, key->secret, key->sessionToken, std::nullopt,
                                             "emulator"};
  auto expected = platform::signSigV4(toCheck, credentials, platform::SigV4Scope{region, service, *date});
  if (!expected || expected->signature != parsed->signature || expected->signedHeaders != parsed->signedHeaders) {
    return reject(invalid,
                  "The request signature we calculated does not match the signature you provided. Check your AWS "
                  "Secret Access Key and signing method. Consult the service documentation for details.");
  }
  return std::nullopt;
}

}  // namespace qcs::testing

// Fuzzes SigV4 canonicalisation and signing over requests built from the input, and the parsing of
// an Authorization header. Input layout: method, path and raw query string on the first three
// lines, then "Name: value" header lines up to an empty line, then the body.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "fuzz_check.h"
#include "platform/sigv4.h"

using namespace qcs::platform;

namespace {

std::string_view takeLine(std::string_view& rest) {
  const size_t end = rest.find('\n');
  const std::string_view line = rest.substr(0, end);
  rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
  return line;
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

// RFC 9110 token characters: what a header name may be made of.
bool isToken(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(char(c)) != std::string_view::npos;
  });
}

bool sameSignature(const SigV4Signature& a, const SigV4Signature& b) {
  return a.canonicalRequest == b.canonicalRequest && a.stringToSign == b.stringToSign && a.signature == b.signature &&
         a.authorization == b.authorization && a.headersToAdd == b.headersToAdd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  (void)parseSigV4Authorization(rest);

  SigV4Request request;
  request.method = std::string(takeLine(rest));
  request.path = std::string(takeLine(rest));
  request.query = parseQueryString(takeLine(rest));
  bool hasHost = false;
  bool uniqueNames = true;
  bool tokenNames = true;
  std::vector<std::string> seen;
  while (!rest.empty()) {
    const std::string_view line = takeLine(rest);
    if (line.empty()) break;
    const size_t colon = line.find(':');
    std::string name(line.substr(0, colon));
    std::string value(colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1));
    const std::string key = lower(name);
    hasHost = hasHost || key == "host";
    uniqueNames = uniqueNames && std::find(seen.begin(), seen.end(), key) == seen.end();
    tokenNames = tokenNames && isToken(name);
    seen.push_back(key);
    request.headers.emplace_back(std::move(name), std::move(value));
  }
  request.body = std::string(rest);

  AwsCredentials credentials{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", std::nullopt, "fuzz"};
  const SigV4Scope scope{
      "us-east-1", "service",
      std::chrono::sys_days{std::chrono::year{2015} / 8 / 30} + std::chrono::hours{12} + std::chrono::minutes{36}};

  if (!hasHost) {
    auto refused = signSigV4(request, credentials, scope);
    FUZZ_CHECK(!refused.ok() && refused.code() == qcs::ErrorCode::kInvalidArgument, "signed without a Host header");
    request.headers.emplace_back("Host", "example.amazonaws.com");
  }

  auto signature = signSigV4(request, credentials, scope);
  FUZZ_CHECK(signature.ok(), signature.ok() ? "" : signature.message());
  const SigV4Signature& signed1 = *signature;

  const std::string head =
      request.method + "\n" + sigV4CanonicalPath(request.path) + "\n" + sigV4CanonicalQuery(request.query) + "\n";
  FUZZ_CHECK(signed1.canonicalRequest.compare(0, head.size(), head) == 0, signed1.canonicalRequest);
  FUZZ_CHECK(signed1.signature.size() == 64 &&
                 std::all_of(signed1.signature.begin(), signed1.signature.end(),
                             [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }),
             signed1.signature);
  FUZZ_CHECK(!signed1.headersToAdd.empty() && signed1.headersToAdd.back().first == "Authorization" &&
                 signed1.headersToAdd.back().second == signed1.authorization,
             signed1.authorization);

  // Deterministic, and independent of the order query parameters come in.
  auto again = signSigV4(request, credentials, scope);
  FUZZ_CHECK(again.ok() && sameSignature(*again, signed1), signed1.canonicalRequest);
  SigV4Request reordered = request;
  std::reverse(reordered.query.begin(), reordered.query.end());
  // Values of a repeated header are joined in the order given, so only distinct names may move.
  if (uniqueNames) std::reverse(reordered.headers.begin(), reordered.headers.end());
  auto shuffled = signSigV4(reordered, credentials, scope);
  FUZZ_CHECK(shuffled.ok() && sameSignature(*shuffled, signed1), signed1.canonicalRequest);

  // What a verifier reads back out of the Authorization header is what was signed.
  if (tokenNames) {
    auto parsed = parseSigV4Authorization(signed1.authorization);
    FUZZ_CHECK(parsed.has_value(), signed1.authorization);
    FUZZ_CHECK(parsed->accessKeyId == credentials.accessKeyId && parsed->date == "20150830" &&
                   parsed->region == scope.region && parsed->service == scope.service &&
                   parsed->signedHeaders == signed1.signedHeaders && parsed->signature == signed1.signature,
               signed1.authorization);
  }
  return 0;
}

#include "platform/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <ctime>
#include <map>

#include "common/encoding.h"

namespace qcs::platform {

namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";

// Headers AWS's signers never sign: hop-by-hop headers and ones proxies rewrite.
bool isUnsignable(const std::string& lowerName) {
  static const char* const kNames[] = {
      "authorization", "cache-control",     "connection", "expect",     "from",
      "keep-alive",    "max-forwards",      "pragma",     "referer",    "te",
      "trailer",       "transfer-encoding", "upgrade",    "user-agent", "x-amzn-trace-id"};
  if (std::find(std::begin(kNames), std::end(kNames), lowerName) != std::end(kNames)) return true;
  return lowerName.rfind("proxy-", 0) == 0 || lowerName.rfind("sec-", 0) == 0;
}

std::string lowerCase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

// Line breaks become spaces, runs of spaces and tabs one space, and the ends are trimmed.
std::string canonicalHeaderValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  bool inSpace = false;
  for (char c : value) {
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      inSpace = true;
      continue;
    }
    if (inSpace && !out.empty()) out.push_back(' ');
    inSpace = false;
    out.push_back(c);
  }
  return out;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      int hi = hexValue(text[i + 1]);
      int lo = hexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(char(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

}  // namespace

std::string hmacSha256(std::string_view key, std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), digest.data(), &length);
  return std::string(reinterpret_cast<const char*>(digest.data()), length);
}

std::string hexEncode(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

std::string amzDate(std::chrono::system_clock::time_point time) {
  std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y%m%dT%H%M%SZ", &utc);
  return buffer;
}

std::string sigV4SigningKey(std::string_view secretAccessKey, std::string_view date, std::string_view region,
                            std::string_view service) {
  std::string key = hmacSha256("AWS4" + std::string(secretAccessKey), date);
  key = hmacSha256(key, region);
  key = hmacSha256(key, service);
  return hmacSha256(key, "aws4_request");
}

std::string sigV4CanonicalPath(std::string_view wirePath) {
  if (wirePath.empty()) return "/";
  std::vector<std::string_view> segments;
  size_t start = 0;
  while (start <= wirePath.size()) {
    size_t slash = wirePath.find('/', start);
    std::string_view segment =
        wirePath.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!segment.empty() && segment != ".") {
      segments.push_back(segment);
    }
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  std::string out = wirePath.front() == '/' ? "/" : "";
  for (size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) out += '/';
    // The wire form is encoded once more: "%20" becomes "%2520", as AWS expects for non-S3 services.
    out += urlEncode(segments[i]);
  }
  if (!segments.empty() && wirePath.back() == '/') out += '/';
  return out;
}

std::string sigV4CanonicalQuery(const std::vector<std::pair<std::string, std::string>>& query) {
  std::vector<std::pair<std::string, std::string>> encoded;
  encoded.reserve(query.size());
  for (const auto& [name, value] : query) {
    if (lowerCase(name) == "x-amz-signature") continue;
    encoded.emplace_back(urlEncode(name), urlEncode(value));
  }
  std::sort(encoded.begin(), encoded.end());
  std::string out;
  for (const auto& [name, value] : encoded) {
    if (!out.empty()) out += '&';
    out += name + "=" + value;
  }
  return out;
}

Result<SigV4Signature> signSigV4(const SigV4Request& request, const AwsCredentials& credentials,
                                 const SigV4Scope& scope) {
  if (credentials.accessKeyId.empty() || credentials.secretAccessKey.empty()) {
    return makeError(ErrorCode::kUnauthenticated, "SigV4: the AWS credentials have no access key id or secret key");
  }
  if (scope.region.empty() || scope.service.empty()) {
    return makeError(ErrorCode::kInvalidArgument, "SigV4: the signing region and service must be set");
  }
  const std::string longDate = amzDate(scope.time);
  const std::string shortDate = longDate.substr(0, 8);

  std::string payloadHash;
  // Name -> values in the order given; std::map sorts the names as the canonical form wants.
  std::map<std::string, std::vector<std::string>> headers;
  bool hasHost = false;
  for (const auto& [name, value] : request.headers) {
    std::string lower = lowerCase(name);
    // The signer sets X-Amz-Date itself; a Date header is left out as AWS's own signer drops it.
    if (lower == "x-amz-date" || lower == "date" || lower == "x-amz-security-token" || isUnsignable(lower)) continue;
    if (lower == "host") hasHost = true;
    if (lower == "x-amz-content-sha256") payloadHash = canonicalHeaderValue(value);
    headers[lower].push_back(canonicalHeaderValue(value));
  }
  if (!hasHost) return makeError(ErrorCode::kInvalidArgument, "SigV4: the request has no Host header to sign");
  if (payloadHash.empty()) payloadHash = sha256Hex(request.body);

  SigV4Signature out;
  out.headersToAdd.emplace_back("X-Amz-Date", longDate);
  headers["x-amz-date"] = {longDate};
  if (!credentials.sessionToken.empty()) {
    out.headersToAdd.emplace_back("X-Amz-Security-Token", credentials.sessionToken);
    headers["x-amz-security-token"] = {canonicalHeaderValue(credentials.sessionToken)};
  }
  if (scope.addContentSha256Header && headers.count("x-amz-content-sha256") == 0) {
    out.headersToAdd.emplace_back("X-Amz-Content-Sha256", payloadHash);
    headers["x-amz-content-sha256"] = {payloadHash};
  }

  std::string canonicalHeaders;
  for (const auto& [name, values] : headers) {
    canonicalHeaders += name + ":";
    for (size_t i = 0; i < values.size(); ++i) canonicalHeaders += (i > 0 ? "," : "") + values[i];
    canonicalHeaders += "\n";
    if (!out.signedHeaders.empty()) out.signedHeaders += ";";
    out.signedHeaders += name;
  }

  out.canonicalRequest = request.method + "\n" + sigV4CanonicalPath(request.path) + "\n" +
                         sigV4CanonicalQuery(request.query) + "\n" + canonicalHeaders + "\n" + out.signedHeaders +
                         "\n" + payloadHash;
  const std::string credentialScope = shortDate + "/" + scope.region + "/" + scope.service + "/aws4_request";
  out.stringToSign =
      std::string(kAlgorithm) + "\n" + longDate + "\n" + credentialScope + "\n" + sha256Hex(out.canonicalRequest);
  const std::string key = sigV4SigningKey(credentials.secretAccessKey, shortDate, scope.region, scope.service);
  out.signature = hexEncode(hmacSha256(key, out.stringToSign));
  out.authorization = std::string(kAlgorithm) + " Credential=" + credentials.accessKeyId + "/" + credentialScope +
                      ", SignedHeaders=" + out.signedHeaders + ", Signature=" + out.signature;
  out.headersToAdd.emplace_back("Authorization", out.authorization);
  return out;
}

std::vector<std::pair<std::string, std::string>> parseQueryString(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> out;
  size_t start = 0;
  while (start < query.size()) {
    size_t amp = query.find('&', start);
    std::string_view item = query.substr(start, amp == std::string_view::npos ? std::string_view::npos : amp - start);
    if (!item.empty()) {
      size_t eq = item.find('=');
      if (eq == std::string_view::npos) {
        out.emplace_back(percentDecode(item), "");
      } else {
        out.emplace_back(percentDecode(item.substr(0, eq)), percentDecode(item.substr(eq + 1)));
      }
    }
    if (amp == std::string_view::npos) break;
    start = amp + 1;
  }
  return out;
}

std::optional<SigV4Authorization> parseSigV4Authorization(std::string_view header) {
  if (header.substr(0, kAlgorithm.size()) != kAlgorithm) return std::nullopt;
  std::string_view rest = header.substr(kAlgorithm.size());
  std::map<std::string, std::string> fields;
  size_t start = 0;
  while (start < rest.size()) {
    size_t comma = rest.find(',', start);
    std::string_view item =
        trim(rest.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (auto eq = item.find('='); eq != std::string_view::npos) {
      fields[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    }
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  SigV4Authorization out;
  const std::string credential = fields["Credential"];
  std::vector<std::string> parts;
  size_t from = 0;
  for (;;) {
    size_t slash = credential.find('/', from);
    parts.push_back(credential.substr(from, slash == std::string::npos ? std::string::npos : slash - from));
    if (slash == std::string::npos) break;
    from = slash + 1;
  }
  if (parts.size() != 5 || parts[4] != "aws4_request") return std::nullopt;
  out.accessKeyId = parts[0];
  out.date = parts[1];
  out.region = parts[2];
  out.service = parts[3];
  out.signedHeaders = fields["SignedHeaders"];
  out.signature = fields["Signature"];
  if (out.signedHeaders.empty() || out.signature.empty()) return std::nullopt;
  return out;
}

}  // namespace qcs::platform

#include "runtime/registry/registry_client.h"

#include "runtime/json_fields.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <sys/utsname.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "common/http_head.h"

namespace qcs::runtime::registry {

namespace {

using json = nlohmann::json;

constexpr size_t kMaxManifestBytes = size_t{4} * 1024 * 1024;  // Docker's own limit
constexpr size_t kMaxErrorBodyBytes = size_t{64} * 1024;

struct CurlEasyDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
struct EvpMdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using CurlEasyPtr = std::unique_ptr<CURL, CurlEasyDeleter>;
using CurlSlistPtr = std::unique_ptr<curl_slist, CurlSlistDeleter>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpMdCtxDeleter>;

void ensureCurlInitialized() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lowerCase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

// "application/json; charset=utf-8" -> "application/json"
std::string bareMediaType(std::string_view contentType) {
  const auto semicolon = contentType.find(';');
  return lowerCase(trim(contentType.substr(0, semicolon)));
}

std::string hostOf(std::string_view registry) {
  if (!registry.empty() && registry.front() == '[') {
    const auto close = registry.find(']');
    return std::string(registry.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1));
  }
  return std::string(registry.substr(0, registry.find(':')));
}

bool isLoopbackHost(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  // 127.0.0.0/8, written as a dotted quad.
  if (host.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (!std::isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return dots == 3;
}

bool isValidRepository(std::string_view repository) {
  if (repository.empty() || repository.size() > 255) return false;
  return std::all_of(repository.begin(), repository.end(), [](unsigned char c) {
    return std::islower(c) || std::isdigit(c) || c == '.' || c == '_' || c == '-' || c == '/';
  });
}

bool isValidTag(std::string_view tag) {
  if (tag.empty() || tag.size() > 128) return false;
  return std::all_of(tag.begin(), tag.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; });
}

// The registry's own explanation: "UNAUTHORIZED: authentication required", or "" if none.
std::string registryMessage(const std::string& body) {
  auto parsed = json::parse(body, nullptr, false);
  if (!parsed.is_object()) return {};
  auto errors = parsed.find("errors");
  if (errors != parsed.end() && errors->is_array() && !errors->empty() && (*errors)[0].is_object()) {
    const auto& first = (*errors)[0];
    std::string code = stringField(first, "code");
    std::string message = stringField(first, "message");
    if (!code.empty() && !message.empty()) return lowerCase(code) + ": " + message;
    return message.empty() ? lowerCase(code) : message;
  }
  // Token servers often answer {"details": "..."} or {"error": "..."}.
  for (const char* key : {"details", "error_description", "error", "message"}) {
    auto it = parsed.find(key);
    if (it != parsed.end() && it->is_string()) return it->get<std::string>();
  }
  return {};
}

Result<Descriptor> parseDescriptor(const json& value, const std::string& where) {
  if (!value.is_object()) return makeError(ErrorCode::kProtocol, where + " is not an object");
  Descriptor descriptor;
  auto mediaType = value.find("mediaType");
  if (mediaType != value.end() && mediaType->is_string()) descriptor.mediaType = mediaType->get<std::string>();
  auto digest = value.find("digest");
  if (digest == value.end() || !digest->is_string()) {
    return makeError(ErrorCode::kProtocol, where + " has no digest");
  }
  descriptor.digest = digest->get<std::string>();
  if (!isSha256Digest(descriptor.digest)) {
    return makeError(ErrorCode::kProtocol,
                     where + " has digest \"" + descriptor.digest +
                         "\", which is not sha256:<64 hex digits> (the only algorithm supported)");
  }
  auto size = value.find("size");
  if (size == value.end() || !size->is_number_integer() || size->get<int64_t>() < 0) {
    return makeError(ErrorCode::kProtocol, where + " has no valid size");
  }
  descriptor.size = size->get<int64_t>();
  auto platform = value.find("platform");
  if (platform != value.end() && platform->is_object()) {
    Platform p;
    p.os = platform->value("os", std::string());
    p.architecture = platform->value("architecture", std::string());
    p.variant = platform->value("variant", std::string());
    descriptor.platform = p;
  }
  return descriptor;
}

// For arm, an older variant runs on a newer CPU: v7 runs v7, v6, v5. 0 when not arm-compatible.
int armVariantNumber(const std::string& variant) {
  if (variant.size() == 2 && variant[0] == 'v' && std::isdigit(static_cast<unsigned char>(variant[1]))) {
    return variant[1] - '0';
  }
  return 0;
}

std::string describeCurlFailure(CURLcode code, const char* errorBuffer) {
  std::string detail = errorBuffer[0] != '\0' ? errorBuffer : curl_easy_strerror(code);
  return detail;
}

// Context for one transfer's callbacks.
struct TransferState {
  RegistryClient::Response response;
  const BlobSink* sink = nullptr;
  size_t cap = 0;
  bool tooLarge = false;
  bool sinkFailed = false;
  Error sinkError;

  bool success() const { return response.status >= 200 && response.status < 300; }
};

size_t onHeaderLine(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t length = size * count;
  std::string_view line(data, length);
  // A new status line (after a redirect or a 100 Continue) forgets the previous response's head.
  applyHttpHeadLine(line, state->response.status, state->response.headers);
  return length;
}

size_t onBodyData(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t length = size * count;
  if (state->sink != nullptr && *state->sink && state->success()) {
    // A sink's exception must not unwind through libcurl's C frames.
    try {
      Status status = (*state->sink)(std::string_view(data, length));
      if (!status.ok()) {
        state->sinkFailed = true;
        state->sinkError = status.error();
        return 0;
      }
    } catch (const std::exception& e) {
      state->sinkFailed = true;
      state->sinkError = makeError(ErrorCode::kInternal, std::string("the blob sink threw: ") + e.what());
      return 0;
    } catch (...) {
      state->sinkFailed = true;
      state->sinkError = makeError(ErrorCode::kInternal, "the blob sink threw");
      return 0;
    }
    return length;
  }
  const size_t cap = state->success() ? state->cap : kMaxErrorBodyBytes;
  if (state->response.body.size() + length > cap) {
    state->tooLarge = true;
    return 0;
  }
  state->response.body.append(data, length);
  return length;
}

// curl's no_proxy list with loopback added: a loopback registry is never reached through a proxy.
std::string noProxyList() {
  std::string list = "localhost,127.0.0.0/8,::1";
  for (const char* name : {"NO_PROXY", "no_proxy"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') {
      list += ",";
      list += value;
      break;
    }
  }
  return list;
}

}  // namespace

std::string Platform::toString() const { return os + "/" + architecture + (variant.empty() ? "" : "/" + variant); }

Platform platformForMachine(std::string_view machine) {
  Platform platform{"linux", std::string(machine), ""};
  if (machine == "x86_64" || machine == "amd64") {
    platform.architecture = "amd64";
  } else if (machine == "aarch64" || machine == "arm64" || machine == "armv8l") {
    platform.architecture = "arm64";
    platform.variant = "v8";
  } else if (machine.rfind("armv7", 0) == 0) {
    platform.architecture = "arm";
    platform.variant = "v7";
  } else if (machine.rfind("armv6", 0) == 0) {
    platform.architecture = "arm";
    platform.variant = "v6";
  } else if (machine.rfind("armv5", 0) == 0) {
    platform.architecture = "arm";
    platform.variant = "v5";
  } else if (machine == "i386" || machine == "i486" || machine == "i586" || machine == "i686") {
    platform.architecture = "386";
  } else if (machine == "ppc64le" || machine == "s390x" || machine == "riscv64" || machine == "mips64") {
    platform.architecture = std::string(machine);
  }
  return platform;
}

Platform hostPlatform() {
  struct utsname name {};
  if (::uname(&name) != 0) return Platform{"linux", "amd64", ""};
  return platformForMachine(name.machine);
}

bool isSha256Digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (digest.size() != kPrefix.size() + 64 || digest.substr(0, kPrefix.size()) != kPrefix) return false;
  return std::all_of(digest.begin() + kPrefix.size(), digest.end(),
                     [](unsigned char c) { return std::isdigit(c) || (c >= 'a' && c <= 'f'); });
}

Status verifyDigest(std::string_view data, std::string_view digest, std::string_view what) {
  if (!isSha256Digest(digest)) {
    return makeError(ErrorCode::kInvalidArgument,
                     std::string(what) + ": digest \"" + std::string(digest) + "\" is not sha256:<64 hex digits>");
  }
  const std::string actual = "sha256:" + sha256Hex(data);
  if (actual != digest) {
    return makeError(ErrorCode::kProtocol, std::string(what) + ": digest mismatch: expected " + std::string(digest) +
                                               ", the content has " + actual);
  }
  return okStatus();
}

Result<ParsedManifest> parseManifest(std::string_view body, std::string_view contentType) {
  auto document = json::parse(body, nullptr, false);
  if (!document.is_object()) return makeError(ErrorCode::kProtocol, "the manifest is not a JSON object");
  ParsedManifest manifest;
  manifest.mediaType = bareMediaType(contentType);
  if (manifest.mediaType.empty() || manifest.mediaType == "application/json" ||
      manifest.mediaType == "application/octet-stream") {
    manifest.mediaType = stringField(document, "mediaType");
  }
  if (manifest.mediaType.empty()) {
    // OCI allows leaving mediaType out: tell by the content.
    manifest.mediaType = document.contains("manifests") ? kOciIndex : kOciManifest;
  }
  const auto schemaVersion = document.find("schemaVersion");
  if (schemaVersion == document.end() || !schemaVersion->is_number_integer() || schemaVersion->get<int>() != 2) {
    return makeError(ErrorCode::kProtocol,
                     "the manifest is not schemaVersion 2 (schema 1 manifests are not supported)");
  }
  if (manifest.mediaType == kDockerManifestList || manifest.mediaType == kOciIndex) {
    manifest.isIndex = true;
    auto entries = document.find("manifests");
    if (entries == document.end() || !entries->is_array()) {
      return makeError(ErrorCode::kProtocol, "the index has no manifests array");
    }
    for (size_t i = 0; i < entries->size(); ++i) {
      auto entry = parseDescriptor((*entries)[i], "index entry " + std::to_string(i));
      if (!entry.ok()) return entry.error();
      manifest.manifests.push_back(std::move(entry).value());
    }
    return manifest;
  }
  if (manifest.mediaType != kDockerManifestV2 && manifest.mediaType != kOciManifest) {
    return makeError(ErrorCode::kProtocol, "unsupported manifest media type \"" + manifest.mediaType + "\"");
  }
  auto config = document.find("config");
  if (config == document.end()) return makeError(ErrorCode::kProtocol, "the manifest has no config");
  auto parsedConfig = parseDescriptor(*config, "the config descriptor");
  if (!parsedConfig.ok()) return parsedConfig.error();
  manifest.config = std::move(parsedConfig).value();
  auto layers = document.find("layers");
  if (layers == document.end() || !layers->is_array()) {
    return makeError(ErrorCode::kProtocol, "the manifest has no layers array");
  }
  for (size_t i = 0; i < layers->size(); ++i) {
    auto layer = parseDescriptor((*layers)[i], "layer " + std::to_string(i));
    if (!layer.ok()) return layer.error();
    manifest.layers.push_back(std::move(layer).value());
  }
  return manifest;
}

Result<Descriptor> selectPlatform(const std::vector<Descriptor>& manifests, const Platform& platform) {
  const Descriptor* best = nullptr;
  int bestScore = 0;
  std::string offered;
  for (const auto& entry : manifests) {
    if (!entry.platform) continue;
    const Platform& p = *entry.platform;
    if (!offered.empty()) offered += ", ";
    offered += p.toString();
    if (p.os != platform.os || p.architecture != platform.architecture) continue;
    int score = 0;
    if (p.variant == platform.variant) {
      score = 100;
    } else if (p.variant.empty()) {
      score = 50;
    } else if (platform.architecture == "arm") {
      const int wanted = armVariantNumber(platform.variant);
      const int offeredVariant = armVariantNumber(p.variant);
      if (offeredVariant > 0 && offeredVariant < wanted) score = offeredVariant;  // newest compatible wins
    }
    if (score > bestScore) {
      bestScore = score;
      best = &entry;
    }
  }
  if (best == nullptr) {
    return makeError(ErrorCode::kNotFound, "no manifest for platform " + platform.toString() + " (the image offers " +
                                               (offered.empty() ? std::string("none") : offered) + ")");
  }
  return *best;
}

std::string AuthChallenge::param(const std::string& name) const {
  auto it = params.find(name);
  return it == params.end() ? std::string() : it->second;
}

Result<std::vector<AuthChallenge>> parseAuthChallenges(std::string_view header) {
  std::vector<AuthChallenge> challenges;
  size_t i = 0;
  const auto skipSpaces = [&] {
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
  };
  const auto isTokenChar = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  };
  const auto readToken = [&] {
    const size_t start = i;
    while (i < header.size() && isTokenChar(header[i])) ++i;
    return std::string(header.substr(start, i - start));
  };
  while (true) {
    skipSpaces();
    while (i < header.size() && header[i] == ',') {
      ++i;
      skipSpaces();
    }
    if (i >= header.size()) break;
    std::string scheme = readToken();
    if (scheme.empty()) {
      return makeError(ErrorCode::kProtocol, "malformed WWW-Authenticate header: \"" + std::string(header) + "\"");
    }
    AuthChallenge challenge;
    challenge.scheme = lowerCase(scheme);
    // Parameters: name=value or name="quoted, value", separated by commas, until the next scheme.
    while (true) {
      skipSpaces();
      const size_t mark = i;
      std::string name = readToken();
      skipSpaces();
      if (name.empty() || i >= header.size() || header[i] != '=') {
        i = mark;  // a new challenge's scheme (or the end)
        break;
      }
      ++i;
      skipSpaces();
      std::string value;
      if (i < header.size() && header[i] == '"') {
        ++i;
        bool closed = false;
        while (i < header.size()) {
          const char c = header[i++];
          if (c == '\\' && i < header.size()) {
            value.push_back(header[i++]);
          } else if (c == '"') {
            closed = true;
            break;
          } else {
            value.push_back(c);
          }
        }
        if (!closed) {
          return makeError(ErrorCode::kProtocol,
                           "malformed WWW-Authenticate header (unterminated quote): \"" + std::string(header) + "\"");
        }
      } else {
        const size_t start = i;
        while (i < header.size() && header[i] != ',' && header[i] != ' ') ++i;
        value = std::string(header.substr(start, i - start));
      }
      challenge.params[lowerCase(name)] = value;
      skipSpaces();
      if (i < header.size() && header[i] == ',') ++i;
    }
    challenges.push_back(std::move(challenge));
  }
  if (challenges.empty()) return makeError(ErrorCode::kProtocol, "empty WWW-Authenticate header");
  return challenges;
}

std::string RegistryClient::Response::header(const std::string& name) const {
  auto it = headers.find(lowerCase(name));
  return it == headers.end() ? std::string() : it->second;
}

RegistryClient::RegistryClient(RegistryClientOptions options) : options_(std::move(options)) {
  ensureCurlInitialized();
  loopback_ = isLoopbackHost(hostOf(options_.registry));
  // Docker Hub's API lives on registry-1.docker.io.
  const std::string endpoint = options_.registry == "docker.io" ? "registry-1.docker.io" : options_.registry;
  baseUrl_ = (loopback_ ? "http://" : "https://") + endpoint;
}

std::chrono::steady_clock::time_point RegistryClient::now() const {
  return options_.clock ? options_.clock() : std::chrono::steady_clock::now();
}

Result<RegistryClient::Response> RegistryClient::send(const Request& request, const BlobSink& sink) {
  CurlEasyPtr easy(curl_easy_init());
  if (!easy) return makeError(ErrorCode::kInternal, "registry " + options_.registry + ": curl_easy_init failed");
  CURL* handle = easy.get();
  TransferState state;
  state.sink = &sink;
  state.cap = kMaxManifestBytes;
  char errorBuffer[CURL_ERROR_SIZE] = {};

  CurlSlistPtr headers;
  for (const auto& header : request.headers) {
    curl_slist* appended = curl_slist_append(headers.get(), header.c_str());
    if (appended == nullptr) return makeError(ErrorCode::kInternal, "curl_slist_append failed");
    (void)headers.release();
    headers.reset(appended);
  }
  const std::string noProxy = noProxyList();
  // Plain http only ever for loopback registries, and redirects may not downgrade https.
  const char* protocols = loopback_ ? "http,https" : "https";
  curl_easy_setopt(handle, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, protocols);
  curl_easy_setopt(handle, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
  curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(handle, CURLOPT_USERAGENT, "qcs-agent");
  curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(handle, CURLOPT_NOPROXY, noProxy.c_str());
  curl_easy_setopt(handle, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(handle, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!options_.caBundlePath.empty()) curl_easy_setopt(handle, CURLOPT_CAINFO, options_.caBundlePath.c_str());
  curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS, long(options_.connectTimeout.count()));
  const auto total = request.blob ? options_.blobTimeout : options_.requestTimeout;
  curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, long(total.count()));
  if (request.blob && options_.blobStallTimeout.count() > 0) {
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(handle, CURLOPT_LOW_SPEED_TIME, long(options_.blobStallTimeout.count()));
  }
  // Blobs are often served by a redirect to storage; libcurl does not send our Authorization
  // header to another host.
  curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, request.blob ? 1L : 0L);
  curl_easy_setopt(handle, CURLOPT_MAXREDIRS, 5L);
  if (request.method == "POST") {
    curl_easy_setopt(handle, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE, long(request.body.size()));
  }
  curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, &onHeaderLine);
  curl_easy_setopt(handle, CURLOPT_HEADERDATA, &state);
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &onBodyData);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, errorBuffer);

  const CURLcode code = curl_easy_perform(handle);
  // The URL without query: token requests carry scopes, never secrets, but keep messages short.
  const std::string where =
      "registry " + options_.registry + ": " + request.method + " " + request.url.substr(0, request.url.find('?'));
  if (state.sinkFailed) return state.sinkError;
  if (code == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status);
    if (status != 0) state.response.status = status;
    return std::move(state.response);
  }
  if (state.tooLarge) {
    return makeError(ErrorCode::kProtocol,
                     where + ": the answer is larger than the " +
                         std::to_string(state.success() ? kMaxManifestBytes : kMaxErrorBodyBytes) + " bytes allowed");
  }
  const std::string detail = describeCurlFailure(code, errorBuffer);
  switch (code) {
    case CURLE_OPERATION_TIMEDOUT: return makeError(ErrorCode::kTimeout, where + ": timed out (" + detail + ")");
    case CURLE_COULDNT_RESOLVE_HOST:
      return makeError(ErrorCode::kUnavailable, where + ": cannot resolve the host (" + detail + "; check DNS)");
    case CURLE_COULDNT_CONNECT:
      return makeError(ErrorCode::kUnavailable, where + ": cannot connect (" + detail + "; is the registry up?)");
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
      return makeError(ErrorCode::kUnavailable,
                       where + ": TLS failed (" + detail +
                           "; if the registry uses a private CA, give its certificate as the CA bundle)");
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_TOO_MANY_REDIRECTS:
      return makeError(ErrorCode::kProtocol, where + ": refused redirect or protocol (" + detail + ")");
    default: return makeError(ErrorCode::kUnavailable, where + ": " + detail);
  }
}

Error RegistryClient::statusError(const Response& response, const std::string& what) const {
  std::string message = registryMessage(response.body);
  const std::string prefix = "registry " + options_.registry + ": " + what + ": ";
  const std::string suffix = message.empty() ? "HTTP " + std::to_string(response.status)
                                             : message + " (HTTP " + std::to_string(response.status) + ")";
  switch (response.status) {
    case 401: return makeError(ErrorCode::kUnauthenticated, prefix + suffix);
    case 403: return makeError(ErrorCode::kPermissionDenied, prefix + suffix);
    case 404: return makeError(ErrorCode::kNotFound, prefix + suffix);
    case 408:
    case 429:
    case 500:
    case 502:
    case 503:
    case 504: return makeError(ErrorCode::kUnavailable, prefix + suffix);
    default: return makeError(ErrorCode::kProtocol, prefix + "unexpected " + suffix);
  }
}

Result<std::string> RegistryClient::fetchToken(const AuthChallenge& challenge, const std::string& scope) {
  const std::string realm = challenge.param("realm");
  if (realm.rfind("https://", 0) != 0 && !(loopback_ && realm.rfind("http://", 0) == 0)) {
    return makeError(ErrorCode::kProtocol,
                     "registry " + options_.registry + ": the token realm \"" + realm + "\" is not an https URL");
  }
  const std::string service = challenge.param("service");
  const std::string tokenScope = challenge.param("scope").empty() ? scope : challenge.param("scope");
  Request request;
  request.url = realm;
  const auto& credentials = options_.credentials;
  if (credentials && !credentials->identityToken.empty()) {
    // Docker's OAuth2 flow: the identity token is a refresh token.
    request.method = "POST";
    request.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    request.body = "grant_type=refresh_token&client_id=qcs-agent&service=" + urlEncode(service) +
                   "&scope=" + urlEncode(tokenScope) + "&refresh_token=" + urlEncode(credentials->identityToken);
  } else {
    std::string query = "service=" + urlEncode(service);
    if (!tokenScope.empty()) query += "&scope=" + urlEncode(tokenScope);
    if (credentials && !credentials->username.empty()) {
      query += "&account=" + urlEncode(credentials->username);
      request.headers.push_back("Authorization: Basic " +
                                base64Encode(credentials->username + ":" + credentials->password));
    }
    request.url += (realm.find('?') == std::string::npos ? "?" : "&") + query;
  }
  auto response = send(request, {});
  if (!response.ok()) return withContext(response.error(), "fetching a token for " + tokenScope);
  if (response->status < 200 || response->status >= 300) {
    Error error = statusError(*response, "token for " + tokenScope + " from " + realm.substr(0, realm.find('?')));
    if (response->status == 400 || response->status == 403) error.code = ErrorCode::kUnauthenticated;
    return error;
  }
  auto body = json::parse(response->body, nullptr, false);
  std::string token;
  if (body.is_object()) {
    token = stringField(body, "token");
    if (token.empty()) token = stringField(body, "access_token");
  }
  if (token.empty()) {
    return makeError(ErrorCode::kProtocol, "registry " + options_.registry + ": the token server " +
                                               realm.substr(0, realm.find('?')) + " answered without a token");
  }
  int64_t expiresIn = 60;  // the spec's default
  if (body.contains("expires_in") && body["expires_in"].is_number_integer()) {
    expiresIn = std::max<int64_t>(body["expires_in"].get<int64_t>(), 0);
  }
  std::lock_guard lock(mutex_);
  tokens_[scope] = CachedToken{token, now() + std::chrono::seconds(expiresIn)};
  return token;
}

Result<RegistryClient::Response> RegistryClient::authorizedSend(Request request, const std::string& scope,
                                                                const BlobSink& sink) {
  const auto& credentials = options_.credentials;
  const bool haveBasic = credentials && !credentials->username.empty();
  const std::string basicHeader =
      haveBasic ? "Authorization: Basic " + base64Encode(credentials->username + ":" + credentials->password) : "";
  const size_t plainHeaders = request.headers.size();
  std::string authUsed;  // "bearer", "basic" or ""
  {
    std::lock_guard lock(mutex_);
    auto cached = tokens_.find(scope);
    if (cached != tokens_.end() && now() < cached->second.expires) {
      request.headers.push_back("Authorization: Bearer " + cached->second.token);
      authUsed = "bearer";
    } else if (basicChallenged_ && haveBasic) {
      request.headers.push_back(basicHeader);
      authUsed = "basic";
    }
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto response = send(request, sink);
    if (!response.ok() || response->status != 401 || attempt == 1) return response;
    auto challenges = parseAuthChallenges(response->header("www-authenticate"));
    if (!challenges.ok()) return response;  // no usable challenge: the 401 stands
    const AuthChallenge* bearer = nullptr;
    const AuthChallenge* basic = nullptr;
    for (const auto& challenge : *challenges) {
      if (challenge.scheme == "bearer" && bearer == nullptr) bearer = &challenge;
      if (challenge.scheme == "basic" && basic == nullptr) basic = &challenge;
    }
    request.headers.resize(plainHeaders);
    if (bearer != nullptr) {
      auto token = fetchToken(*bearer, scope);
      if (!token.ok()) return token.error();
      request.headers.push_back("Authorization: Bearer " + *token);
    } else if (basic != nullptr) {
      if (!haveBasic || authUsed == "basic") return response;  // nothing (new) to offer
      {
        std::lock_guard lock(mutex_);
        basicChallenged_ = true;
      }
      request.headers.push_back(basicHeader);
      authUsed = "basic";
    } else {
      return response;
    }
  }
  return makeError(ErrorCode::kInternal, "unreachable");
}

Result<RegistryClient::FetchedManifest> RegistryClient::fetchManifest(const std::string& repository,
                                                                      const std::string& reference,
                                                                      const std::string& expectedDigest) {
  Request request;
  request.url = baseUrl_ + "/v2/" + repository + "/manifests/" + reference;
  request.headers.push_back("Accept: " + std::string(kDockerManifestV2) + ", " + std::string(kDockerManifestList) +
                            ", " + std::string(kOciManifest) + ", " + std::string(kOciIndex));
  const std::string what = "manifest " + repository + (reference.rfind("sha256:", 0) == 0 ? "@" : ":") + reference;
  auto response = authorizedSend(std::move(request), "repository:" + repository + ":pull", {});
  if (!response.ok()) return response.error();  // already names the registry and the URL
  if (response->status != 200) return statusError(*response, what);
  FetchedManifest fetched;
  fetched.raw = std::move(response->body);
  fetched.digest = "sha256:" + sha256Hex(fetched.raw);
  const std::string announced = response->header("docker-content-digest");
  if (!announced.empty() && announced != fetched.digest) {
    // Only sha256 is computed here: another algorithm's header cannot be checked, and the pinned
    // or descriptor digest (always sha256 here) still is.
    if (announced.rfind("sha256:", 0) == 0) {
      return makeError(ErrorCode::kProtocol, "registry " + options_.registry + ": " + what +
                                                 ": digest mismatch: Docker-Content-Digest says " + announced +
                                                 ", the content has " + fetched.digest);
    }
  }
  if (!expectedDigest.empty()) {
    auto verified = verifyDigest(fetched.raw, expectedDigest, "registry " + options_.registry + ": " + what);
    if (!verified.ok()) return verified.error();
  }
  auto parsed = parseManifest(fetched.raw, response->header("content-type"));
  if (!parsed.ok()) return withContext(parsed.error(), "registry " + options_.registry + ": " + what);
  fetched.parsed = std::move(parsed).value();
  return fetched;
}

Result<ResolvedManifest> RegistryClient::resolve(const ImageReference& ref, const Platform& platform) {
  const std::string image =
      ref.registry + "/" + ref.repository + (ref.digest.empty() ? ":" + ref.tag : "@" + ref.digest);
  if (ref.registry != options_.registry) {
    return makeError(ErrorCode::kInvalidArgument, "resolving " + image + ": this client talks to registry " +
                                                      options_.registry + ", not " + ref.registry);
  }
  if (!isValidRepository(ref.repository)) {
    return makeError(ErrorCode::kInvalidArgument, "resolving " + image + ": invalid repository name");
  }
  if (!ref.digest.empty() && !isSha256Digest(ref.digest)) {
    return makeError(
        ErrorCode::kInvalidArgument,
        "resolving " + image + ": the digest is not sha256:<64 hex digits> (the only algorithm supported)");
  }
  if (ref.digest.empty() && !isValidTag(ref.tag)) {
    return makeError(ErrorCode::kInvalidArgument, "resolving " + image + ": invalid tag \"" + ref.tag + "\"");
  }
  const std::string reference = ref.digest.empty() ? ref.tag : ref.digest;
  auto top = fetchManifest(ref.repository, reference, ref.digest);
  if (!top.ok()) return top.error();

  ResolvedManifest resolved;
  FetchedManifest manifest = std::move(top).value();
  if (manifest.parsed.isIndex) {
    auto entry = selectPlatform(manifest.parsed.manifests, platform);
    if (!entry.ok()) return withContext(entry.error(), "resolving " + image);
    resolved.indexDigest = manifest.digest;
    auto child = fetchManifest(ref.repository, entry->digest, entry->digest);
    if (!child.ok()) return child.error();
    if (child->parsed.isIndex) {
      return makeError(ErrorCode::kProtocol, "resolving " + image + ": the index entry for " + platform.toString() +
                                                 " is another index (nested indexes are not supported)");
    }
    if (int64_t(child->raw.size()) != entry->size) {
      return makeError(ErrorCode::kProtocol, "resolving " + image + ": the manifest for " + platform.toString() +
                                                 " has " + std::to_string(child->raw.size()) +
                                                 " bytes, the index says " + std::to_string(entry->size));
    }
    manifest = std::move(child).value();
  }
  resolved.digest = manifest.digest;
  resolved.mediaType = manifest.parsed.mediaType;
  resolved.raw = std::move(manifest.raw);
  resolved.config = std::move(manifest.parsed.config);
  resolved.layers = std::move(manifest.parsed.layers);
  return resolved;
}

Status RegistryClient::fetchBlob(const std::string& repository, const Descriptor& blob, const BlobSink& sink) {
  const std::string what = "blob " + repository + "@" + blob.digest;
  if (!isValidRepository(repository)) {
    return makeError(ErrorCode::kInvalidArgument, "fetching " + what + ": invalid repository name");
  }
  if (!isSha256Digest(blob.digest)) {
    return makeError(ErrorCode::kInvalidArgument,
                     "fetching " + what + ": the digest is not sha256:<64 hex digits> (the only algorithm supported)");
  }
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return makeError(ErrorCode::kInternal, "fetching " + what + ": cannot initialise SHA-256");
  }
  int64_t received = 0;
  BlobSink hashing = [&](std::string_view chunk) -> Status {
    received += int64_t(chunk.size());
    if (received > blob.size) {
      return makeError(ErrorCode::kProtocol, "registry " + options_.registry + ": " + what +
                                                 ": size mismatch: more than the " + std::to_string(blob.size) +
                                                 " bytes the descriptor names");
    }
    if (EVP_DigestUpdate(ctx.get(), chunk.data(), chunk.size()) != 1) {
      return makeError(ErrorCode::kInternal, "fetching " + what + ": SHA-256 update failed");
    }
    return sink ? sink(chunk) : okStatus();
  };
  Request request;
  request.url = baseUrl_ + "/v2/" + repository + "/blobs/" + blob.digest;
  request.blob = true;
  auto response = authorizedSend(std::move(request), "repository:" + repository + ":pull", hashing);
  if (!response.ok()) return response.error();  // already names the registry and the blob
  if (response->status < 200 || response->status >= 300) return statusError(*response, what);
  if (received != blob.size) {
    return makeError(ErrorCode::kProtocol, "registry " + options_.registry + ": " + what + ": size mismatch: got " +
                                               std::to_string(received) + " bytes, the descriptor says " +
                                               std::to_string(blob.size));
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest.data(), &length) != 1) {
    return makeError(ErrorCode::kInternal, "fetching " + what + ": SHA-256 final failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string actual = "sha256:";
  for (unsigned int i = 0; i < length; ++i) {
    actual.push_back(kHex[digest[i] >> 4]);
    actual.push_back(kHex[digest[i] & 0xf]);
  }
  if (actual != blob.digest) {
    return makeError(ErrorCode::kProtocol,
                     "registry " + options_.registry + ": " + what + ": digest mismatch: the content has " + actual);
  }
  return okStatus();
}

}  // namespace qcs::runtime::registry

#include "platform/aws_credentials.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/encoding.h"
#include "runtime/json_fields.h"

namespace qcs::platform {

namespace {

using json = nlohmann::json;

// Metadata services answer in milliseconds when they exist; elsewhere a short timeout keeps a
// wrong guess cheap.
constexpr std::chrono::milliseconds kMetadataConnectTimeout{1000};
constexpr std::chrono::milliseconds kMetadataTotalTimeout{3000};
// The IMDS token is renewed this long before its TTL runs out.
constexpr std::chrono::seconds kImdsTokenMargin{60};

std::string envOr(const EnvLookup& env, const std::string& name) {
  auto value = env ? env(name) : std::nullopt;
  return value ? std::string(trim(*value)) : std::string();
}

bool isTrue(const std::string& value) {
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return lower == "true" || lower == "1";
}

std::string hostOf(const std::string& url) {
  auto start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  auto end = url.find_first_of("/?#", start);
  std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  if (!authority.empty() && authority.front() == '[') return authority.substr(1, authority.find(']') - 1);
  return authority.substr(0, authority.find(':'));
}

// Parses the JSON both the ECS endpoint and IMDS answer with.
Result<AwsCredentials> parseCredentialsDocument(const std::string& body, const std::string& source,
                                                const std::string& where) {
  auto doc = json::parse(body, nullptr, false);
  if (!doc.is_object()) {
    return makeError(ErrorCode::kProtocol, where + ": the answer is not a JSON credentials document");
  }
  if (auto code = doc.find("Code"); code != doc.end() && code->is_string() && *code != "Success") {
    return makeError(ErrorCode::kUnavailable,
                     where + ": the credentials are not available (Code " + code->get<std::string>() + ")");
  }
  AwsCredentials creds;
  creds.accessKeyId = runtime::stringField(doc, "AccessKeyId");
  creds.secretAccessKey = runtime::stringField(doc, "SecretAccessKey");
  creds.sessionToken = runtime::stringField(doc, "Token");
  creds.source = source;
  if (creds.accessKeyId.empty() || creds.secretAccessKey.empty()) {
    return makeError(ErrorCode::kProtocol, where + ": the answer has no AccessKeyId/SecretAccessKey");
  }
  if (std::string expiration = runtime::stringField(doc, "Expiration"); !expiration.empty()) {
    creds.expiration = parseIso8601(expiration);
    if (!creds.expiration) {
      return makeError(ErrorCode::kProtocol, where + ": the Expiration \"" + expiration + "\" is not an ISO 8601 time");
    }
  }
  return creds;
}

std::string httpFailure(const HttpResponse& response) {
  std::string detail = "HTTP " + std::to_string(response.status);
  std::string message = awsErrorMessage(response);
  if (!message.empty()) detail += ": " + message;
  return detail;
}

class StaticCredentials final : public AwsCredentialsProvider {
 public:
  explicit StaticCredentials(AwsCredentials credentials) : credentials_(std::move(credentials)) {}
  Result<AwsCredentials> credentials() override { return credentials_; }
  void invalidate() override {}

 private:
  AwsCredentials credentials_;
};

class CredentialChain final : public AwsCredentialsProvider {
 public:
  explicit CredentialChain(AwsChainOptions options) : options_(std::move(options)) {}

  Result<AwsCredentials> credentials() override {
    std::lock_guard lock(mu_);
    const auto now = options_.clock->wallNow();
    if (cached_ && (!cached_->expiration || now < *cached_->expiration - options_.refreshBeforeExpiry)) {
      return *cached_;
    }
    auto fresh = fetch();
    if (!fresh) {
      // Still-valid credentials outlive a failed refresh: the endpoint may be back next time.
      if (cached_ && cached_->expiration && now < *cached_->expiration) return *cached_;
      return fresh.error();
    }
    cached_ = fresh.value();
    return fresh;
  }

  void invalidate() override {
    std::lock_guard lock(mu_);
    cached_.reset();
  }

 private:
  Result<AwsCredentials> fetch() {
    const EnvLookup& env = options_.env;
    const std::string accessKey = envOr(env, "AWS_ACCESS_KEY_ID");
    const std::string secretKey = envOr(env, "AWS_SECRET_ACCESS_KEY");
    if (!accessKey.empty() || !secretKey.empty()) {
      if (accessKey.empty() || secretKey.empty()) {
        return makeError(ErrorCode::kUnauthenticated,
                         "AWS credentials from the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must "
                         "both be set (or neither, to use the ECS task role or the instance role)");
      }
      return AwsCredentials{accessKey, secretKey, envOr(env, "AWS_SESSION_TOKEN"), std::nullopt, "environment"};
    }
    const std::string relative = envOr(env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const std::string full = envOr(env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (!relative.empty() || !full.empty()) return fetchContainerCredentials(relative, full);
    auto imdsEndpoint = imdsEndpointFromEnv(env);
    if (!imdsEndpoint) {
      return makeError(ErrorCode::kUnauthenticated,
                       "no AWS credentials: AWS_ACCESS_KEY_ID is not set, no ECS container credentials "
                       "(AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI) are configured, and "
                       "AWS_EC2_METADATA_DISABLED turns off the instance role; give the agent one of them");
    }
    if (!imds_ || imds_->endpoint() != *imdsEndpoint) {
      imds_ = std::make_unique<ImdsClient>(options_.http, *imdsEndpoint, *options_.clock);
    }
    return fetchInstanceRole(*imds_);
  }

  Result<AwsCredentials> fetchContainerCredentials(const std::string& relative, const std::string& full) {
    std::string url;
    if (!relative.empty()) {
      std::string host = envOr(options_.env, "QCS_AWS_CONTAINER_CREDENTIALS_HOST");
      if (host.empty()) host = kDefaultEcsCredentialsHost;
      url = "http://" + host + (relative.front() == '/' ? "" : "/") + relative;
    } else {
      url = full;
      const std::string host = hostOf(full);
      const bool https = full.rfind("https://", 0) == 0;
      const bool allowedHttp = full.rfind("http://", 0) == 0 &&
                               (host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0 ||
                                host == "169.254.170.2" || host == "169.254.170.23" || host == "fd00:ec2::23");
      if (!https && !allowedHttp) {
        return makeError(ErrorCode::kInvalidArgument,
                         "AWS_CONTAINER_CREDENTIALS_FULL_URI " + describeEndpoint(full) +
                             ": must be https, or http to a loopback address or the ECS/EKS credentials address");
      }
    }
    const std::string where = "ECS container credentials endpoint " + describeEndpoint(url);
    HttpRequest request;
    request.url = url;
    request.connectTimeout = kMetadataConnectTimeout;
    request.totalTimeout = kMetadataTotalTimeout;
    std::string authorization;
    if (std::string tokenFile = envOr(options_.env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"); !tokenFile.empty()) {
      std::ifstream in(tokenFile);
      if (!in) {
        return makeError(ErrorCode::kUnauthenticated,
                         where + ": cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE " + tokenFile);
      }
      std::ostringstream text;
      text << in.rdbuf();
      authorization = std::string(trim(text.str()));
    } else {
      authorization = envOr(options_.env, "AWS_CONTAINER_AUTHORIZATION_TOKEN");
    }
    if (!authorization.empty()) request.headers.emplace_back("Authorization", authorization);
    auto response = options_.http->send(request);
    if (!response) return withContext(response.error(), "AWS credentials");
    if (response->status != 200) {
      const ErrorCode code =
          response->status == 401 || response->status == 403 ? ErrorCode::kUnauthenticated : ErrorCode::kUnavailable;
      return makeError(code, where + " answered " + httpFailure(response.value()) +
                                 (code == ErrorCode::kUnauthenticated
                                      ? " (check AWS_CONTAINER_AUTHORIZATION_TOKEN and the task role)"
                                      : ""));
    }
    return parseCredentialsDocument(response->body, "ecs", where);
  }

  Result<AwsCredentials> fetchInstanceRole(ImdsClient& imds) {
    const std::string base = "/latest/meta-data/iam/security-credentials/";
    auto roles = imds.get(base);
    if (!roles) {
      return withContext(roles.error(),
                         "AWS instance role (IMDSv2; on EC2 attach an instance profile, elsewhere set "
                         "AWS_EC2_METADATA_DISABLED=true and give credentials another way)");
    }
    std::string role(trim(roles->substr(0, roles->find('\n'))));
    if (role.empty()) {
      return makeError(ErrorCode::kUnauthenticated,
                       "AWS instance role: the instance has no IAM role attached (attach an instance profile)");
    }
    auto document = imds.get(base + role);
    if (!document) return withContext(document.error(), "AWS instance role " + role);
    return parseCredentialsDocument(document.value(), "imds", "IMDS credentials of role " + role);
  }

  AwsChainOptions options_;
  std::mutex mu_;
  std::optional<AwsCredentials> cached_;
  std::unique_ptr<ImdsClient> imds_;
};

}  // namespace

std::shared_ptr<AwsCredentialsProvider> makeAwsCredentialChain(AwsChainOptions options) {
  return std::make_shared<CredentialChain>(std::move(options));
}

std::shared_ptr<AwsCredentialsProvider> makeStaticAwsCredentials(AwsCredentials credentials) {
  return std::make_shared<StaticCredentials>(std::move(credentials));
}

ImdsClient::ImdsClient(std::shared_ptr<CloudHttpClient> http, std::string endpoint, const Clock& clock,
                       std::chrono::seconds tokenTtl)
    : http_(std::move(http)), endpoint_(std::move(endpoint)), clock_(clock), tokenTtl_(tokenTtl) {
  while (!endpoint_.empty() && endpoint_.back() == '/') endpoint_.pop_back();
}

Result<std::string> ImdsClient::token(bool forceNew) {
  std::lock_guard lock(mu_);
  if (!forceNew && !token_.empty() && clock_.now() < tokenValidUntil_) return token_;
  HttpRequest request;
  request.method = "PUT";
  request.url = endpoint_ + "/latest/api/token";
  request.headers.emplace_back("X-aws-ec2-metadata-token-ttl-seconds", std::to_string(tokenTtl_.count()));
  request.connectTimeout = kMetadataConnectTimeout;
  request.totalTimeout = kMetadataTotalTimeout;
  const SteadyTime asked = clock_.now();
  auto response = http_->send(request);
  if (!response) return response.error();
  if (response->status != 200 || trim(response->body).empty()) {
    return makeError(response->status == 403 ? ErrorCode::kPermissionDenied : ErrorCode::kUnavailable,
                     "IMDS " + endpoint_ + ": the session token request (PUT /latest/api/token) answered HTTP " +
                         std::to_string(response->status) +
                         (response->status == 403 ? " (IMDS is disabled for this instance)" : ""));
  }
  token_ = std::string(trim(response->body));
  tokenValidUntil_ = asked + std::max(std::chrono::seconds(1), tokenTtl_ - kImdsTokenMargin);
  return token_;
}

Result<HttpResponse> ImdsClient::getWithToken(const std::string& path, const std::string& token) {
  HttpRequest request;
  request.url = endpoint_ + path;
  request.headers.emplace_back("X-aws-ec2-metadata-token", token);
  request.connectTimeout = kMetadataConnectTimeout;
  request.totalTimeout = kMetadataTotalTimeout;
  return http_->send(request);
}

Result<std::string> ImdsClient::get(const std::string& path) {
  auto current = token(false);
  if (!current) return current.error();
  auto response = getWithToken(path, current.value());
  if (response && response->status == 401) {
    // The token expired or IMDS restarted: one fresh token, one more try.
    current = token(true);
    if (!current) return current.error();
    response = getWithToken(path, current.value());
  }
  if (!response) return response.error();
  if (response->status != 200) {
    return makeError(response->status == 404 ? ErrorCode::kNotFound : ErrorCode::kUnavailable,
                     "IMDS " + endpoint_ + path + " answered HTTP " + std::to_string(response->status));
  }
  return std::move(response->body);
}

std::optional<std::string> imdsEndpointFromEnv(const EnvLookup& env) {
  if (isTrue(envOr(env, "AWS_EC2_METADATA_DISABLED"))) return std::nullopt;
  std::string endpoint = envOr(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
  if (endpoint.empty()) endpoint = kDefaultImdsEndpoint;
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  return endpoint;
}

Result<std::string> resolveAwsRegion(const std::string& configured, const EnvLookup& env, ImdsClient* imds) {
  if (!configured.empty()) return configured;
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (std::string value = envOr(env, name); !value.empty()) return value;
  }
  if (imds != nullptr) {
    auto region = imds->get("/latest/meta-data/placement/region");
    if (region && !trim(region.value()).empty()) return std::string(trim(region.value()));
    if (!region) {
      return withContext(region.error(),
                         "AWS region: not configured, AWS_REGION is not set, and the instance metadata did not say "
                         "(set region in the secret reference or AWS_REGION)");
    }
  }
  return makeError(ErrorCode::kInvalidArgument,
                   "AWS region: not configured (set region in the secret reference, or AWS_REGION)");
}

std::optional<std::chrono::system_clock::time_point> parseIso8601(const std::string& text) {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second, &consumed) !=
      6) {
    return std::nullopt;
  }
  std::string_view rest(text.c_str() + consumed);
  if (!rest.empty() && rest.front() == '.') {
    size_t digits = 1;
    while (digits < rest.size() && std::isdigit(static_cast<unsigned char>(rest[digits]))) ++digits;
    rest.remove_prefix(digits);
  }
  if (rest != "Z" && rest != "+00:00" && rest != "+0000" && !rest.empty()) return std::nullopt;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  std::time_t seconds = timegm(&tm);
  if (seconds == -1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(seconds);
}

}  // namespace qcs::platform

namespace qcs::platform {

namespace {

// "https://host:port/base" -> {"host:port", "/base"}
std::pair<std::string, std::string> splitEndpoint(const std::string& endpoint) {
  auto start = endpoint.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  auto slash = endpoint.find('/', start);
  std::string authority = endpoint.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
  std::string path = slash == std::string::npos ? "/" : endpoint.substr(slash);
  if (auto query = path.find('?'); query != std::string::npos) path.resize(query);
  // The default port is not part of the Host header libcurl sends, so it is not signed either.
  if (endpoint.rfind("https://", 0) == 0 && authority.size() > 4 &&
      authority.compare(authority.size() - 4, 4, ":443") == 0) {
    authority.resize(authority.size() - 4);
  } else if (endpoint.rfind("http://", 0) == 0 && authority.size() > 3 &&
             authority.compare(authority.size() - 3, 3, ":80") == 0) {
    authority.resize(authority.size() - 3);
  }
  return {authority, path.empty() ? "/" : path};
}

bool isExpiredCredentials(const std::string& code) {
  return code == "ExpiredTokenException" || code == "ExpiredToken" || code == "RequestExpired";
}

}  // namespace

Result<std::string> callAwsJsonApi(const AwsCallContext& context, const std::string& endpoint,
                                   const std::string& region, const std::string& service, const std::string& target,
                                   const std::string& body, const std::string& what) {
  const auto [host, path] = splitEndpoint(endpoint);
  const std::string where =
      what + " (" + target.substr(target.find('.') + 1) + " at " + describeEndpoint(endpoint) + ")";
  for (int attempt = 0;; ++attempt) {
    auto credentials = context.credentials->credentials();
    if (!credentials) return withContext(credentials.error(), where);
    SigV4Request toSign;
    toSign.method = "POST";
    toSign.path = path;
    toSign.headers = {{"Host", host}, {"Content-Type", "application/x-amz-json-1.1"}, {"X-Amz-Target", target}};
    toSign.body = body;
    auto signature = signSigV4(toSign, credentials.value(), SigV4Scope{region, service, context.clock->wallNow()});
    if (!signature) return withContext(signature.error(), where);
    HttpRequest request;
    request.method = "POST";
    request.url = endpoint.substr(0, endpoint.find("://") + 3) + host + path;
    request.headers = toSign.headers;
    for (const auto& header : signature->headersToAdd) request.headers.push_back(header);
    request.body = body;
    auto response = context.http->send(request);
    if (!response) return withContext(response.error(), where);
    if (response->status == 200) return std::move(response->body);

    const std::string code = awsErrorCode(response.value());
    if (isExpiredCredentials(code) && attempt == 0) {
      context.credentials->invalidate();
      continue;
    }
    std::string detail = (code.empty() ? "HTTP " + std::to_string(response->status) : code);
    if (std::string message = awsErrorMessage(response.value()); !message.empty()) detail += ": " + message;
    detail += " (HTTP " + std::to_string(response->status) + ", credentials from " + credentials->source + ")";
    ErrorCode errorCode = ErrorCode::kProtocol;
    if (code == "AccessDeniedException" || code == "AccessDenied" || response->status == 403) {
      errorCode = ErrorCode::kPermissionDenied;
    }
    if (code == "ResourceNotFoundException") errorCode = ErrorCode::kNotFound;
    if (isExpiredCredentials(code) || code == "UnrecognizedClientException" || code == "InvalidSignatureException" ||
        code == "IncompleteSignature" || code == "MissingAuthenticationToken" || response->status == 401) {
      errorCode = ErrorCode::kUnauthenticated;
    }
    if (isRetryableResponse(response.value())) errorCode = ErrorCode::kUnavailable;
    return makeError(errorCode, where + ": " + detail);
  }
}

}  // namespace qcs::platform

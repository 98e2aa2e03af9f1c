#include "harness/aws_emulator.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/encoding.h"
#include "harness/sigv4_verifier.h"

namespace qcs::testing {

using json = nlohmann::json;

namespace {

constexpr const char* kSecretsManagerTarget = "secretsmanager.GetSecretValue";
constexpr const char* kEcrTarget = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

std::string iso8601(std::chrono::system_clock::time_point t) {
  std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double epochSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

}  // namespace

AwsEmulator::AwsEmulator(Options options) : options_(std::move(options)) {}

std::unique_ptr<AwsEmulator> AwsEmulator::start(Options options) {
  std::unique_ptr<AwsEmulator> emulator(new AwsEmulator(std::move(options)));
  emulator->http_ = LoopbackHttpServer::start(
      "aws emulator", [raw = emulator.get()](const Request& request) { return raw->handle(request); });
  if (!emulator->http_) return nullptr;
  return emulator;
}

AwsEmulator::~AwsEmulator() { http_.reset(); }

std::string AwsEmulator::endpoint() const { return "http://127.0.0.1:" + std::to_string(http_->port()); }

AwsEmulator::Response AwsEmulator::handle(const Request& request) {
  if (request.method == "CONNECT") {
    // Acting as a forward proxy that refuses every tunnel: proves a client went through it
    // without any traffic leaving the machine.
    std::lock_guard lock(mu_);
    ++calls_["proxy-connect"];
    return Response{403, "text/plain", {}, "tunnels refused by the qcs test proxy"};
  }
  const std::string path = request.target.substr(0, request.target.find('?'));
  if (path.rfind("/latest/", 0) == 0) return imds(request);
  if (path == options_.ecsPath) return ecs(request);
  if (path == "/qcs-test/bytes") {
    // A large answer, for the client's response cap.
    const std::string query = request.target.substr(request.target.find('?') + 1);
    size_t n = std::stoul(query.substr(query.find('=') + 1));
    return Response{200, "application/octet-stream", {}, std::string(n, 'x')};
  }
  if (path == "/qcs-test/status") {
    const std::string query = request.target.substr(request.target.find('?') + 1);
    std::lock_guard lock(mu_);
    ++calls_["status"];
    return Response{std::stoi(query.substr(query.find('=') + 1)), "text/plain", {}, "status"};
  }
  if (request.method == "POST" && !request.header("X-Amz-Target").empty()) return awsJson(request);
  return Response{404, "text/plain", {}, "not found"};
}

AwsEmulator::Response AwsEmulator::imds(const Request& request) {
  std::lock_guard lock(mu_);
  const auto now = std::chrono::steady_clock::now();
  const std::string path = request.target.substr(0, request.target.find('?'));
  if (path == "/latest/api/token") {
    ++calls_["imds-token"];
    if (request.method != "PUT") return Response{405, "text/plain", {}, ""};
    const std::string ttlText = request.header("X-aws-ec2-metadata-token-ttl-seconds");
    int ttl = 0;
    try {
      ttl = ttlText.empty() ? 0 : std::stoi(ttlText);
    } catch (...) {
      ttl = 0;
    }
    if (ttl < 1 || ttl > 21600) {
      rejections_.push_back("imds-token: X-aws-ec2-metadata-token-ttl-seconds missing or out of 1..21600");
      return Response{400, "text/plain", {}, ""};
    }
    std::string token = "imds-" + randomHex(16);
    imdsTokens_[token] = now + std::chrono::seconds(ttl);
    return Response{200, "text/plain", {{"X-aws-ec2-metadata-token-ttl-seconds", std::to_string(ttl)}}, token};
  }
  if (request.method != "GET") return Response{405, "text/plain", {}, ""};
  const std::string token = request.header("X-aws-ec2-metadata-token");
  auto it = imdsTokens_.find(token);
  const bool credentials = path.rfind("/latest/meta-data/iam/security-credentials/", 0) == 0;
  constexpr const char* kRegionPath = "/latest/meta-data/placement/region";
  constexpr const char* kZonePath = "/latest/meta-data/placement/availability-zone";
  ++calls_[credentials           ? "imds-credentials"
           : path == kRegionPath ? "imds-region"
           : path == kZonePath   ? "imds-zone"
                                 : "imds"];
  if (it == imdsTokens_.end() || it->second <= now) {
    rejections_.push_back("imds: GET " + path + " without a valid session token");
    return Response{401, "text/plain", {}, ""};
  }
  if (path == "/latest/meta-data/iam/security-credentials/") {
    return Response{200, "text/plain", {}, options_.roleName};
  }
  if (path == "/latest/meta-data/iam/security-credentials/" + options_.roleName) {
    return Response{200, "text/plain", {}, issueCredentialsJson(true)};
  }
  if (path == kRegionPath) return Response{200, "text/plain", {}, options_.region};
  if (path == kZonePath) {
    return Response{
        200, "text/plain", {}, options_.availabilityZone.empty() ? options_.region + "a" : options_.availabilityZone};
  }
  return Response{404, "text/html", {}, "Not Found"};
}

AwsEmulator::Response AwsEmulator::ecs(const Request& request) {
  std::lock_guard lock(mu_);
  ++calls_["ecs-credentials"];
  if (!options_.ecsAuthorizationToken.empty() && request.header("Authorization") != options_.ecsAuthorizationToken) {
    rejections_.push_back("ecs-credentials: missing or wrong Authorization header");
    return Response{401, "application/json", {}, R"({"code":"AccessDenied","message":"invalid authorization token"})"};
  }
  return Response{200, "application/json", {}, issueCredentialsJson(false)};
}

std::string AwsEmulator::issueCredentialsJson(bool imdsShape) {
  const auto now = std::chrono::system_clock::now();
  IssuedKey key{randomHex(20), "session-" + randomHex(24), now + options_.credentialLifetime, false};
  const std::string id = "ASIA" + randomHex(8);
  keys_[id] = key;
  json doc{
      {"AccessKeyId", id}, {"SecretAccessKey", key.secret}, {"Token", key.token}, {"Expiration", iso8601(key.expires)}};
  if (imdsShape) {
    doc["Code"] = "Success";
    doc["LastUpdated"] = iso8601(now);
    doc["Type"] = "AWS-HMAC";
  } else {
    doc["RoleArn"] = "arn:aws:iam::" + options_.accountId + ":role/qcs-task-role";
  }
  return doc.dump();
}

AwsEmulator::Response AwsEmulator::awsError(int status, const std::string& code, const std::string& message,
                                            const std::string& operation) {
  rejections_.push_back(operation + ": " + code + ": " + message);
  return Response{status,
                  "application/x-amz-json-1.1",
                  {{"X-Amzn-ErrorType", code}, {"X-Amzn-RequestId", randomHex(16)}},
                  json{{"__type", code}, {"message", message}}.dump()};
}

// Returns "" when the signature holds, else the message; errorCode says which AWS error.
std::string AwsEmulator::verifySignature(const Request& request, const std::string& service, std::string& errorCode) {
  if (const std::string authorization = request.header("Authorization"); !authorization.empty()) {
    authorizations_.push_back(authorization);
  }
  const auto lookup = [this](const std::string& accessKeyId) -> std::optional<SigV4Key> {
    auto key = keys_.find(accessKeyId);
    if (key == keys_.end()) return std::nullopt;
    return SigV4Key{key->second.secret, key->second.token,
                    key->second.expired || std::chrono::system_clock::now() >= key->second.expires};
  };
  auto rejection = verifySigV4(request, lookup, options_.region, service);
  if (!rejection) return {};
  errorCode = rejection->errorCode;
  return rejection->message;
}

AwsEmulator::Response AwsEmulator::awsJson(const Request& request) {
  std::lock_guard lock(mu_);
  const std::string target = request.header("X-Amz-Target");
  std::string operation, service;
  if (target == kSecretsManagerTarget) {
    operation = "GetSecretValue";
    service = "secretsmanager";
  } else if (target == kEcrTarget) {
    operation = "GetAuthorizationToken";
    service = "ecr";
  } else {
    return awsError(400, "UnknownOperationException", "Unknown operation " + target, target);
  }
  ++calls_[operation];
  if (auto& queue = failures_[operation]; !queue.empty()) {
    std::string code = queue.front();
    queue.erase(queue.begin());
    const int status = code == "InternalFailure" || code == "ServiceUnavailable" ? 500 : 400;
    return awsError(status, code, code == "ThrottlingException" ? "Rate exceeded" : "Injected failure", operation);
  }
  if (request.header("Content-Type") != "application/x-amz-json-1.1") {
    return awsError(400, "SerializationException", "Content-Type must be application/x-amz-json-1.1", operation);
  }
  std::string errorCode;
  if (std::string problem = verifySignature(request, service, errorCode); !problem.empty()) {
    // The JSON-protocol services answer signature and token problems with HTTP 400.
    return awsError(400, errorCode, problem, operation);
  }
  if (operation == "GetSecretValue") return getSecretValue(request.body);
  return getAuthorizationToken();
}

AwsEmulator::Response AwsEmulator::getSecretValue(const std::string& body) {
  auto doc = json::parse(body, nullptr, false);
  if (!doc.is_object() || !doc.contains("SecretId") || !doc["SecretId"].is_string()) {
    return awsError(400, "InvalidParameterException", "SecretId is required", "GetSecretValue");
  }
  std::string id = doc["SecretId"];
  const std::string arnPrefix = "arn:aws:secretsmanager:" + options_.region + ":" + options_.accountId + ":secret:";
  if (id.rfind(arnPrefix, 0) == 0) {
    id = id.substr(arnPrefix.size());
    if (auto dash = id.rfind('-'); dash != std::string::npos && id.size() - dash == 7) id.resize(dash);
  }
  auto secret = secrets_.find(id);
  if (secret == secrets_.end()) {
    return awsError(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.",
                    "GetSecretValue");
  }
  if (std::find(denied_.begin(), denied_.end(), id) != denied_.end()) {
    return awsError(400, "AccessDeniedException",
                    "User: arn:aws:sts::" + options_.accountId +
                        ":assumed-role/qcs-node-role/i-0 is not authorized to perform: "
                        "secretsmanager:GetSecretValue on resource: " +
                        id + " because no identity-based policy allows the secretsmanager:GetSecretValue action",
                    "GetSecretValue");
  }
  const std::string stage = doc.value("VersionStage", "AWSCURRENT");
  for (const auto& version : secret->second) {
    if (std::find(version.stages.begin(), version.stages.end(), stage) == version.stages.end()) continue;
    json out{{"ARN", arnPrefix + id + "-AbCdEf"}, {"Name", id},
             {"VersionId", version.versionId},    {"SecretString", version.value},
             {"VersionStages", version.stages},   {"CreatedDate", epochSeconds(std::chrono::system_clock::now())}};
    return Response{200, "application/x-amz-json-1.1", {{"X-Amzn-RequestId", randomHex(16)}}, out.dump()};
  }
  return awsError(400, "ResourceNotFoundException",
                  "Secrets Manager can't find the specified secret value for staging label: " + stage,
                  "GetSecretValue");
}

AwsEmulator::Response AwsEmulator::getAuthorizationToken() {
  const auto expires = std::chrono::system_clock::now() + options_.ecrTokenLifetime;
  json out{{"authorizationData",
            {{{"authorizationToken", base64Encode("AWS:" + options_.ecrPassword)},
              {"expiresAt", epochSeconds(expires)},
              {"proxyEndpoint", "https://" + options_.accountId + ".dkr.ecr." + options_.region + ".amazonaws.com"}}}}};
  return Response{200, "application/x-amz-json-1.1", {{"X-Amzn-RequestId", randomHex(16)}}, out.dump()};
}

void AwsEmulator::putSecret(const std::string& name, const std::string& secretString) {
  std::lock_guard lock(mu_);
  auto& versions = secrets_[name];
  // Secrets Manager keeps one AWSPREVIOUS: the old current.
  for (auto& version : versions) {
    auto& stages = version.stages;
    stages.erase(std::remove(stages.begin(), stages.end(), "AWSPREVIOUS"), stages.end());
    if (std::find(stages.begin(), stages.end(), "AWSCURRENT") != stages.end()) stages = {"AWSPREVIOUS"};
  }
  versions.push_back(SecretVersion{randomHex(16), secretString, {"AWSCURRENT"}});
}

void AwsEmulator::denySecret(const std::string& name) {
  std::lock_guard lock(mu_);
  denied_.push_back(name);
}

void AwsEmulator::failNext(const std::string& operation, const std::string& errorCode, int times) {
  std::lock_guard lock(mu_);
  for (int i = 0; i < times; ++i) failures_[operation].push_back(errorCode);
}

void AwsEmulator::expireIssuedCredentials() {
  std::lock_guard lock(mu_);
  for (auto& [id, key] : keys_) {
    if (!key.token.empty()) key.expired = true;
  }
}

void AwsEmulator::expireImdsTokens() {
  std::lock_guard lock(mu_);
  imdsTokens_.clear();
}

platform::AwsCredentials AwsEmulator::addAccessKey() {
  std::lock_guard lock(mu_);
  const std::string id = "AKIA" + randomHex(8);
  IssuedKey key{randomHex(20), "", std::chrono::system_clock::time_point::max(), false};
  keys_[id] = key;
  return platform::AwsCredentials{id, key.secret, "", std::nullopt, "environment"};
}

int AwsEmulator::calls(const std::string& operation) const {
  std::lock_guard lock(mu_);
  auto it = calls_.find(operation);
  return it == calls_.end() ? 0 : it->second;
}

std::vector<std::string> AwsEmulator::rejections() const {
  std::lock_guard lock(mu_);
  return rejections_;
}

std::vector<std::string> AwsEmulator::receivedAuthorizations() const {
  std::lock_guard lock(mu_);
  return authorizations_;
}

std::string AwsEmulator::randomHex(size_t bytes) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string raw;
  for (size_t i = 0; i < bytes; ++i) raw.push_back(static_cast<char>(rng() & 0xff));
  return platform::hexEncode(raw).substr(0, bytes * 2);
}

}  // namespace qcs::testing

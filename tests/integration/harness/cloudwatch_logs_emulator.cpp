#include "harness/cloudwatch_logs_emulator.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "platform/sigv4.h"

namespace qcs::testing {

using json = nlohmann::json;

namespace {

constexpr const char* kTargetPrefix = "Logs_20140328.";
constexpr const char* kService = "logs";
constexpr const char* kJsonContentType = "application/x-amz-json-1.1";

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

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

// The named member when it is a non-empty string.
std::optional<std::string> stringMember(const json& doc, const char* name) {
  auto it = doc.find(name);
  if (it == doc.end() || !it->is_string() || it->get<std::string>().empty()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

CloudWatchLogsEmulator::CloudWatchLogsEmulator(Options options) : options_(std::move(options)) {}

std::unique_ptr<CloudWatchLogsEmulator> CloudWatchLogsEmulator::start(Options options) {
  std::unique_ptr<CloudWatchLogsEmulator> emulator(new CloudWatchLogsEmulator(std::move(options)));
  emulator->http_ = LoopbackHttpServer::start(
      "cloudwatch logs emulator",
      [raw = emulator.get()](const LoopbackHttpRequest& request) { return raw->handle(request); });
  if (!emulator->http_) return nullptr;
  return emulator;
}

CloudWatchLogsEmulator::~CloudWatchLogsEmulator() { http_.reset(); }

std::string CloudWatchLogsEmulator::endpoint() const { return "http://127.0.0.1:" + std::to_string(http_->port()); }

LoopbackHttpResponse CloudWatchLogsEmulator::handle(const LoopbackHttpRequest& request) {
  std::lock_guard lock(mu_);
  const std::string target = request.header("X-Amz-Target");
  if (request.method != "POST" || target.empty()) {
    ++calls_["not-json-rpc"];
    rejections_.push_back("not-json-rpc: " + request.method + " " + request.target + " without X-Amz-Target");
    return LoopbackHttpResponse{404, "text/plain", {}, "not found"};
  }
  const std::string operation =
      target.rfind(kTargetPrefix, 0) == 0 ? target.substr(std::string(kTargetPrefix).size()) : target;
  ++calls_[operation];
  if (request.target != "/") {
    return awsError(operation, "UnknownOperationException", "The JSON protocol is served at / only");
  }
  if (request.header("Content-Type") != kJsonContentType) {
    return awsError(operation, "SerializationException",
                    std::string("Content-Type must be ") + kJsonContentType + " for the JSON 1.1 protocol");
  }
  // Authentication comes before dispatch, so an unsigned caller learns nothing about operations.
  std::string errorCode;
  if (std::string problem = verifySignature(request, errorCode); !problem.empty()) {
    return awsError(operation, errorCode, problem);
  }
  if (target == std::string(kTargetPrefix) + "CreateLogGroup") return createLogGroup(request.body);
  if (target == std::string(kTargetPrefix) + "CreateLogStream") return createLogStream(request.body);
  if (target == std::string(kTargetPrefix) + "PutLogEvents") return putLogEvents(request.body);
  return awsError(operation, "UnknownOperationException", "Unknown operation " + target);
}

std::string CloudWatchLogsEmulator::verifySignature(const LoopbackHttpRequest& request, std::string& errorCode) const {
  errorCode = "InvalidSignatureException";
  const std::string authorization = request.header("Authorization");
  if (authorization.empty()) {
    errorCode = "MissingAuthenticationTokenException";
    return "Missing Authentication Token";
  }
  auto parsed = platform::parseSigV4Authorization(authorization);
  if (!parsed) {
    errorCode = "IncompleteSignatureException";
    return "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters";
  }
  if (parsed->accessKeyId != options_.accessKeyId || request.hasHeader("X-Amz-Security-Token")) {
    // A long-term key never comes with a session token; AWS rejects either mismatch this way.
    errorCode = "UnrecognizedClientException";
    return "The security token included in the request is invalid.";
  }
  const std::string amzDateText = request.header("X-Amz-Date");
  auto date = parseAmzDate(amzDateText);
  if (!date) {
    errorCode = "IncompleteSignatureException";
    return "X-Amz-Date is missing or not in the basic ISO 8601 format";
  }
  const auto skew = std::chrono::system_clock::now() - *date;
  if (skew > std::chrono::minutes(5) || skew < -std::chrono::minutes(5)) {
    return "Signature expired: " + amzDateText + " is more than 5 minutes away from now";
  }
  if (parsed->date != amzDateText.substr(0, 8)) {
    return "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP";
  }
  if (parsed->region != options_.region) return "Credential should be scoped to a valid region.";
  if (parsed->service != kService) return "Credential should be scoped to correct service: 'logs'.";
  std::vector<std::string> signedNames;
  std::stringstream names(parsed->signedHeaders);
  for (std::string name; std::getline(names, name, ';');) signedNames.push_back(name);
  if (std::find(signedNames.begin(), signedNames.end(), "host") == signedNames.end()) {
    return "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.";
  }
  // Recompute over exactly the headers the client says it signed, as AWS does.
  platform::SigV4Request toCheck;
  toCheck.method = request.method;
  toCheck.path = request.target.substr(0, request.target.find('?'));
  if (auto q = request.target.find('?'); q != std::string::npos) {
    toCheck.query = platform::parseQueryString(request.target.substr(q + 1));
  }
  for (const auto& [name, value] : request.headers) {
    if (std::find(signedNames.begin(), signedNames.end(), lower(name)) != signedNames.end()) {
      toCheck.headers.emplace_back(name, value);
    }
  }
  toCheck.body = request.body;
  const platform::AwsCredentials credentials{options_.accessKeyId, options_.secretAccessKey, "", std::nullopt,
                                             "emulator"};
  auto expected = platform::signSigV4(toCheck, credentials, platform::SigV4Scope{options_.region, kService, *date});
  if (!expected || expected->signature != parsed->signature || expected->signedHeaders != parsed->signedHeaders) {
    return "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
           "Access Key and signing method. Consult the service documentation for details.";
  }
  return {};
}

LoopbackHttpResponse CloudWatchLogsEmulator::createLogGroup(const std::string& body) {
  const json doc = json::parse(body, nullptr, false);
  const auto group = doc.is_object() ? stringMember(doc, "logGroupName") : std::nullopt;
  if (!group) return awsError("CreateLogGroup", "InvalidParameterException", "logGroupName is required");
  if (groups_.count(*group) != 0) {
    return awsError("CreateLogGroup", "ResourceAlreadyExistsException", "The specified log group already exists");
  }
  groups_[*group];
  return ok("");
}

LoopbackHttpResponse CloudWatchLogsEmulator::createLogStream(const std::string& body) {
  const json doc = json::parse(body, nullptr, false);
  const auto group = doc.is_object() ? stringMember(doc, "logGroupName") : std::nullopt;
  const auto stream = doc.is_object() ? stringMember(doc, "logStreamName") : std::nullopt;
  if (!group || !stream) {
    return awsError("CreateLogStream", "InvalidParameterException", "logGroupName and logStreamName are required");
  }
  auto it = groups_.find(*group);
  if (it == groups_.end()) {
    return awsError("CreateLogStream", "ResourceNotFoundException", "The specified log group does not exist.");
  }
  if (it->second.streams.count(*stream) != 0) {
    return awsError("CreateLogStream", "ResourceAlreadyExistsException", "The specified log stream already exists");
  }
  it->second.streams[*stream];
  return ok("");
}

LoopbackHttpResponse CloudWatchLogsEmulator::putLogEvents(const std::string& body) {
  const char* op = "PutLogEvents";
  const json doc = json::parse(body, nullptr, false);
  const auto groupName = doc.is_object() ? stringMember(doc, "logGroupName") : std::nullopt;
  const auto streamName = doc.is_object() ? stringMember(doc, "logStreamName") : std::nullopt;
  if (!groupName || !streamName) {
    return awsError(op, "InvalidParameterException", "logGroupName and logStreamName are required");
  }
  auto eventsIt = doc.find("logEvents");
  if (eventsIt == doc.end() || !eventsIt->is_array() || eventsIt->empty()) {
    return awsError(op, "InvalidParameterException", "logEvents must hold at least one event");
  }
  std::vector<Event> batch;
  for (const auto& event : *eventsIt) {
    if (!event.is_object() || !event.contains("message") || !event["message"].is_string() ||
        !event.contains("timestamp") || !event["timestamp"].is_number_integer()) {
      return awsError(op, "InvalidParameterException",
                      "every log event needs a string message and an integer timestamp");
    }
    batch.push_back(Event{event["timestamp"].get<int64_t>(), event["message"].get<std::string>()});
  }
  if (!std::is_sorted(batch.begin(), batch.end(),
                      [](const Event& a, const Event& b) { return a.timestamp < b.timestamp; })) {
    return awsError(op, "InvalidParameterException",
                    "Log events in a single PutLogEvents request must be in chronological order.");
  }
  auto group = groups_.find(*groupName);
  if (group == groups_.end()) {
    return awsError(op, "ResourceNotFoundException", "The specified log group does not exist.");
  }
  auto streamIt = group->second.streams.find(*streamName);
  if (streamIt == group->second.streams.end()) {
    return awsError(op, "ResourceNotFoundException", "The specified log stream does not exist.");
  }
  Stream& stream = streamIt->second;
  const auto given = stringMember(doc, "sequenceToken");
  const std::string batchBody = eventsIt->dump();
  if (given != stream.expectedToken) {
    const std::string expected = stream.expectedToken.value_or("null");
    if (stream.anyBatch && given == stream.lastBatchToken && batchBody == stream.lastBatchBody) {
      return awsError(op, "DataAlreadyAcceptedException",
                      "The given batch of log events has already been accepted. The next batch can be sent with "
                      "sequenceToken: " +
                          expected,
                      "expectedSequenceToken", expected);
    }
    return awsError(op, "InvalidSequenceTokenException",
                    "The given sequenceToken is invalid. The next expected sequenceToken is: " + expected,
                    stream.expectedToken ? "expectedSequenceToken" : "", expected);
  }
  stream.events.insert(stream.events.end(), batch.begin(), batch.end());
  stream.lastBatchToken = given;
  stream.lastBatchBody = batchBody;
  stream.anyBatch = true;
  stream.expectedToken = newSequenceToken();
  return ok(json{{"nextSequenceToken", *stream.expectedToken}}.dump());
}

LoopbackHttpResponse CloudWatchLogsEmulator::ok(const std::string& body) {
  // CreateLogGroup and CreateLogStream answer an empty body, as the service does.
  return LoopbackHttpResponse{200, kJsonContentType, {{"X-Amzn-RequestId", std::to_string(++requestCounter_)}}, body};
}

LoopbackHttpResponse CloudWatchLogsEmulator::awsError(const std::string& operation, const std::string& code,
                                                      const std::string& message, const std::string& extraJsonField,
                                                      const std::string& extraJsonValue) {
  rejections_.push_back(operation + ": " + code + ": " + message);
  json doc{{"__type", code}, {"message", message}};
  if (!extraJsonField.empty()) doc[extraJsonField] = extraJsonValue;
  // The JSON-protocol services answer client errors, signature problems included, with HTTP 400.
  return LoopbackHttpResponse{400,
                              kJsonContentType,
                              {{"X-Amzn-ErrorType", code}, {"X-Amzn-RequestId", std::to_string(++requestCounter_)}},
                              doc.dump()};
}

std::string CloudWatchLogsEmulator::newSequenceToken() {
  // Decimal like the service's own tokens, and free of spaces: the driver takes the last word of
  // an error message as the token.
  char digits[64];
  std::snprintf(digits, sizeof digits, "4959%052llu", static_cast<unsigned long long>(++tokenCounter_));
  return digits;
}

std::vector<std::string> CloudWatchLogsEmulator::groups() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  for (const auto& [name, group] : groups_) out.push_back(name);
  return out;
}

std::vector<std::string> CloudWatchLogsEmulator::streams(const std::string& group) const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  auto it = groups_.find(group);
  if (it == groups_.end()) return out;
  for (const auto& [name, stream] : it->second.streams) out.push_back(name);
  return out;
}

std::vector<std::string> CloudWatchLogsEmulator::events(const std::string& group, const std::string& stream) const {
  std::lock_guard lock(mu_);
  std::vector<std::string> out;
  auto g = groups_.find(group);
  if (g == groups_.end()) return out;
  auto s = g->second.streams.find(stream);
  if (s == g->second.streams.end()) return out;
  for (const auto& event : s->second.events) out.push_back(event.message);
  return out;
}

int CloudWatchLogsEmulator::calls(const std::string& operation) const {
  std::lock_guard lock(mu_);
  auto it = calls_.find(operation);
  return it == calls_.end() ? 0 : it->second;
}

std::vector<std::string> CloudWatchLogsEmulator::rejections() const {
  std::lock_guard lock(mu_);
  return rejections_;
}

bool CloudWatchLogsEmulator::advanceSequenceToken(const std::string& group, const std::string& stream) {
  std::lock_guard lock(mu_);
  auto g = groups_.find(group);
  if (g == groups_.end()) return false;
  auto s = g->second.streams.find(stream);
  if (s == g->second.streams.end()) return false;
  s->second.expectedToken = newSequenceToken();
  return true;
}

}  // namespace qcs::testing

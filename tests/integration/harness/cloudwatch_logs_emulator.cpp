#include "harness/cloudwatch_logs_emulator.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "harness/sigv4_verifier.h"

namespace qcs::testing {

using json = nlohmann::json;

namespace {

constexpr const char* kTargetPrefix = "Logs_20140328.";
constexpr const char* kService = "logs";
constexpr const char* kJsonContentType = "application/x-amz-json-1.1";

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
  // Its one long-term key: no session token.
  const auto lookup = [this](const std::string& accessKeyId) -> std::optional<SigV4Key> {
    if (accessKeyId != options_.accessKeyId) return std::nullopt;
    return SigV4Key{options_.secretAccessKey, "", false};
  };
  auto rejection = verifySigV4(request, lookup, options_.region, kService);
  if (!rejection) return {};
  errorCode = rejection->errorCode;
  return rejection->message;
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

// A loopback emulator of Amazon CloudWatch Logs on 127.0.0.1:<free port>, for a real dockerd's
// `awslogs` log driver (awslogs-endpoint=http://127.0.0.1:PORT).
//
// Contract: it speaks the service's JSON 1.1 protocol as AWS does — POST /, Content-Type
// application/x-amz-json-1.1, X-Amz-Target Logs_20140328.<Operation> — and checks every call's
// SigV4 signature (service "logs", its region, the one access key it was given) by recomputing it
// with qcs-agent's signer (platform/sigv4.h). Refusals use AWS's error shape, HTTP 400 with
// {"__type": <code>, "message": ...} and X-Amzn-ErrorType, as the JSON services answer them.
// Operations: CreateLogGroup, CreateLogStream and PutLogEvents, with the pre-2023 sequence-token
// rules the Docker 20.10 driver is written for: the first PutLogEvents of a stream carries no
// token, every later one the nextSequenceToken of the previous answer; a wrong token is
// InvalidSequenceTokenException, a replay of the batch just accepted is
// DataAlreadyAcceptedException, both naming the expected token as the message's last word (the
// driver parses it from there). Any other operation is UnknownOperationException. Everything it
// accepts is kept for the test to read; every refusal is recorded with its reason.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "harness/loopback_http_server.h"

namespace qcs::testing {

class CloudWatchLogsEmulator {
 public:
  struct Options {
    std::string region = "us-east-1";
    // The only credentials it accepts (a long-term key: no session token).
    std::string accessKeyId = "AKIAQCSLOGSTEST00001";
    std::string secretAccessKey = "qcs-logs-emulator-secret-0000000000000000";
  };

  // Starts the server on its own thread; nullptr (with the reason on stderr) if it cannot listen.
  static std::unique_ptr<CloudWatchLogsEmulator> start(Options options);
  ~CloudWatchLogsEmulator();
  CloudWatchLogsEmulator(const CloudWatchLogsEmulator&) = delete;
  CloudWatchLogsEmulator& operator=(const CloudWatchLogsEmulator&) = delete;

  // "http://127.0.0.1:PORT"
  std::string endpoint() const;
  const Options& options() const { return options_; }

  // Log group names, sorted.
  std::vector<std::string> groups() const;
  // The group's stream names, sorted; empty when the group does not exist.
  std::vector<std::string> streams(const std::string& group) const;
  // The stream's event messages in the order they were accepted.
  std::vector<std::string> events(const std::string& group, const std::string& stream) const;
  // How many calls of an operation ("CreateLogGroup", "CreateLogStream", "PutLogEvents", or any
  // other name a client sent) were answered, successfully or not.
  int calls(const std::string& operation) const;
  // Why calls were refused ("CreateLogStream: InvalidSignatureException: ..."), oldest first.
  std::vector<std::string> rejections() const;

  // The stream's expected sequence token moves on as if another writer had put a batch, so the
  // next PutLogEvents with the token from the previous answer meets InvalidSequenceTokenException.
  // False when the stream does not exist.
  bool advanceSequenceToken(const std::string& group, const std::string& stream);

 private:
  struct Event {
    int64_t timestamp = 0;
    std::string message;
  };
  struct Stream {
    std::vector<Event> events;
    std::optional<std::string> expectedToken;  // nullopt until the first batch is accepted
    // The last accepted batch and the token it came with, to recognise a replay.
    std::optional<std::string> lastBatchToken;
    std::string lastBatchBody;
    bool anyBatch = false;
  };
  struct Group {
    std::map<std::string, Stream> streams;
  };

  explicit CloudWatchLogsEmulator(Options options);
  LoopbackHttpResponse handle(const LoopbackHttpRequest& request);
  // "" when the signature holds; else the message, with errorCode set to AWS's code for it.
  std::string verifySignature(const LoopbackHttpRequest& request, std::string& errorCode) const;
  LoopbackHttpResponse createLogGroup(const std::string& body);
  LoopbackHttpResponse createLogStream(const std::string& body);
  LoopbackHttpResponse putLogEvents(const std::string& body);
  LoopbackHttpResponse ok(const std::string& body);
  LoopbackHttpResponse awsError(const std::string& operation, const std::string& code, const std::string& message,
                                const std::string& extraJsonField = {}, const std::string& extraJsonValue = {});
  std::string newSequenceToken();

  Options options_;

  mutable std::mutex mu_;
  std::map<std::string, Group> groups_;
  std::map<std::string, int> calls_;
  std::vector<std::string> rejections_;
  uint64_t tokenCounter_ = 0;
  uint64_t requestCounter_ = 0;
  // Last: destroyed first, so the server thread stops before the state it reads goes.
  std::unique_ptr<LoopbackHttpServer> http_;
};

}  // namespace qcs::testing

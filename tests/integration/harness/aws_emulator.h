// A loopback emulator of the AWS endpoints the agent talks to, on 127.0.0.1:<free port>:
//   - IMDSv2: PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds 1..21600 required),
//     GET /latest/meta-data/iam/security-credentials/[<role>], /latest/meta-data/placement/region
//     and /latest/meta-data/placement/availability-zone with X-aws-ec2-metadata-token (missing,
//     unknown or expired token -> 401; an unknown path -> 404);
//   - the ECS container credentials endpoint: GET <ecsPath>, checking Authorization when an
//     authorization token is configured (wrong or missing -> 401);
//   - Secrets Manager (X-Amz-Target: secretsmanager.GetSecretValue) and ECR
//     (AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken): POST / with
//     application/x-amz-json-1.1, checked as AWS checks them — a known access key, the session
//     token that belongs to it, an X-Amz-Date within 5 minutes, the credential scope's date,
//     region and service, and the SigV4 signature recomputed from the signed headers (qcs-agent's
//     signer, itself cross-checked against AWS's @smithy/signature-v4 by the sigv4_smithy test) —
//     and answered with the services' documented response and error shapes
//     ({"__type": ..., "message": ...} with X-Amzn-ErrorType): AccessDeniedException,
//     ResourceNotFoundException, ThrottlingException, ExpiredTokenException,
//     UnrecognizedClientException, InvalidSignatureException.
// Credentials it hands out (IMDS, ECS) are the only ones its services accept, plus keys added with
// addAccessKey(). Every refusal is recorded with its reason for the test to assert on.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "harness/loopback_http_server.h"
#include "platform/sigv4.h"

namespace qcs::testing {

class AwsEmulator {
 public:
  struct Options {
    std::string region = "us-east-1";
    std::string accountId = "123456789012";
    std::string roleName = "qcs-node-role";
    std::chrono::seconds credentialLifetime{6 * 3600};
    std::string ecsPath = "/v2/credentials/qcs-task";
    std::string ecsAuthorizationToken;  // empty: the ECS endpoint needs no Authorization
    std::string ecrPassword = "ecr-password";
    std::chrono::seconds ecrTokenLifetime{12 * 3600};
    std::string availabilityZone;  // empty: <region>a
  };

  // Starts the server on its own thread; nullptr (with the reason on stderr) if it cannot listen.
  static std::unique_ptr<AwsEmulator> start(Options options);
  static std::unique_ptr<AwsEmulator> start() { return start(Options{}); }
  ~AwsEmulator();
  AwsEmulator(const AwsEmulator&) = delete;
  AwsEmulator& operator=(const AwsEmulator&) = delete;

  // "http://127.0.0.1:PORT"
  std::string endpoint() const;
  const Options& options() const { return options_; }

  // A new AWSCURRENT version of the secret (the previous one becomes AWSPREVIOUS).
  void putSecret(const std::string& name, const std::string& secretString);
  // GetSecretValue on this secret answers AccessDeniedException.
  void denySecret(const std::string& name);
  // The next `times` calls of operation ("GetSecretValue", "GetAuthorizationToken") answer with
  // this AWS error code (ThrottlingException, InternalFailure, ...) before anything is checked.
  void failNext(const std::string& operation, const std::string& errorCode, int times = 1);
  // Every credential handed out so far now counts as expired (ExpiredTokenException).
  void expireIssuedCredentials();
  // Every IMDS session token handed out so far is forgotten (the next metadata GET gets 401).
  void expireImdsTokens();
  // A long-term access key the services accept (for environment credentials).
  platform::AwsCredentials addAccessKey();

  // How many times an operation was answered (successfully or not): "GetSecretValue",
  // "GetAuthorizationToken", "imds-token", "imds-credentials", "imds-region", "imds-zone", "ecs-credentials",
  // "proxy-connect".
  int calls(const std::string& operation) const;
  // Why requests were refused ("GetSecretValue: InvalidSignatureException: ..."), oldest first.
  std::vector<std::string> rejections() const;
  // The Authorization header values it received on signed calls (for "no secret in the clear").
  std::vector<std::string> receivedAuthorizations() const;

  using Response = LoopbackHttpResponse;
  using Request = LoopbackHttpRequest;

 private:
  struct IssuedKey {
    std::string secret;
    std::string token;
    std::chrono::system_clock::time_point expires;  // max() for long-term keys
    bool expired = false;
  };
  struct SecretVersion {
    std::string versionId;
    std::string value;
    std::vector<std::string> stages;
  };

  explicit AwsEmulator(Options options);
  Response handle(const Request& request);
  Response imds(const Request& request);
  Response ecs(const Request& request);
  Response awsJson(const Request& request);
  Response getSecretValue(const std::string& body);
  Response getAuthorizationToken();
  std::string issueCredentialsJson(bool imdsShape);
  std::string verifySignature(const Request& request, const std::string& service, std::string& errorCode);
  Response awsError(int status, const std::string& code, const std::string& message, const std::string& operation);
  std::string randomHex(size_t bytes);

  Options options_;

  mutable std::mutex mu_;
  std::map<std::string, IssuedKey> keys_;
  std::map<std::string, std::chrono::steady_clock::time_point> imdsTokens_;
  std::map<std::string, std::vector<SecretVersion>> secrets_;
  std::vector<std::string> denied_;
  std::map<std::string, std::vector<std::string>> failures_;
  std::map<std::string, int> calls_;
  std::vector<std::string> rejections_;
  std::vector<std::string> authorizations_;
  uint64_t counter_ = 0;
  // Last: destroyed first, so the server thread stops before the state it reads goes.
  std::unique_ptr<LoopbackHttpServer> http_;
};

}  // namespace qcs::testing

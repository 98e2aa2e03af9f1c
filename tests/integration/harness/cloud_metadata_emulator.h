// A loopback emulator of the Azure and GCP endpoints behind registry auth `acr` and `gcr`, on
// 127.0.0.1:<free port>, checking what the real services check:
//   - Azure IMDS: GET /metadata/identity/oauth2/token. Requires `Metadata: true`, refuses any
//     X-Forwarded-For, requires the api-version and resource query variables, and a client_id (when
//     given) that names one of its identities; errors are IMDS's {"error", "error_description"}
//     with HTTP 400. Answers the documented shape (string-valued expires_in/expires_on, ...).
//   - Azure IMDS: GET /metadata/instance/compute. Requires `Metadata: true`, refuses any
//     X-Forwarded-For, and requires an api-version it knows; errors are the instance endpoint's
//     {"error": "Bad request. ..."} with HTTP 400 ("newest-versions" listed when the version is
//     missing or unknown). Answers the compute document (location, zone, vmId, ...).
//   - ACR: POST /oauth2/exchange, form-encoded grant_type=access_token, service=<its registry>,
//     access_token=<a token it issued that has not expired>; errors are the registry's
//     {"errors": [{"code", "message"}]} (400 malformed, 401 unknown/expired token or no AcrPull).
//     Answers {"refresh_token": <JWT whose exp is the refresh-token lifetime away>}.
//   - GCP metadata: GET /computeMetadata/v1/instance/service-accounts/default/token. Requires
//     `Metadata-Flavor: Google`, refuses X-Forwarded-For (403), answers with the Metadata-Flavor
//     response header and {"access_token", "expires_in", "token_type": "Bearer"}; 404 when the node
//     has no service account. GET /computeMetadata/v1/instance/zone, with the same checks,
//     answers "projects/<number>/zones/<zone>" as text/plain with the Metadata-Flavor header.
// Every refusal is recorded with its reason. Tokens it issued can be checked as a registry would
// (acceptsGcpToken, acceptsAcrRefreshToken), lifetimes included.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "harness/loopback_http_server.h"

namespace qcs::testing {

class CloudMetadataEmulator {
 public:
  struct Options {
    std::string acrService;  // the registry the exchange serves; empty: 127.0.0.1:<its own port>
    std::string systemIdentityClientId = "5e0f7b0c-0000-4000-8000-000000000001";
    std::vector<std::string> userAssignedClientIds;
    std::chrono::seconds aadTokenLifetime{24 * 3600};
    std::chrono::seconds refreshTokenLifetime{3 * 3600};
    std::chrono::seconds gcpTokenLifetime{3599};
    bool gcpServiceAccount = true;  // false: the node has none (404)
    std::string azureLocation = "westeurope";
    std::string azureZone = "1";  // "" for a VM outside availability zones
    std::string gcpProjectNumber = "123456789012";
    std::string gcpZone = "us-central1-a";
    // When set, every ACR refresh token / GCP access token issued is this value (still recorded
    // with its lifetime): a registry with an htpasswd file can then accept it. htpasswd's bcrypt
    // reads at most 72 bytes, so keep them shorter than a real token.
    std::string fixedAcrRefreshToken;
    std::string fixedGcpAccessToken;
  };

  // Starts the server on its own thread; nullptr (with the reason on stderr) if it cannot listen.
  static std::unique_ptr<CloudMetadataEmulator> start(Options options);
  static std::unique_ptr<CloudMetadataEmulator> start() { return start(Options{}); }
  ~CloudMetadataEmulator();
  CloudMetadataEmulator(const CloudMetadataEmulator&) = delete;
  CloudMetadataEmulator& operator=(const CloudMetadataEmulator&) = delete;

  std::string endpoint() const;     // "http://127.0.0.1:PORT"
  std::string hostAndPort() const;  // "127.0.0.1:PORT" (GCE_METADATA_HOST's form)
  std::string acrService() const;   // the registry name the exchange accepts

  // The identity loses (or regains) AcrPull: the exchange answers 401.
  void setAcrPull(bool granted);
  // Every AAD token issued so far counts as expired.
  void expireAadTokens();

  // Whether a registry would accept these: issued here and not past their lifetime.
  bool acceptsGcpToken(const std::string& token) const;
  bool acceptsAcrRefreshToken(const std::string& token) const;

  // How many requests each endpoint got: "azure-imds", "azure-compute", "acr-exchange", "gcp-token",
  // "gcp-zone".
  int calls(const std::string& endpoint) const;
  // Why requests were refused ("azure-imds: Required metadata header not specified"), oldest first.
  std::vector<std::string> rejections() const;
  // The client_id of each IMDS request ("" when absent), oldest first.
  std::vector<std::string> imdsClientIds() const;

  using Response = LoopbackHttpResponse;
  using Request = LoopbackHttpRequest;

 private:
  explicit CloudMetadataEmulator(Options options);
  Response handle(const Request& request);
  Response azureImds(const Request& request);
  Response acrExchange(const Request& request);
  Response gcpToken(const Request& request);
  Response azureCompute(const Request& request);
  Response gcpZone(const Request& request);
  Response refuse(const std::string& endpoint, Response response, const std::string& reason);
  std::string randomHex(size_t bytes);

  Options options_;

  mutable std::mutex mu_;
  bool acrPull_ = true;
  std::map<std::string, std::chrono::system_clock::time_point> aadTokens_;
  std::map<std::string, std::chrono::system_clock::time_point> refreshTokens_;
  std::map<std::string, std::chrono::system_clock::time_point> gcpTokens_;
  std::map<std::string, int> calls_;
  std::vector<std::string> rejections_;
  std::vector<std::string> clientIds_;
  // Last: destroyed first, so the server thread stops before the state it reads goes.
  std::unique_ptr<LoopbackHttpServer> http_;
};

}  // namespace qcs::testing

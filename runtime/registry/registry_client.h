// A client for the OCI distribution / Docker registry v2 API: resolves an image reference to the
// manifest for this node's platform and streams blobs through a digest check. The containerd
// runtime uses it because containerd 1.6 has no server-side pull without CRI.
//
// Contract:
// - One client talks to one registry (options.registry, e.g. "127.0.0.1:5000" or "docker.io").
//   https always, with TLS verification always on (optionally against caBundlePath); plain http
//   only for loopback registries (localhost, 127.0.0.0/8, ::1), as Docker treats those as insecure.
// - Auth: anonymous, Basic, or the WWW-Authenticate challenge flow (Bearer tokens fetched from the
//   realm with Basic credentials or the identity token as refresh_token, cached per scope until
//   expires_in). A request is retried at most once after a challenge.
// - Everything the registry sends is verified: manifests against Docker-Content-Digest, the pinned
//   digest and the index descriptor; blobs against their descriptor's digest and size.
// - Errors: kUnauthenticated with the registry's own message for wrong or missing credentials,
//   kNotFound for unknown repositories, tags and blobs, kProtocol for digest or format mismatches,
//   kUnavailable / kTimeout for transport failures. Credentials never appear in an error.
// - Thread-safe: each request has its own curl handle; the token cache is locked.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "runtime/container_runtime.h"
#include "runtime/image_reference.h"

namespace qcs::runtime::registry {

inline constexpr std::string_view kDockerManifestV2 = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";

// An OCI platform: os "linux", architecture in Go's names ("amd64", "arm64", "arm"), variant ("v8").
struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;
  std::string toString() const;  // "linux/arm64/v8"
};

// The platform for a `uname -m` machine name ("x86_64" -> linux/amd64, "aarch64" -> linux/arm64/v8).
Platform platformForMachine(std::string_view machine);
// This node's platform, from uname(2).
Platform hostPlatform();

struct Descriptor {
  std::string mediaType;
  std::string digest;  // "sha256:<64 hex>"
  int64_t size = 0;
  std::optional<Platform> platform;  // index entries only
};

struct ResolvedManifest {
  std::string digest;     // of the platform manifest (not of the index)
  std::string mediaType;  // kDockerManifestV2 or kOciManifest
  std::string raw;        // the manifest's bytes, as verified
  Descriptor config;
  std::vector<Descriptor> layers;
  std::string indexDigest;  // the index / manifest list resolved through, or ""
};

// A manifest or an index, parsed. Exposed for tests and fuzzers.
struct ParsedManifest {
  std::string mediaType;
  bool isIndex = false;
  Descriptor config;                  // manifests
  std::vector<Descriptor> layers;     // manifests
  std::vector<Descriptor> manifests;  // indexes
};
// contentType (the Content-Type header, parameters allowed) wins over the body's mediaType field.
Result<ParsedManifest> parseManifest(std::string_view body, std::string_view contentType);
// The index entry for platform: exact variant first, then an entry without variant, then (arm) an
// older compatible variant. kNotFound listing the platforms on offer.
Result<Descriptor> selectPlatform(const std::vector<Descriptor>& manifests, const Platform& platform);
// kProtocol unless data's sha256 equals digest ("sha256:..."); what names the thing checked.
Status verifyDigest(std::string_view data, std::string_view digest, std::string_view what);
// True for "sha256:" followed by 64 lower-case hex digits.
bool isSha256Digest(std::string_view digest);

// One challenge of a WWW-Authenticate header. Scheme lower-cased; parameter names lower-cased.
struct AuthChallenge {
  std::string scheme;  // "bearer", "basic"
  std::map<std::string, std::string> params;
  std::string param(const std::string& name) const;
};
// Parses every challenge in the header value (quoted strings may hold commas and escapes).
Result<std::vector<AuthChallenge>> parseAuthChallenges(std::string_view header);

struct RegistryClientOptions {
  std::string registry;  // as in ImageReference::registry: "docker.io", "127.0.0.1:5000"
  std::optional<RegistryCredentials> credentials;
  std::chrono::milliseconds connectTimeout{std::chrono::seconds(10)};
  std::chrono::milliseconds requestTimeout{std::chrono::seconds(60)};  // manifests and tokens
  std::chrono::milliseconds blobTimeout{0};                            // 0 = no total limit for a blob
  std::chrono::seconds blobStallTimeout{60};  // a blob fails when no byte arrives for this long
  std::string caBundlePath;                   // "" = the system's CA store
  // Time source for token expiry (tests inject simulated time).
  std::function<std::chrono::steady_clock::time_point()> clock;
};

// Receives a blob's bytes as they arrive (already counted into the digest). An error aborts.
using BlobSink = std::function<Status(std::string_view chunk)>;

class RegistryClient {
 public:
  explicit RegistryClient(RegistryClientOptions options);

  // The manifest for ref (tag or digest) and platform, verified. ref.registry must be this client's.
  Result<ResolvedManifest> resolve(const ImageReference& ref, const Platform& platform = hostPlatform());

  // Streams the blob through sink, following redirects, then checks digest and size.
  Status fetchBlob(const std::string& repository, const Descriptor& blob, const BlobSink& sink);

  // "http://127.0.0.1:5000" or "https://registry-1.docker.io".
  const std::string& baseUrl() const { return baseUrl_; }

  struct Response {
    long status = 0;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string body;                            // non-2xx bodies always; 2xx when no sink
    std::string header(const std::string& name) const;
  };

 private:
  struct CachedToken {
    std::string token;
    std::chrono::steady_clock::time_point expires;
  };
  struct Request {
    std::string method = "GET";
    std::string url;
    std::vector<std::string> headers;
    std::string body;
    bool blob = false;  // streaming: follow redirects, blob timeouts
  };

  // Sends request with the auth for scope, answering one challenge. A 2xx body goes to sink if set.
  Result<Response> authorizedSend(Request request, const std::string& scope, const BlobSink& sink);
  Result<Response> send(const Request& request, const BlobSink& sink);
  Result<std::string> fetchToken(const AuthChallenge& challenge, const std::string& scope);
  struct FetchedManifest {
    std::string digest;
    std::string raw;
    ParsedManifest parsed;
  };
  // GETs a manifest, verifies it against Docker-Content-Digest and (if one) the expected digest.
  Result<FetchedManifest> fetchManifest(const std::string& repository, const std::string& reference,
                                        const std::string& expectedDigest);
  Error statusError(const Response& response, const std::string& what) const;
  std::chrono::steady_clock::time_point now() const;

  RegistryClientOptions options_;
  std::string baseUrl_;
  bool loopback_ = false;
  std::mutex mutex_;
  std::map<std::string, CachedToken> tokens_;  // by scope
  bool basicChallenged_ = false;               // the registry asked for Basic auth
};

}  // namespace qcs::runtime::registry

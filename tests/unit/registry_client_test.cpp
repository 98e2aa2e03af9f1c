// RegistryClient logic: WWW-Authenticate parsing, manifest/index parsing, platform selection,
// digest checks, and the auth flows against a small blocking HTTP server on 127.0.0.1:0 that
// plays a registry with a Bearer token service (or Basic auth). Token expiry runs on simulated time.
#include "runtime/registry/registry_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/encoding.h"

namespace qcs::runtime::registry {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

// ---- Parsing ------------------------------------------------------------------------------------

TEST(RegistryAuthChallengeTest, BearerWithQuotedParamsHoldingCommas) {
  auto parsed = parseAuthChallenges(
      R"(Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push")");
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  ASSERT_EQ(parsed->size(), 1u);
  const auto& challenge = (*parsed)[0];
  EXPECT_EQ(challenge.scheme, "bearer");
  EXPECT_EQ(challenge.param("realm"), "https://auth.example.com/token");
  EXPECT_EQ(challenge.param("service"), "registry.example.com");
  EXPECT_EQ(challenge.param("scope"), "repository:a/b:pull,push");
}

TEST(RegistryAuthChallengeTest, BasicAndEscapesAndSeveralChallenges) {
  auto basic = parseAuthChallenges(R"(Basic realm="Registry \"Realm\"")");
  ASSERT_TRUE(basic.ok()) << basic.message();
  ASSERT_EQ(basic->size(), 1u);
  EXPECT_EQ((*basic)[0].scheme, "basic");
  EXPECT_EQ((*basic)[0].param("realm"), "Registry \"Realm\"");

  auto two = parseAuthChallenges(R"(Basic realm="x", BEARER Realm="https://t/token", service=reg , scope="s")");
  ASSERT_TRUE(two.ok()) << two.message();
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].scheme, "bearer");
  EXPECT_EQ((*two)[1].param("realm"), "https://t/token");
  EXPECT_EQ((*two)[1].param("service"), "reg");
  EXPECT_EQ((*two)[1].param("scope"), "s");

  EXPECT_FALSE(parseAuthChallenges(R"(Bearer realm="unterminated)").ok());
  EXPECT_FALSE(parseAuthChallenges("").ok());
}

std::string digestOf(const std::string& content) { return "sha256:" + sha256Hex(content); }

json descriptorJson(const std::string& mediaType, const std::string& content) {
  return {{"mediaType", mediaType}, {"digest", digestOf(content)}, {"size", content.size()}};
}

std::string imageManifest(const std::string& mediaType, const std::string& config,
                          const std::vector<std::string>& layers) {
  json manifest = {{"schemaVersion", 2}, {"mediaType", mediaType}};
  manifest["config"] = descriptorJson("application/vnd.docker.container.image.v1+json", config);
  manifest["layers"] = json::array();
  for (const auto& layer : layers) {
    manifest["layers"].push_back(descriptorJson("application/vnd.docker.image.rootfs.diff.tar.gzip", layer));
  }
  return manifest.dump();
}

json indexEntry(const std::string& manifest, const std::string& arch, const std::string& variant) {
  json entry = descriptorJson(std::string(kDockerManifestV2), manifest);
  entry["platform"] = {{"os", "linux"}, {"architecture", arch}};
  if (!variant.empty()) entry["platform"]["variant"] = variant;
  return entry;
}

TEST(RegistryManifestParsingTest, DockerAndOciManifestsAndIndexes) {
  const std::string docker = imageManifest(std::string(kDockerManifestV2), "cfg", {"l1", "l2"});
  auto parsed = parseManifest(docker, "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8");
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_FALSE(parsed->isIndex);
  EXPECT_EQ(parsed->mediaType, kDockerManifestV2);
  EXPECT_EQ(parsed->config.digest, digestOf("cfg"));
  EXPECT_EQ(parsed->config.size, 3);
  ASSERT_EQ(parsed->layers.size(), 2u);
  EXPECT_EQ(parsed->layers[1].digest, digestOf("l2"));
  EXPECT_EQ(parsed->layers[1].mediaType, "application/vnd.docker.image.rootfs.diff.tar.gzip");

  // An OCI manifest without mediaType in the body is told by the Content-Type.
  json oci = json::parse(imageManifest(std::string(kOciManifest), "c", {"l"}));
  oci.erase("mediaType");
  auto ociParsed = parseManifest(oci.dump(), kOciManifest);
  ASSERT_TRUE(ociParsed.ok()) << ociParsed.message();
  EXPECT_EQ(ociParsed->mediaType, kOciManifest);

  // ... and with a generic Content-Type, by the body's mediaType.
  json index = {{"schemaVersion", 2}, {"mediaType", kOciIndex}};
  index["manifests"] = json::array({indexEntry(docker, "amd64", ""), indexEntry(docker, "arm64", "v8")});
  auto indexParsed = parseManifest(index.dump(), "application/json");
  ASSERT_TRUE(indexParsed.ok()) << indexParsed.message();
  EXPECT_TRUE(indexParsed->isIndex);
  ASSERT_EQ(indexParsed->manifests.size(), 2u);
  ASSERT_TRUE(indexParsed->manifests[1].platform.has_value());
  EXPECT_EQ(indexParsed->manifests[1].platform->toString(), "linux/arm64/v8");
}

TEST(RegistryManifestParsingTest, AFieldOfTheWrongTypeIsAnAnswerNotACrash) {
  // Found by the manifest fuzzer: "mediaType" twice, the last an array, threw out of the parser.
  const std::string twice = R"({"schemaVersion": 2, "mediaType": "x", "mediaType": [1], "manifests": []})";
  auto parsed = parseManifest(twice, "application/json");
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_TRUE(parsed->isIndex) << "no usable mediaType: told by the content";
  auto layers = parseManifest(R"({"schemaVersion": 2, "mediaType": {"a": 1}, "config": 7, "layers": []})", "");
  EXPECT_FALSE(layers.ok());
}

TEST(RegistryManifestParsingTest, RejectsWhatItCannotUse) {
  auto schema1 =
      parseManifest(R"({"schemaVersion":1,"name":"x"})", "application/vnd.docker.distribution.manifest.v1+prettyjws");
  EXPECT_EQ(schema1.code(), ErrorCode::kProtocol);
  auto unknownType = parseManifest(imageManifest("application/x-unknown", "c", {}), "application/x-unknown");
  ASSERT_FALSE(unknownType.ok());
  EXPECT_NE(unknownType.message().find("application/x-unknown"), std::string::npos);
  auto badDigest = parseManifest(
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"md5:x","size":1},"layers":[]})",
      "");
  ASSERT_FALSE(badDigest.ok());
  EXPECT_NE(badDigest.message().find("md5:x"), std::string::npos);
  EXPECT_EQ(parseManifest("not json", kOciManifest).code(), ErrorCode::kProtocol);
}

TEST(RegistryPlatformTest, MachineNamesMapToGoArchitectures) {
  EXPECT_EQ(platformForMachine("x86_64").toString(), "linux/amd64");
  EXPECT_EQ(platformForMachine("aarch64").toString(), "linux/arm64/v8");
  EXPECT_EQ(platformForMachine("armv7l").toString(), "linux/arm/v7");
  EXPECT_EQ(platformForMachine("i686").toString(), "linux/386");
  EXPECT_EQ(hostPlatform().os, "linux");
}

TEST(RegistryPlatformTest, SelectsTheNodesEntry) {
  std::vector<Descriptor> entries;
  const auto add = [&](const std::string& digestSeed, const std::string& os, const std::string& arch,
                       const std::string& variant) {
    entries.push_back(Descriptor{std::string(kOciManifest), digestOf(digestSeed), 1, Platform{os, arch, variant}});
  };
  add("attestation", "unknown", "unknown", "");
  add("amd64", "linux", "amd64", "");
  add("arm64", "linux", "arm64", "v8");
  add("armv6", "linux", "arm", "v6");
  add("windows", "windows", "amd64", "");

  auto amd64 = selectPlatform(entries, Platform{"linux", "amd64", ""});
  ASSERT_TRUE(amd64.ok()) << amd64.message();
  EXPECT_EQ(amd64->digest, digestOf("amd64"));
  auto arm64 = selectPlatform(entries, Platform{"linux", "arm64", "v8"});
  ASSERT_TRUE(arm64.ok()) << arm64.message();
  EXPECT_EQ(arm64->digest, digestOf("arm64"));
  // A v7 CPU runs the v6 image when there is no v7 one.
  auto armv7 = selectPlatform(entries, Platform{"linux", "arm", "v7"});
  ASSERT_TRUE(armv7.ok()) << armv7.message();
  EXPECT_EQ(armv7->digest, digestOf("armv6"));

  auto none = selectPlatform(entries, Platform{"linux", "s390x", ""});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.code(), ErrorCode::kNotFound);
  EXPECT_NE(none.message().find("linux/arm64/v8"), std::string::npos) << none.message();

  // An arm64 entry without variant serves a v8 node.
  std::vector<Descriptor> plain{Descriptor{"", digestOf("plain"), 1, Platform{"linux", "arm64", ""}}};
  EXPECT_TRUE(selectPlatform(plain, Platform{"linux", "arm64", "v8"}).ok());
}

TEST(RegistryDigestTest, VerificationFailsOnMismatch) {
  EXPECT_TRUE(verifyDigest("hello", digestOf("hello"), "blob").ok());
  auto mismatch = verifyDigest("hello", digestOf("world"), "blob");
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.code(), ErrorCode::kProtocol);
  EXPECT_NE(mismatch.message().find("digest mismatch"), std::string::npos);
  EXPECT_EQ(verifyDigest("hello", "sha512:abc", "blob").code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(isSha256Digest("sha256:ABC"));
}

RegistryClientOptions optionsFor(const std::string& registry) {
  RegistryClientOptions options;
  options.registry = registry;
  return options;
}

TEST(RegistryClientTest, PlainHttpOnlyForLoopback) {
  EXPECT_EQ(RegistryClient(optionsFor("127.0.0.1:5000")).baseUrl(), "http://127.0.0.1:5000");
  EXPECT_EQ(RegistryClient(optionsFor("localhost:5000")).baseUrl(), "http://localhost:5000");
  EXPECT_EQ(RegistryClient(optionsFor("registry.example.com")).baseUrl(), "https://registry.example.com");
  EXPECT_EQ(RegistryClient(optionsFor("127.example.com")).baseUrl(), "https://127.example.com");
  EXPECT_EQ(RegistryClient(optionsFor("docker.io")).baseUrl(), "https://registry-1.docker.io");
}

// ---- A loopback registry ------------------------------------------------------------------------

struct HttpRequestSeen {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-cased names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};
struct HttpReply {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

// Blocking HTTP/1.1 server on 127.0.0.1:0: one request per connection, answered by handler.
class LoopbackServer {
 public:
  explicit LoopbackServer(std::function<HttpReply(const HttpRequestSeen&)> handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 || ::listen(fd_, 16) != 0) {
      ADD_FAILURE() << "cannot listen on 127.0.0.1:0";
      return;
    }
    socklen_t length = sizeof(address);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~LoopbackServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    ::close(fd_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void serve() {
    while (!stop_) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 20) <= 0) continue;
      const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      handle(client);
      ::close(client);
    }
  }
  void handle(int client) {
    std::string data;
    char buffer[8192];
    size_t headerEnd = std::string::npos;
    while ((headerEnd = data.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::recv(client, buffer, sizeof(buffer), 0);
      if (n <= 0) return;
      data.append(buffer, size_t(n));
    }
    HttpRequestSeen request;
    const std::string head = data.substr(0, headerEnd);
    size_t lineEnd = head.find("\r\n");
    const std::string requestLine = head.substr(0, lineEnd);
    const auto space1 = requestLine.find(' ');
    const auto space2 = requestLine.find(' ', space1 + 1);
    request.method = requestLine.substr(0, space1);
    request.target = requestLine.substr(space1 + 1, space2 - space1 - 1);
    while (lineEnd != std::string::npos && lineEnd < head.size()) {
      const size_t next = head.find("\r\n", lineEnd + 2);
      const std::string line =
          head.substr(lineEnd + 2, next == std::string::npos ? std::string::npos : next - lineEnd - 2);
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
        request.headers[name] = std::string(trim(line.substr(colon + 1)));
      }
      lineEnd = next;
    }
    request.body = data.substr(headerEnd + 4);
    const size_t contentLength =
        request.headers.count("content-length") ? std::stoul(request.headers["content-length"]) : 0;
    while (request.body.size() < contentLength) {
      const ssize_t n = ::recv(client, buffer, sizeof(buffer), 0);
      if (n <= 0) return;
      request.body.append(buffer, size_t(n));
    }
    const HttpReply reply = handler_(request);
    std::string out = "HTTP/1.1 " + std::to_string(reply.status) +
                      " X\r\nConnection: close\r\nContent-Length: " + std::to_string(reply.body.size()) + "\r\n";
    for (const auto& [name, value] : reply.headers) out += name + ": " + value + "\r\n";
    out += "\r\n" + reply.body;
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(client, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += size_t(n);
    }
  }

  std::function<HttpReply(const HttpRequestSeen&)> handler_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string errorsJson(const std::string& code, const std::string& message) {
  return json{{"errors", json::array({{{"code", code}, {"message", message}}})}}.dump();
}

// A registry for repository team/app: tag 1.0 is a manifest list (amd64, arm64/v8); blobs as below.
class FakeRegistry {
 public:
  enum class AuthMode { kBearer, kBasic };

  explicit FakeRegistry(AuthMode mode) : mode_(mode), server_([this](const HttpRequestSeen& r) { return serve(r); }) {
    amd64Manifest_ = imageManifest(std::string(kDockerManifestV2), config_, {layer_});
    arm64Manifest_ = imageManifest(std::string(kDockerManifestV2), "arm64-config", {"arm64-layer"});
    json index = {{"schemaVersion", 2}, {"mediaType", kDockerManifestList}};
    index["manifests"] =
        json::array({indexEntry(amd64Manifest_, "amd64", ""), indexEntry(arm64Manifest_, "arm64", "v8")});
    index_ = index.dump();
  }

  std::string address() const { return server_.address(); }
  int tokenRequests() const {
    std::lock_guard lock(mutex_);
    return tokenRequests_;
  }
  std::string lastTokenQuery() const {
    std::lock_guard lock(mutex_);
    return lastTokenQuery_;
  }

  const std::string config_ = R"({"architecture":"amd64","os":"linux"})";
  const std::string layer_ = std::string(100000, 'L') + "end-of-layer";
  std::string amd64Manifest_;
  std::string arm64Manifest_;
  std::string index_;
  // A "blob" whose content does not match the digest it is served under.
  const std::string forgedDigest_ = digestOf("what the descriptor promised");
  const std::string forgedContent_ = "what the server sent instead!";
  const std::string pinnedButWrong_ = digestOf("a digest nobody has");

 private:
  static HttpReply manifestReply(const std::string& body, const std::string& mediaType, const std::string& digest) {
    return HttpReply{200, {{"Content-Type", mediaType}, {"Docker-Content-Digest", digest}}, body};
  }

  HttpReply serve(const HttpRequestSeen& request) {
    std::lock_guard lock(mutex_);
    const std::string basic = "Basic " + base64Encode("alice:secret");
    if (request.target.rfind("/token", 0) == 0) {
      ++tokenRequests_;
      lastTokenQuery_ = request.target;
      const bool refresh =
          request.method == "POST" && request.body.find("refresh_token=id-token-1") != std::string::npos;
      if (request.header("authorization") != basic && !refresh) {
        return HttpReply{401,
                         {{"Content-Type", "application/json"}},
                         errorsJson("UNAUTHORIZED", "bad credentials for the fake registry")};
      }
      const std::string token = "token-" + std::to_string(tokenRequests_);
      validTokens_.insert(token);
      json answer = {{"expires_in", 60}};
      answer[refresh ? "access_token" : "token"] = token;
      return HttpReply{200, {{"Content-Type", "application/json"}}, answer.dump()};
    }
    if (request.target.rfind("/storage/", 0) == 0) {
      return HttpReply{200, {}, layer_};
    }
    const std::string authorization = request.header("authorization");
    const bool authorized = mode_ == AuthMode::kBasic ? authorization == basic
                                                      : authorization.rfind("Bearer ", 0) == 0 &&
                                                            validTokens_.count(authorization.substr(7)) == 1;
    if (!authorized) {
      const std::string challenge = mode_ == AuthMode::kBasic
                                        ? R"(Basic realm="fake")"
                                        : R"(Bearer realm="http://)" + server_.address() +
                                              R"(/token",service="fake-registry",scope="repository:team/app:pull")";
      return HttpReply{401,
                       {{"WWW-Authenticate", challenge}, {"Content-Type", "application/json"}},
                       errorsJson("UNAUTHORIZED", "authentication required")};
    }
    const std::string manifests = "/v2/team/app/manifests/";
    const std::string blobs = "/v2/team/app/blobs/";
    if (request.target == manifests + "1.0")
      return manifestReply(index_, std::string(kDockerManifestList), digestOf(index_));
    if (request.target == manifests + digestOf(amd64Manifest_) || request.target == manifests + "single") {
      return manifestReply(amd64Manifest_, std::string(kDockerManifestV2), digestOf(amd64Manifest_));
    }
    if (request.target == manifests + digestOf(arm64Manifest_)) {
      return manifestReply(arm64Manifest_, std::string(kDockerManifestV2), digestOf(arm64Manifest_));
    }
    if (request.target == manifests + "lying") {
      return manifestReply(amd64Manifest_, std::string(kDockerManifestV2), digestOf("something else"));
    }
    if (request.target == manifests + pinnedButWrong_) {
      return manifestReply(amd64Manifest_, std::string(kDockerManifestV2), pinnedButWrong_);
    }
    if (request.target == blobs + digestOf(layer_)) {
      return HttpReply{307, {{"Location", "/storage/" + digestOf(layer_)}}, ""};
    }
    if (request.target == blobs + digestOf(config_)) return HttpReply{200, {}, config_};
    if (request.target == blobs + forgedDigest_) return HttpReply{200, {}, forgedContent_};
    if (request.target.rfind(manifests, 0) == 0) {
      return HttpReply{404, {{"Content-Type", "application/json"}}, errorsJson("MANIFEST_UNKNOWN", "manifest unknown")};
    }
    return HttpReply{
        404, {{"Content-Type", "application/json"}}, errorsJson("BLOB_UNKNOWN", "blob unknown to registry")};
  }

  AuthMode mode_;
  mutable std::mutex mutex_;
  int tokenRequests_ = 0;
  std::string lastTokenQuery_;
  std::set<std::string> validTokens_;
  LoopbackServer server_;  // last: stops before the state it serves from goes
};

class RegistryClientServerTest : public ::testing::Test {
 protected:
  RegistryClientOptions options(FakeRegistry& registry, const std::string& password = "secret") {
    RegistryClientOptions o;
    o.registry = registry.address();
    o.credentials = RegistryCredentials{"alice", password, "", registry.address()};
    o.connectTimeout = 5s;
    o.requestTimeout = 10s;
    o.blobTimeout = 10s;
    o.clock = [this] { return now_; };
    return o;
  }
  ImageReference ref(FakeRegistry& registry, const std::string& tag, const std::string& digest = "") {
    return ImageReference{registry.address(), "team/app", tag, digest};
  }

  std::chrono::steady_clock::time_point now_{std::chrono::seconds(1000)};
};

TEST_F(RegistryClientServerTest, BearerFlowResolvesTheManifestListForThePlatform) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  RegistryClient client(options(registry));

  auto arm64 = client.resolve(ref(registry, "1.0"), Platform{"linux", "arm64", "v8"});
  ASSERT_TRUE(arm64.ok()) << arm64.message();
  EXPECT_EQ(arm64->digest, digestOf(registry.arm64Manifest_));
  EXPECT_EQ(arm64->indexDigest, digestOf(registry.index_));
  EXPECT_EQ(arm64->mediaType, kDockerManifestV2);
  EXPECT_EQ(arm64->raw, registry.arm64Manifest_);
  EXPECT_EQ(registry.tokenRequests(), 1);
  EXPECT_NE(registry.lastTokenQuery().find("service=fake-registry"), std::string::npos);
  EXPECT_NE(registry.lastTokenQuery().find("scope=repository%3Ateam%2Fapp%3Apull"), std::string::npos);

  auto amd64 = client.resolve(ref(registry, "1.0"), Platform{"linux", "amd64", ""});
  ASSERT_TRUE(amd64.ok()) << amd64.message();
  EXPECT_EQ(amd64->digest, digestOf(registry.amd64Manifest_));
  EXPECT_EQ(amd64->config.digest, digestOf(registry.config_));
  ASSERT_EQ(amd64->layers.size(), 1u);
  EXPECT_EQ(amd64->layers[0].size, int64_t(registry.layer_.size()));
  EXPECT_EQ(registry.tokenRequests(), 1) << "the cached token is reused within expires_in";

  // Past expires_in the token is not used again: a new one is fetched.
  now_ += 61s;
  ASSERT_TRUE(client.resolve(ref(registry, "1.0"), Platform{"linux", "amd64", ""}).ok());
  EXPECT_EQ(registry.tokenRequests(), 2);

  auto none = client.resolve(ref(registry, "1.0"), Platform{"linux", "s390x", ""});
  EXPECT_EQ(none.code(), ErrorCode::kNotFound);
}

TEST_F(RegistryClientServerTest, IdentityTokenIsSentAsRefreshToken) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  auto o = options(registry);
  o.credentials = RegistryCredentials{"", "", "id-token-1", registry.address()};
  RegistryClient client(std::move(o));
  auto resolved = client.resolve(ref(registry, "single"));
  ASSERT_TRUE(resolved.ok()) << resolved.message();
  EXPECT_EQ(resolved->digest, digestOf(registry.amd64Manifest_));
}

TEST_F(RegistryClientServerTest, WrongCredentialsAreUnauthenticatedWithTheRegistrysMessage) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  RegistryClient client(options(registry, "wrong-password"));
  auto resolved = client.resolve(ref(registry, "1.0"));
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.code(), ErrorCode::kUnauthenticated) << resolved.message();
  EXPECT_NE(resolved.message().find("bad credentials for the fake registry"), std::string::npos) << resolved.message();
  EXPECT_EQ(resolved.message().find("wrong-password"), std::string::npos);

  RegistryClientOptions anonymousOptions = options(registry);
  anonymousOptions.credentials.reset();
  RegistryClient anonymous(std::move(anonymousOptions));
  EXPECT_EQ(anonymous.resolve(ref(registry, "1.0")).code(), ErrorCode::kUnauthenticated);
}

TEST_F(RegistryClientServerTest, BasicChallengeUsesTheCredentials) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBasic);
  RegistryClient client(options(registry));
  auto resolved = client.resolve(ref(registry, "single"));
  ASSERT_TRUE(resolved.ok()) << resolved.message();
  EXPECT_EQ(resolved->digest, digestOf(registry.amd64Manifest_));

  RegistryClient wrong(options(registry, "wrong-password"));
  auto denied = wrong.resolve(ref(registry, "single"));
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.code(), ErrorCode::kUnauthenticated);
  EXPECT_NE(denied.message().find("authentication required"), std::string::npos) << denied.message();
}

TEST_F(RegistryClientServerTest, UnknownTagIsNotFound) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  RegistryClient client(options(registry));
  auto resolved = client.resolve(ref(registry, "no-such-tag"));
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.code(), ErrorCode::kNotFound);
  EXPECT_NE(resolved.message().find("manifest unknown"), std::string::npos) << resolved.message();
}

TEST_F(RegistryClientServerTest, ManifestDigestsAreVerified) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  RegistryClient client(options(registry));
  auto lying = client.resolve(ref(registry, "lying"));
  ASSERT_FALSE(lying.ok());
  EXPECT_EQ(lying.code(), ErrorCode::kProtocol);
  EXPECT_NE(lying.message().find("Docker-Content-Digest"), std::string::npos) << lying.message();

  auto pinned = client.resolve(ref(registry, "", registry.pinnedButWrong_));
  ASSERT_FALSE(pinned.ok());
  EXPECT_EQ(pinned.code(), ErrorCode::kProtocol);
  EXPECT_NE(pinned.message().find("digest mismatch"), std::string::npos) << pinned.message();

  auto byDigest = client.resolve(ref(registry, "", digestOf(registry.amd64Manifest_)));
  ASSERT_TRUE(byDigest.ok()) << byDigest.message();
}

TEST_F(RegistryClientServerTest, BlobsStreamThroughRedirectsAndTheDigestCheck) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  RegistryClient client(options(registry));
  auto resolved = client.resolve(ref(registry, "single"));
  ASSERT_TRUE(resolved.ok()) << resolved.message();

  std::string received;
  int chunks = 0;
  auto fetched = client.fetchBlob("team/app", resolved->layers[0], [&](std::string_view chunk) {
    received.append(chunk);
    ++chunks;
    return okStatus();
  });
  ASSERT_TRUE(fetched.ok()) << fetched.message();
  EXPECT_EQ(received, registry.layer_);
  EXPECT_GE(chunks, 1);

  std::string ignored;
  auto sink = [&](std::string_view chunk) {
    ignored.append(chunk);
    return okStatus();
  };
  const Descriptor forged{"", registry.forgedDigest_, int64_t(registry.forgedContent_.size()), std::nullopt};
  auto wrongDigest = client.fetchBlob("team/app", forged, sink);
  ASSERT_FALSE(wrongDigest.ok());
  EXPECT_EQ(wrongDigest.code(), ErrorCode::kProtocol);
  EXPECT_NE(wrongDigest.message().find("digest mismatch"), std::string::npos) << wrongDigest.message();

  const Descriptor shortSize{"", registry.forgedDigest_, 5, std::nullopt};
  auto tooLong = client.fetchBlob("team/app", shortSize, sink);
  ASSERT_FALSE(tooLong.ok());
  EXPECT_NE(tooLong.message().find("size mismatch"), std::string::npos) << tooLong.message();

  const Descriptor missing{"", digestOf("never pushed"), 3, std::nullopt};
  auto notFound = client.fetchBlob("team/app", missing, sink);
  EXPECT_EQ(notFound.code(), ErrorCode::kNotFound) << notFound.message();

  auto sinkFails = client.fetchBlob("team/app", resolved->config, [](std::string_view) -> Status {
    return makeError(ErrorCode::kInternal, "disk full");
  });
  ASSERT_FALSE(sinkFails.ok());
  EXPECT_NE(sinkFails.message().find("disk full"), std::string::npos);
}

TEST_F(RegistryClientServerTest, RefusesAReferenceForAnotherRegistry) {
  FakeRegistry registry(FakeRegistry::AuthMode::kBearer);
  RegistryClient client(options(registry));
  auto other = client.resolve(ImageReference{"docker.io", "library/busybox", "latest", ""});
  EXPECT_EQ(other.code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace qcs::runtime::registry

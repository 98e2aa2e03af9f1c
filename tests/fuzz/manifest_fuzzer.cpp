// Fuzzes what a registry sends while the containerd runtime resolves an image: the manifest or
// index body with its Content-Type, platform selection over an index, and the WWW-Authenticate
// challenge. Input layout: the first line is the Content-Type, the second the WWW-Authenticate
// header value, the rest the body.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "runtime/registry/registry_client.h"

using namespace qcs::runtime::registry;

namespace {

std::string_view takeLine(std::string_view& rest) {
  const size_t end = rest.find('\n');
  const std::string_view line = rest.substr(0, end);
  rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 1);
  return line;
}

void checkDescriptor(const Descriptor& descriptor, std::string_view body) {
  FUZZ_CHECK(isSha256Digest(descriptor.digest), body);
  FUZZ_CHECK(descriptor.size >= 0, body);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view contentType = takeLine(rest);
  const std::string_view challenge = takeLine(rest);
  const std::string_view body = rest;

  auto manifest = parseManifest(body, contentType);
  if (manifest.ok()) {
    if (manifest->isIndex) {
      FUZZ_CHECK(manifest->mediaType == kOciIndex || manifest->mediaType == kDockerManifestList, manifest->mediaType);
      FUZZ_CHECK(manifest->layers.empty(), body);
      for (const auto& entry : manifest->manifests) checkDescriptor(entry, body);
      for (const char* machine : {"x86_64", "aarch64", "armv7l", "armv6l", "s390x"}) {
        const Platform wanted = platformForMachine(machine);
        auto selected = selectPlatform(manifest->manifests, wanted);
        if (!selected.ok()) continue;
        // The entry chosen is one on offer, for this os and architecture.
        FUZZ_CHECK(selected->platform.has_value() && selected->platform->os == wanted.os &&
                       selected->platform->architecture == wanted.architecture,
                   body);
        bool offered = false;
        for (const auto& entry : manifest->manifests) offered = offered || entry.digest == selected->digest;
        FUZZ_CHECK(offered, body);
      }
    } else {
      FUZZ_CHECK(manifest->mediaType == kOciManifest || manifest->mediaType == kDockerManifestV2, manifest->mediaType);
      FUZZ_CHECK(manifest->manifests.empty(), body);
      checkDescriptor(manifest->config, body);
      for (const auto& layer : manifest->layers) checkDescriptor(layer, body);
    }
  } else {
    FUZZ_CHECK(manifest.code() == qcs::ErrorCode::kProtocol, manifest.message());
  }

  // A digest check never accepts content whose hash differs: the body is checked against a digest
  // taken from its own first 71 bytes, which can only match by a sha256 collision.
  if (body.size() >= 71 && isSha256Digest(body.substr(0, 71))) {
    FUZZ_CHECK(!verifyDigest(body, body.substr(0, 71), "fuzz").ok(), body);
  }

  auto challenges = parseAuthChallenges(challenge);
  if (challenges.ok()) {
    for (const auto& parsed : *challenges) {
      for (char c : parsed.scheme) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), parsed.scheme);
      for (const auto& [name, value] : parsed.params) {
        for (char c : name) FUZZ_CHECK(!(c >= 'A' && c <= 'Z'), name);
        FUZZ_CHECK(parsed.param(name) == value, name);
      }
    }
  }
  return 0;
}

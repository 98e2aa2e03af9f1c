// Image references, secret sources and registry credentials.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/encoding.h"
#include "platform/registry_auth.h"
#include "platform/secrets.h"
#include "runtime/image_reference.h"

namespace qcs::platform {
namespace {

using runtime::parseImageReference;

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/qcs-unit-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name, const std::string& content, mode_t mode) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p) << content;
    ::chmod(p.c_str(), mode);
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(ImageReferenceTest, DockerHubDefaults) {
  auto ref = parseImageReference("qualys/qcs-sensor");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->registry, "docker.io");
  EXPECT_EQ(ref->repository, "qualys/qcs-sensor");
  EXPECT_EQ(ref->tag, "latest");
  EXPECT_EQ(parseImageReference("busybox")->repository, "library/busybox");
  EXPECT_EQ(parseImageReference("busybox")->familiar(), "busybox:latest");
}

TEST(ImageReferenceTest, RegistryPortTagAndDigest) {
  auto ref = parseImageReference("127.0.0.1:5000/team/sensor:1.2.3");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->registry, "127.0.0.1:5000");
  EXPECT_EQ(ref->repository, "team/sensor");
  EXPECT_EQ(ref->tag, "1.2.3");
  std::string digest = "sha256:" + std::string(64, 'a');
  auto pinned = parseImageReference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/qcs/sensor@" + digest);
  ASSERT_TRUE(pinned.ok());
  EXPECT_EQ(pinned->registry, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
  EXPECT_EQ(pinned->digest, digest);
  EXPECT_EQ(pinned->tag, "");
  EXPECT_EQ(parseImageReference("localhost/x")->registry, "localhost");
  EXPECT_EQ(parseImageReference("127.0.0.1:5000/team/sensor:1")->name(), "127.0.0.1:5000/team/sensor");
  EXPECT_EQ(parseImageReference("qualys/qcs-sensor:1")->name(), "qualys/qcs-sensor");
}

TEST(ImageReferenceTest, RejectsBadReferences) {
  // References go into URL paths of the runtime's API: nothing that could climb out may pass.
  for (const char* bad : {"", "Qualys/Sensor", "x:", "x@sha256:abc", "/x", "x//y", "x:bad tag", "x y",
                          "a/../../containers/json?", "a/../../containers", "a/.hidden"}) {
    auto ref = parseImageReference(bad);
    EXPECT_FALSE(ref.ok()) << bad;
  }
}

TEST(SecretsTest, EnvSourceReadsTrimsAndNamesTheVariable) {
  auto lookup = [](const std::string& n) -> std::optional<std::string> {
    if (n == "SET") return std::string("  value-1234 \n");
    if (n == "EMPTY") return std::string(" ");
    return std::nullopt;
  };
  EXPECT_EQ(makeEnvSecret("SET", lookup)->read().value(), "value-1234");
  auto missing = makeEnvSecret("MISSING", lookup)->read();
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.message().find("MISSING"), std::string::npos);
  EXPECT_FALSE(makeEnvSecret("EMPTY", lookup)->read().ok());
}

TEST(SecretsTest, FileSourceRefusesGroupOrWorldReadableFiles) {
  TempDir dir;
  auto ok = dir.file("ok", "abcd-secret\n", 0600);
  EXPECT_EQ(makeFileSecret(ok)->read().value(), "abcd-secret");
  auto open = dir.file("open", "abcd-secret", 0644);
  auto refused = makeFileSecret(open)->read();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.message().find("chmod 600"), std::string::npos);
  EXPECT_EQ(refused.message().find("abcd-secret"), std::string::npos) << "never the value";
  auto gone = makeFileSecret(dir.path() + "/none")->read();
  EXPECT_EQ(gone.code(), ErrorCode::kNotFound);
}

TEST(SecretsTest, KubernetesSecretVolumesMayBeWorldReadable) {
  TempDir dir;
  // The kubelet's atomic writer: ..data -> ..2024_xx, key -> ..data/key.
  fs::create_directory(dir.path() + "/..2026_01_01");
  dir.file("..2026_01_01/customer-id", "abcd-secret", 0644);
  fs::create_symlink("..2026_01_01", dir.path() + "/..data");
  fs::create_symlink("..data/customer-id", dir.path() + "/customer-id");
  EXPECT_EQ(makeFileSecret(dir.path() + "/customer-id")->read().value(), "abcd-secret");
}

TEST(SecretsTest, RecognisesUuids) {
  EXPECT_TRUE(isUuid("11111111-2222-3333-4444-555555555555"));
  EXPECT_TRUE(isUuid("aBcDeF01-2222-3333-4444-555555555555"));
  EXPECT_FALSE(isUuid("11111111-2222-3333-4444-55555555555"));
  EXPECT_FALSE(isUuid("11111111x2222-3333-4444-555555555555"));
  EXPECT_FALSE(isUuid("g1111111-2222-3333-4444-555555555555"));
}

TEST(RegistryAuthTest, BasicUsesTheSecretPassword) {
  TempDir dir;
  auto pw = dir.file("pw", "s3cret-pass\n", 0600);
  auto auth = makeBasicAuth("robot", makeFileSecret(pw));
  auto creds = auth->credentialsFor(parseImageReference("127.0.0.1:5000/qcs/sensor:1").value());
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds->has_value());
  EXPECT_EQ((*creds)->username, "robot");
  EXPECT_EQ((*creds)->password, "s3cret-pass");
  EXPECT_EQ((*creds)->serverAddress, "127.0.0.1:5000");
}

TEST(RegistryAuthTest, DockerConfigAuthsEntries) {
  TempDir dir;
  std::string config = R"({"auths": {
      "127.0.0.1:5000": {"auth": ")" +
                       base64Encode("alice:pw-one") + R"("},
      "https://index.docker.io/v1/": {"username": "bob", "password": "pw-two"},
      "token.example.com": {"identitytoken": "tok-three"}}})";
  auto path = dir.file("config.json", config, 0600);
  auto auth = makeDockerConfigAuth(path);
  auto local = auth->credentialsFor(parseImageReference("127.0.0.1:5000/x:1").value());
  ASSERT_TRUE(local.ok() && local->has_value());
  EXPECT_EQ((*local)->username, "alice");
  EXPECT_EQ((*local)->password, "pw-one");
  auto hub = auth->credentialsFor(parseImageReference("qualys/qcs-sensor").value());
  ASSERT_TRUE(hub.ok() && hub->has_value());
  EXPECT_EQ((*hub)->username, "bob");
  auto token = auth->credentialsFor(parseImageReference("token.example.com/x").value());
  ASSERT_TRUE(token.ok() && token->has_value());
  EXPECT_EQ((*token)->identityToken, "tok-three");
  auto none = auth->credentialsFor(parseImageReference("other.example.com/x").value());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST(RegistryAuthTest, DockerConfigErrorsNameTheFile) {
  TempDir dir;
  auto bad = dir.file("bad.json", "not json", 0600);
  auto result = makeDockerConfigAuth(bad)->credentialsFor(parseImageReference("x").value());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.message().find(bad), std::string::npos);
  auto missing = makeDockerConfigAuth(dir.path() + "/none.json")->credentialsFor(parseImageReference("x").value());
  ASSERT_FALSE(missing.ok());
}

TEST(RegistryAuthTest, CredentialHelpersAreRun) {
  TempDir dir;
  // A helper that answers for one server the way docker-credential-* helpers do.
  dir.file("docker-credential-qcstest",
           "#!/bin/sh\nread server\nif [ \"$server\" = \"127.0.0.1:5000\" ]; then\n"
           "  echo '{\"ServerURL\":\"127.0.0.1:5000\",\"Username\":\"helper-user\",\"Secret\":\"helper-pw\"}'\n"
           "else echo 'credentials not found in native keychain'; exit 1; fi\n",
           0755);
  std::string oldPath = std::getenv("PATH") ? std::getenv("PATH") : "";
  ::setenv("PATH", (dir.path() + ":" + oldPath).c_str(), 1);
  auto path =
      dir.file("config.json", R"({"credHelpers": {"127.0.0.1:5000": "qcstest"}, "credsStore": "qcstest"})", 0600);
  auto auth = makeDockerConfigAuth(path);
  auto creds = auth->credentialsFor(parseImageReference("127.0.0.1:5000/x:1").value());
  ASSERT_TRUE(creds.ok()) << creds.message();
  ASSERT_TRUE(creds->has_value());
  EXPECT_EQ((*creds)->username, "helper-user");
  EXPECT_EQ((*creds)->password, "helper-pw");
  auto other = auth->credentialsFor(parseImageReference("elsewhere.example.com/x").value());
  ASSERT_TRUE(other.ok()) << other.message();
  EXPECT_FALSE(other->has_value());
  auto absent = runCredentialHelper("does-not-exist", "x", std::chrono::seconds(5));
  EXPECT_FALSE(absent.ok());
  ::setenv("PATH", oldPath.c_str(), 1);
}

TEST(EncodingTest, Base64RoundTripsAndSha256MatchesKnownVector) {
  EXPECT_EQ(base64Encode("alice:pw"), "YWxpY2U6cHc=");
  EXPECT_EQ(base64Decode("YWxpY2U6cHc=").value(), "alice:pw");
  EXPECT_EQ(base64UrlEncode("\xfb\xff"), "-_8=");
  EXPECT_EQ(sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(EncodingTest, InvalidUtf8OffsetFindsTheFirstByteOutsideWellFormedUtf8) {
  constexpr size_t kValid = std::string_view::npos;
  EXPECT_EQ(invalidUtf8Offset(""), kValid);
  EXPECT_EQ(invalidUtf8Offset("plain ASCII\n\t\x0f"), kValid);
  EXPECT_EQ(invalidUtf8Offset("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\xb3 \xef\xbb\xbf"), kValid);  // é € 🐳 BOM
  EXPECT_EQ(invalidUtf8Offset("\xed\x9f\xbf \xee\x80\x80 \xf4\x8f\xbf\xbf"), kValid);  // U+D7FF U+E000 U+10FFFF
  EXPECT_EQ(invalidUtf8Offset("--perfor\xff\x0fsca-scan"), 8u);                        // the fuzzer's find
  EXPECT_EQ(invalidUtf8Offset("\x80"), 0u);                                            // a lone continuation
  EXPECT_EQ(invalidUtf8Offset("ab\xc0\xaf"), 2u);                                      // overlong '/'
  EXPECT_EQ(invalidUtf8Offset("\xe0\x80\xaf"), 0u);                                    // overlong, 3 bytes
  EXPECT_EQ(invalidUtf8Offset("\xed\xa0\x80"), 0u);                                    // a surrogate
  EXPECT_EQ(invalidUtf8Offset("\xf4\x90\x80\x80"), 0u);                                // above U+10FFFF
  EXPECT_EQ(invalidUtf8Offset("\xf5\x80\x80\x80"), 0u);
  EXPECT_EQ(invalidUtf8Offset("ok \xe2\x82"), 3u);   // cut short at the end
  EXPECT_EQ(invalidUtf8Offset("\xe2\x28\xa1"), 0u);  // bad continuation
}

}  // namespace
}  // namespace qcs::platform

// The DaemonSet image, built as the test suite builds it without any registry: a root file system
// assembled by deploy/image/build-rootfs.sh (the binary, its ldd libraries, CA certificates),
// `docker import`ed into a private dockerd and run with no network and a read-only root, as the
// DaemonSet runs it.
#include <gtest/gtest.h>

#include <regex>

#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kImage = "qcs-agent:image-test";

class ImageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    const std::string tar = dir_.file("rootfs.tar");
    auto built = runCommand({QCS_BUILD_ROOTFS_SCRIPT, QCS_AGENT_BINARY, tar}, {}, 2min);
    ASSERT_TRUE(built.ok()) << built.message();
    ASSERT_EQ(built->exitCode, 0) << built->err;
    auto imported = dockerd_->cli(std::string("import --change 'ENTRYPOINT [\"/usr/bin/qcs-agent\"]'"
                                              " --change 'CMD [\"run\"]' --change 'USER 0:0' ") +
                                  tar + " " + kImage);
    ASSERT_TRUE(imported.ok()) << imported.message();
  }

  void TearDown() override { dockerd_.reset(); }

  std::unique_ptr<Dockerd> dockerd_;
  TempDir dir_{"qcs-image-"};
};

TEST_F(ImageTest, VersionRunsWithNoNetworkOnAReadOnlyRoot) {
  auto out = dockerd_->cli(std::string("run --rm --network none --read-only ") + kImage + " version");
  ASSERT_TRUE(out.ok()) << out.message();
  EXPECT_NE(out->find(QCS_EXPECTED_VERSION), std::string::npos) << *out;
}

TEST_F(ImageTest, HoldsOnlyTheAgentItsLibrariesAndCertificates) {
  // No shell to exec into: the image is the binary and what it loads.
  auto shell = dockerd_->cli(std::string("run --rm --network none --entrypoint /bin/sh ") + kImage + " -c true");
  EXPECT_FALSE(shell.ok()) << "the image has a shell";

  auto size = dockerd_->cli(std::string("image inspect -f '{{.Size}}' ") + kImage);
  ASSERT_TRUE(size.ok()) << size.message();
  EXPECT_LT(std::stoll(*size), 150LL * 1024 * 1024) << "image grew to " << *size << " bytes";

  // The CA bundle the agent's HTTPS clients load (ECR/ACR/GCR, the Qualys platform).
  auto created = dockerd_->cli(std::string("create ") + kImage);
  ASSERT_TRUE(created.ok()) << created.message();
  auto exported = dockerd_->cli("export " + *created + " | tar -t");
  ASSERT_TRUE(exported.ok()) << exported.message();
  // One path a line; `docker export` writes them without a leading "./".
  auto listed = [&](const std::string& path) {
    return std::regex_search(*exported, std::regex("(^|\n)(\\./)?" + path + "/?(\n|$)"));
  };
  for (const char* path : {"usr/bin/qcs-agent", "etc/ssl/certs/ca-certificates.crt", "usr/lib64/ld-linux-x86-64.so.2",
                           "lib64", "etc/nsswitch.conf"}) {
    EXPECT_TRUE(listed(path)) << path << " missing from the image";
  }
  for (const char* shellPath : {"bin/sh", "usr/bin/sh", "bin/bash", "bin/busybox"}) {
    EXPECT_FALSE(listed(shellPath)) << shellPath << " is in the image";
  }
}

}  // namespace
}  // namespace qcs::testing

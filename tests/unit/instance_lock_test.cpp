#include "agent/instance_lock.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <string>

namespace qcs::agent {
namespace {

// Unique per test process, so parallel test runs never meet each other's locks.
std::string uniqueSensor(const std::string& base) { return base + "-" + std::to_string(::getpid()); }

TEST(InstanceLockNameTest, TheHostAndAPodSeeingTheSameSocketAgree) {
  const auto onHost = instanceLockName("docker", "/var/run/docker.sock", "/", "qualys", "s");
  const auto inPod = instanceLockName("docker", "/host/run/docker.sock", "/host", "qualys", "s");
  const auto inPodSlash = instanceLockName("docker", "/host//var/run/docker.sock", "/host/", "qualys", "s");
  EXPECT_EQ(onHost, inPod);
  EXPECT_EQ(onHost, inPodSlash);
  EXPECT_EQ(onHost, "qcs-agent:docker:/run/docker.sock::s");
}

TEST(InstanceLockNameTest, SocketNamespaceAndSensorNameEachMakeADifferentLock) {
  const auto base = instanceLockName("containerd", "/run/containerd/containerd.sock", "/", "qualys", "s");
  EXPECT_NE(base, instanceLockName("containerd", "/run/k3s/containerd/containerd.sock", "/", "qualys", "s"));
  EXPECT_NE(base, instanceLockName("containerd", "/run/containerd/containerd.sock", "/", "other", "s"));
  EXPECT_NE(base, instanceLockName("containerd", "/run/containerd/containerd.sock", "/", "qualys", "t"));
  // Docker has no namespaces: the configured one does not split Docker's lock.
  EXPECT_EQ(instanceLockName("docker", "/run/docker.sock", "/", "a", "s"),
            instanceLockName("docker", "/run/docker.sock", "/", "b", "s"));
  // A host_root that is only a prefix of a directory name is not stripped.
  EXPECT_EQ(instanceLockName("docker", "/hostile/docker.sock", "/host", "", "s"),
            "qcs-agent:docker:/hostile/docker.sock::s");
}

TEST(InstanceLockNameTest, ALongNameIsHashedToFitAnAbstractSocketAddress) {
  const std::string longPath = "/tmp/" + std::string(150, 'x') + "/docker.sock";
  const auto a = instanceLockName("docker", longPath, "/", "", "s");
  const auto b = instanceLockName("docker", longPath, "/", "", "t");
  EXPECT_LE(a.size(), 107u);
  EXPECT_EQ(a.rfind("qcs-agent:fnv1a:", 0), 0u) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a, instanceLockName("docker", longPath, "/", "", "s"));
}

TEST(InstanceLockTest, ASecondHolderIsRefusedWithTheFirstOnesPidUntilItIsReleased) {
  const auto name = instanceLockName("docker", "/run/docker.sock", "/", "", uniqueSensor("lock-test"));
  auto first = InstanceLock::acquire(name, "sensor 'x' on docker at /run/docker.sock");
  ASSERT_TRUE(first) << first.message();

  auto second = InstanceLock::acquire(name, "sensor 'x' on docker at /run/docker.sock");
  ASSERT_FALSE(second);
  EXPECT_EQ(second.code(), ErrorCode::kConflict);
  EXPECT_NE(second.message().find("(pid " + std::to_string(::getpid()) + ")"), std::string::npos) << second.message();
  EXPECT_NE(second.message().find("already supervises sensor 'x' on docker at /run/docker.sock"), std::string::npos)
      << second.message();

  first.value().reset();
  auto third = InstanceLock::acquire(name, "x");
  EXPECT_TRUE(third) << third.message();
}

TEST(InstanceLockTest, AHolderKilledBySigkillReleasesTheLock) {
  const auto name = instanceLockName("docker", "/run/docker.sock", "/", "", uniqueSensor("sigkill-test"));
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto lock = InstanceLock::acquire(name, "x");
    const char byte = lock ? '1' : '0';
    (void)!::write(ready[1], &byte, 1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(byte, '1');

  auto whileHeld = InstanceLock::acquire(name, "x");
  EXPECT_FALSE(whileHeld);
  EXPECT_NE(whileHeld.message().find("(pid " + std::to_string(child) + ")"), std::string::npos) << whileHeld.message();

  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  auto afterDeath = InstanceLock::acquire(name, "x");
  EXPECT_TRUE(afterDeath) << afterDeath.message();
}

}  // namespace
}  // namespace qcs::agent

// The qcs-agent binary on a real containerd whose namespace holds the leases an earlier agent left
// when it was killed: the next agent deletes them when it connects (after taking the instance lock),
// also when the image is already stored and nothing is pulled.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <random>
#include <set>
#include <sstream>

#include "harness/agent_process.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kSensorName = "qcs-lease-sensor";
// The agent's sensor.image "qcs-standin:test" is this image in containerd's naming.
constexpr const char* kImage = "docker.io/library/qcs-standin:test";

// runc's state (/run/containerd/runc/<ns>) and the sensor's cgroup (/<ns>/<name>) are shared by
// every containerd on the machine, so a namespace of its own per test.
std::string uniqueNamespace() {
  std::random_device random;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%08x", random());
  return std::string("qcs-e2e-lease-") + suffix;
}

std::set<std::string> lines(const std::string& text) {
  std::set<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) out.insert(line);
  }
  return out;
}

class ContainerdLeaseSweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    containerd_ = Containerd::start();
    ASSERT_NE(containerd_, nullptr) << "containerd did not start";
    auto image = importStandinImage(*containerd_, kImage, ns_);
    ASSERT_TRUE(image.ok()) << image.message();
    ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kE2eCustomerId) + "\n", 0600));
    ::mkdir(dir_.file("control").c_str(), 0755);
    ASSERT_TRUE(writeFile(dir_.file("control/control"), "run\n"));
  }
  void TearDown() override {
    agent_.reset();
    containerd_.reset();
  }

  std::string config() {
    E2eConfig c;
    c.runtime = "runtime:\n  kind: containerd\n  endpoint: " + containerd_->socketPath() +
                "\n  containerd_namespace: " + ns_ + "\n  containerd_log_dir: " + dir_.file("logs") + "\n";
    c.pullPolicy = "never";  // the image is stored: nothing is pulled, so no pull can sweep
    c.sensorName = kSensorName;
    c.controlDir = dir_.file("control");
    c.customerIdFile = dir_.file("customer-id");
    return e2eConfigYaml(c);
  }
  std::unique_ptr<Process> startAgent() {
    return startAgentProcess(dir_, config(), "agent", {{"QCS_E2E_ACTIVATION_ID", kE2eActivationId}}, agents_);
  }
  std::string ctr(const std::string& args) {
    auto out = containerd_->cli("-n " + ns_ + " " + args);
    EXPECT_TRUE(out.ok()) << out.message();
    return out.ok() ? *out : std::string();
  }
  bool sensorRunning() {
    for (const auto& line : lines(ctr("tasks ls"))) {
      std::istringstream fields(line);
      std::string name, pid, status;
      fields >> name >> pid >> status;
      if (name == kSensorName) return status == "RUNNING";
    }
    return false;
  }

  const std::string ns_ = uniqueNamespace();
  TempDir dir_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<Process> agent_;
  int agents_ = 0;
};

TEST_F(ContainerdLeaseSweepTest, TheNextAgentDeletesTheLeasesAKilledOneLeftThoughItPullsNothing) {
  // A pull lease of an agent killed after the image was stored, a create lease of one killed
  // mid-create, and a lease that is not the agent's.
  ASSERT_FALSE(ctr("leases create --id qcs-agent-pull-999999-1-0-deadbeef").empty());
  ASSERT_FALSE(ctr("leases create --id qcs-agent-create-0123456789ab").empty());
  ASSERT_FALSE(ctr("leases create --id someone-elses-lease").empty());

  agent_ = startAgent();
  ASSERT_NE(agent_, nullptr);
  ASSERT_TRUE(waitFor([&] { return sensorRunning(); }, 60s)) << agent_->output();
  // The sweep ran at connect, before the first reconcile created the sensor (under a lease of its
  // own, deleted when the create returned).
  EXPECT_EQ(lines(ctr("leases ls -q")), std::set<std::string>{"someone-elses-lease"}) << agent_->output();
  ctr("leases delete someone-elses-lease");
}

}  // namespace
}  // namespace qcs::testing

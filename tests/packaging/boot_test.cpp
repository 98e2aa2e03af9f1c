// End-to-end boot test of the .deb: a clean Debian bookworm root file system (debootstrap) booted
// with systemd as PID 1 in a container of a private dockerd; the package is installed with dpkg,
// the unit is enabled but not started by the install, then started: systemd sees READY (Type=notify)
// and the stand-in sensor runs in that same dockerd. Also records `systemd-analyze verify` and
// `systemd-analyze security` for the installed unit. Beside it, the image-baking case for both
// packages: installed where no systemd runs (a container without init for the .deb, `rpm --root`
// into a copy of the clean root for the .rpm), the unit is enabled for the next boot and nothing
// starts. Needs root and, for the first debootstrap, Debian's mirror; the root is cached.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;

constexpr const char* kActivationId = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
constexpr const char* kCustomerId = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
constexpr const char* kBootContainer = "qcs-boot";
constexpr const char* kSensorName = "qualys-container-sensor";

std::string findPackage(const std::string& dir, const std::string& prefix, const std::string& suffix) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      return entry.path().string();
  }
  return {};
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// The packages built by the packaging_packages test, and the cached clean bookworm root.
class CleanRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(::geteuid(), 0u) << "the boot test needs root (dockerd, debootstrap)";
    deb_ = findPackage(QCS_PACKAGE_DIR, "qcs-agent_", ".deb");
    ASSERT_FALSE(deb_.empty()) << "no qcs-agent_*.deb in " << QCS_PACKAGE_DIR
                               << ": the packaging_packages test (cpack) builds it first";
    auto rootfs = runCommand({std::string(QCS_PACKAGING_SCRIPTS) + "/make_rootfs.sh", deb_, QCS_ROOTFS_CACHE}, {},
                             std::chrono::minutes(15));
    ASSERT_TRUE(rootfs.ok()) << rootfs.message();
    ASSERT_EQ(rootfs->exitCode, 0) << "making the bookworm root file system failed:\n" << rootfs->err;
    rootfsTar_ = trimmed(rootfs->out);
  }

  std::string deb_;
  std::string rootfsTar_;
};

// The clean root imported into a private dockerd, with the stand-in sensor image beside it.
class BootTest : public CleanRootTest {
 protected:
  void SetUp() override {
    CleanRootTest::SetUp();
    if (HasFatalFailure()) return;
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    auto standin = buildStandinImage(*dockerd_);
    ASSERT_TRUE(standin.ok()) << standin.message();
    standinImage_ = *standin;
    auto imported = dockerd_->cli("import " + rootfsTar_ + " qcs-boot:bookworm");
    ASSERT_TRUE(imported.ok()) << imported.message();
  }

  void TearDown() override {
    if (dockerd_ && booted_ && HasFailure()) {
      auto journal = exec("journalctl --no-pager -n 80 -u qcs-agent.service");
      std::cerr << "journal of qcs-agent.service:\n" << (journal.ok() ? *journal : journal.message()) << "\n";
    }
    dockerd_.reset();  // removes the boot container and the sensor with it
  }

  // Runs a shell command line in the booted system; stdout or an error with the exit code.
  Result<std::string> exec(const std::string& shellCommand, const std::string& stdinText = {}) {
    std::string quoted = "'";
    for (char c : shellCommand) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    quoted += "'";
    return dockerd_->cli(std::string("exec ") + (stdinText.empty() ? "" : "-i ") + kBootContainer + " sh -c " + quoted,
                         stdinText);
  }

  Status writeInside(const std::string& path, const std::string& content, const std::string& mode) {
    auto r = exec("umask 077 && cat > " + path + " && chmod " + mode + " " + path, content);
    if (!r.ok()) return r.error();
    return okStatus();
  }

  std::string unitProperty(const std::string& property) {
    auto r = exec("systemctl show -p " + property + " --value qcs-agent.service");
    return r.ok() ? trimmed(*r) : "(" + r.message() + ")";
  }

  std::string standinImage_;
  std::unique_ptr<Dockerd> dockerd_;
  bool booted_ = false;  // the systemd container was started
};

TEST_F(BootTest, DebInstallsIntoCleanBookwormAndTheUnitRunsTheSensor) {
  // The agent reaches the test's dockerd through host_root, as a pod does: the dockerd lives in
  // the host's /tmp, which the unit's PrivateTmp= hides, and the sensor's socket mount must name
  // the path as the dockerd (on the host) sees it.
  const std::string socket = dockerd_->socketPath();
  const std::string packageDir = std::filesystem::path(deb_).parent_path().string();
  auto started = dockerd_->cli(std::string("run -d --name ") + kBootContainer +
                               " --cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined"
                               " -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock --network host"
                               " -v " +
                               socket + ":/host" + socket + " -v " + packageDir + ":/packages:ro" +
                               " qcs-boot:bookworm /sbin/init");
  ASSERT_TRUE(started.ok()) << started.message();
  booted_ = true;

  std::string systemState;
  const bool booted = waitFor(
      [&] {
        auto r = exec("systemctl is-system-running || true");
        systemState = r.ok() ? trimmed(*r) : "";
        return systemState == "running" || systemState == "degraded";
      },
      3min);
  ASSERT_TRUE(booted) << "systemd did not finish booting: " << systemState;

  auto installed = exec("dpkg -i /packages/" + std::filesystem::path(deb_).filename().string() + " 2>&1");
  ASSERT_TRUE(installed.ok()) << "dpkg -i failed (undeclared or uninstallable dependency?): " << installed.message();

  // Enabled by the package, not started: an image being baked gets no running agent.
  auto enabled = exec("systemctl is-enabled qcs-agent.service || true");
  EXPECT_TRUE(enabled.ok() && trimmed(*enabled) == "enabled") << (enabled.ok() ? *enabled : enabled.message());
  EXPECT_EQ(unitProperty("ActiveState"), "inactive");
  auto modes = exec("stat -c '%a %U' /etc/qcs-agent/agent.yaml /etc/qcs-agent/secrets /var/log/qcs-agent");
  ASSERT_TRUE(modes.ok()) << modes.message();
  EXPECT_EQ(*modes, "600 root\n700 root\n750 root");

  auto verify = exec("systemd-analyze verify /usr/lib/systemd/system/qcs-agent.service 2>&1");
  ASSERT_TRUE(verify.ok()) << verify.message();
  EXPECT_EQ(verify->find("qcs-agent.service"), std::string::npos) << "systemd-analyze verify: " << *verify;

  std::ostringstream config;
  config << "runtime:\n  kind: docker\n  host_root: /host\n"
         << "sensor:\n  image: " << standinImage_ << "\n  pull_policy: never\n"
         << "  resources: {cpu_request: 100m, cpu_limit: 500m, memory_request: 16Mi, memory_limit: 64Mi}\n"
         << "secrets:\n  activation_id: {source: file, path: /etc/qcs-agent/secrets/activation-id}\n"
         << "  customer_id: {source: env, name: QCS_BOOT_CUSTOMER_ID}\n"
         << "platform:\n  detect: none\n"
         << "http:\n  listen: \"127.0.0.1:0\"\n";  // host network: the kernel picks a free port
  ASSERT_TRUE(writeInside("/etc/qcs-agent/agent.yaml", config.str(), "600").ok());
  ASSERT_TRUE(writeInside("/etc/qcs-agent/secrets/activation-id", std::string(kActivationId) + "\n", "600").ok());
  ASSERT_TRUE(writeInside("/etc/qcs-agent/qcs-agent.env",
                          "DOCKER_HOST=unix://" + socket + "\nQCS_BOOT_CUSTOMER_ID=" + kCustomerId + "\n", "600")
                  .ok());

  // Type=notify: `systemctl start` returns once READY=1 arrived (or fails).
  auto start = exec("systemctl start qcs-agent.service");
  ASSERT_TRUE(start.ok()) << "systemctl start failed: " << start.message();
  EXPECT_EQ(unitProperty("ActiveState"), "active");
  EXPECT_EQ(unitProperty("SubState"), "running");
  EXPECT_NE(unitProperty("StatusText"), "");

  std::string sensorState;
  const bool sensorRuns = waitFor(
      [&] {
        auto r = dockerd_->cli(std::string("inspect -f '{{.State.Running}} {{.Config.Image}}' ") + kSensorName);
        sensorState = r.ok() ? *r : r.message();
        return sensorState == "true " + standinImage_;
      },
      60s);
  EXPECT_TRUE(sensorRuns) << "sensor: " << sensorState;

  auto security = exec("systemd-analyze security --no-pager qcs-agent.service 2>&1 || true");
  ASSERT_TRUE(security.ok()) << security.message();
  std::filesystem::create_directories(std::filesystem::path(QCS_SECURITY_REPORT).parent_path());
  std::ofstream(QCS_SECURITY_REPORT) << *security;
  std::smatch m;
  const std::string text = *security;
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(Overall exposure level for qcs-agent\.service: ([0-9.]+))")))
      << text;
  const double exposure = std::stod(m[1]);
  std::cout << "systemd-analyze security: exposure " << exposure << " (report: " << QCS_SECURITY_REPORT << ")\n";
  EXPECT_LE(exposure, 2.0) << "the unit's sandbox got weaker:\n" << text;

  // A stop leaves the sensor running (supervision.on_stop: leave) and systemd records a clean stop.
  auto stop = exec("systemctl stop qcs-agent.service");
  ASSERT_TRUE(stop.ok()) << stop.message();
  EXPECT_EQ(unitProperty("Result"), "success");
  auto after = dockerd_->cli(std::string("inspect -f '{{.State.Running}}' ") + kSensorName);
  EXPECT_TRUE(after.ok() && *after == "true") << (after.ok() ? *after : after.message());
}

// As when an AMI or image is baked: no systemd runs. The package must enable the unit for the next
// boot and start nothing.
TEST_F(BootTest, InstallWithoutSystemdEnablesTheUnitForTheNextBoot) {
  const std::string packageDir = std::filesystem::path(deb_).parent_path().string();
  const std::string debName = std::filesystem::path(deb_).filename().string();
  auto baked = dockerd_->cli("run --rm --network none -v " + packageDir +
                             ":/packages:ro qcs-boot:bookworm sh -c '"
                             "test ! -d /run/systemd/system && dpkg -i /packages/" +
                             debName +
                             " >/dev/null && readlink -f /etc/systemd/system/multi-user.target.wants/qcs-agent.service"
                             " && stat -c %a /etc/qcs-agent/agent.yaml && ls /var/log/qcs-agent >/dev/null"
                             " && ! pgrep -x qcs-agent'");
  ASSERT_TRUE(baked.ok()) << "installing without systemd failed: " << baked.message();
  EXPECT_EQ(*baked, "/usr/lib/systemd/system/qcs-agent.service\n600");
}

// The .rpm's scriptlets, as when an AMI is baked with Packer: installed with rpm into a copy of the
// clean root (where systemctl exists but no systemd runs), the unit ends up enabled, the config
// root-only. Dependencies are not checked: the root holds Debian's libraries, not an rpm database.
TEST_F(CleanRootTest, RpmInstallIntoAnImageEnablesTheUnitForTheNextBoot) {
  const std::string rpmFile = findPackage(QCS_PACKAGE_DIR, "qcs-agent-", ".rpm");
  ASSERT_FALSE(rpmFile.empty()) << "no qcs-agent-*.rpm in " << QCS_PACKAGE_DIR;
  TempDir image("qcs-rpm-root-");
  auto unpacked = runCommand({"/usr/bin/tar", "-C", image.path(), "-xf", rootfsTar_}, {}, 2min);
  ASSERT_TRUE(unpacked.ok() && unpacked->exitCode == 0) << (unpacked.ok() ? unpacked->err : unpacked.message());
  auto installed =
      runCommand({"/usr/bin/rpm", "--root", image.path(), "-i", "--nodeps", "--nosignature", rpmFile}, {}, 2min);
  ASSERT_TRUE(installed.ok()) << installed.message();
  ASSERT_EQ(installed->exitCode, 0) << installed->err << installed->out;

  std::error_code ec;
  const auto wants =
      std::filesystem::path(image.path()) / "etc/systemd/system/multi-user.target.wants/qcs-agent.service";
  EXPECT_TRUE(std::filesystem::is_symlink(wants, ec)) << "the unit was not enabled: " << wants;
  const auto config = std::filesystem::status(std::filesystem::path(image.path()) / "etc/qcs-agent/agent.yaml", ec);
  EXPECT_EQ(config.permissions(), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  const auto secrets = std::filesystem::status(std::filesystem::path(image.path()) / "etc/qcs-agent/secrets", ec);
  EXPECT_EQ(secrets.permissions(), std::filesystem::perms::owner_all);
  EXPECT_TRUE(std::filesystem::is_directory(std::filesystem::path(image.path()) / "var/log/qcs-agent", ec))
      << "%post did not create /var/log/qcs-agent (systemd-tmpfiles)";

  // Removal (%preun with $1 = 0) disables it again.
  auto erased = runCommand({"/usr/bin/rpm", "--root", image.path(), "-e", "--nodeps", "qcs-agent"}, {}, 2min);
  ASSERT_TRUE(erased.ok() && erased->exitCode == 0) << (erased.ok() ? erased->err : erased.message());
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::symlink_status(wants, ec))) << "still enabled after rpm -e";
}

}  // namespace
}  // namespace qcs::testing

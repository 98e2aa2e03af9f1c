#include "agent/check.h"

#include <gtest/gtest.h>

#include <ctime>

namespace qcs::agent {
namespace {

using namespace std::chrono_literals;

CheckReport sampleReport() {
  CheckReport report;
  report.checks.push_back({"runtime", CheckResult::kPass, "docker 24.0 at /var/run/docker.sock", ""});
  report.checks.push_back({"disk.runtime_root", CheckResult::kWarn, "free space on /var/lib/docker: 1.5 GiB",
                           "free space on /var/lib/docker"});
  report.checks.push_back({"image", CheckResult::kSkip, "skipped: no runtime", "fix the runtime check first"});
  return report;
}

TEST(CheckReportTest, WarningsAndSkipsDoNotFail) {
  CheckReport report = sampleReport();
  EXPECT_TRUE(report.ok());
  EXPECT_EQ(checkExitCode(report), 0);
  report.checks.push_back({"pod_url", CheckResult::kFail, "cannot connect", "check sensor.pod_url"});
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(checkExitCode(report), 1);
}

TEST(CheckReportTest, TextHasOneLinePerCheckAndRemediationOnlyWhenNotPass) {
  CheckReport report = sampleReport();
  report.checks.push_back({"pod_url", CheckResult::kFail, "cannot connect", "check sensor.pod_url"});
  std::string text = formatCheckText(report);
  EXPECT_NE(text.find("[PASS] runtime: docker 24.0 at /var/run/docker.sock\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[WARN] disk.runtime_root: free space on /var/lib/docker: 1.5 GiB\n       fix: free space on "
                      "/var/lib/docker\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("[SKIP] image: skipped: no runtime\n"), std::string::npos) << text;
  EXPECT_NE(text.find("[FAIL] pod_url: cannot connect\n       fix: check sensor.pod_url\n"), std::string::npos) << text;
  EXPECT_NE(text.find("FAILED: 1 passed, 1 warnings, 1 failed, 1 skipped"), std::string::npos) << text;
  // The passing check has no "fix:" line after it.
  EXPECT_EQ(text.find("[PASS] runtime: docker 24.0 at /var/run/docker.sock\n       fix"), std::string::npos);
}

TEST(CheckReportTest, JsonShape) {
  CheckReport report = sampleReport();
  auto doc = checkReportJson(report);
  ASSERT_TRUE(doc.is_object());
  ASSERT_TRUE(doc["checks"].is_array());
  ASSERT_EQ(doc["checks"].size(), 3u);
  EXPECT_EQ(doc["ok"], true);
  const auto& first = doc["checks"][0];
  EXPECT_EQ(first["name"], "runtime");
  EXPECT_EQ(first["result"], "pass");
  EXPECT_EQ(first["detail"], "docker 24.0 at /var/run/docker.sock");
  EXPECT_EQ(first["remediation"], "");
  EXPECT_EQ(doc["checks"][1]["result"], "warn");
  EXPECT_EQ(doc["checks"][2]["result"], "skip");
  report.checks.push_back({"clock", CheckResult::kFail, "off", "sync"});
  EXPECT_EQ(checkReportJson(report)["ok"], false);
  EXPECT_EQ(checkReportJson(report)["checks"][3]["result"], "fail");
}

TEST(CheckReportTest, ScrubSecretsReplacesEveryOccurrence) {
  const std::string secret = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  std::string text = "a " + secret + " b " + secret;
  std::string scrubbed = scrubSecrets(text, {secret, ""});
  EXPECT_EQ(scrubbed.find(secret), std::string::npos);
  EXPECT_EQ(scrubbed, "a <redacted> b <redacted>");
}

TEST(CheckClockTest, SkewThresholds) {
  EXPECT_EQ(classifyClockSkew(0s, "POD_URL").result, CheckResult::kPass);
  EXPECT_EQ(classifyClockSkew(60s, "POD_URL").result, CheckResult::kPass);
  EXPECT_EQ(classifyClockSkew(61s, "POD_URL").result, CheckResult::kWarn);
  EXPECT_EQ(classifyClockSkew(-61s, "POD_URL").result, CheckResult::kWarn);
  EXPECT_EQ(classifyClockSkew(300s, "POD_URL").result, CheckResult::kWarn);
  EXPECT_EQ(classifyClockSkew(301s, "POD_URL").result, CheckResult::kFail);
  auto behind = classifyClockSkew(-3600s, "POD_URL");
  EXPECT_EQ(behind.result, CheckResult::kFail);
  EXPECT_EQ(behind.name, "clock");
  EXPECT_NE(behind.detail.find("3600s behind POD_URL"), std::string::npos) << behind.detail;
  EXPECT_FALSE(behind.remediation.empty());
  EXPECT_TRUE(classifyClockSkew(5s, "x").remediation.empty());
}

TEST(CheckClockTest, ParsesImfFixdate) {
  auto t = parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT");
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(std::chrono::system_clock::to_time_t(*t), 784111777);
  EXPECT_FALSE(parseHttpDate("").has_value());
  EXPECT_FALSE(parseHttpDate("Sun, 06 Nov 1994 08:49:37 CET").has_value());
  EXPECT_FALSE(parseHttpDate("Sun, 06 Foo 1994 08:49:37 GMT").has_value());
  EXPECT_FALSE(parseHttpDate("Sun, 06 Nov 1994 25:49:37 GMT").has_value());
  EXPECT_FALSE(parseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT trailing").has_value());
}

TEST(CheckDiskTest, ThresholdsAndMessages) {
  DiskNeed need{uint64_t{1} << 30, uint64_t{2} << 30, "the sensor image"};
  auto low = classifyFreeSpace("disk.runtime_root", "/var/lib/docker", uint64_t{120} << 20, need);
  EXPECT_EQ(low.result, CheckResult::kFail);
  EXPECT_NE(low.remediation.find("free space on /var/lib/docker (120 MiB free, need at least 1 GiB"), std::string::npos)
      << low.remediation;
  EXPECT_NE(low.detail.find("fail below 1 GiB, warn below 2 GiB"), std::string::npos) << low.detail;
  auto middle = classifyFreeSpace("disk.runtime_root", "/var/lib/docker", uint64_t{3} << 29, need);
  EXPECT_EQ(middle.result, CheckResult::kWarn);
  EXPECT_NE(middle.detail.find("1.5 GiB"), std::string::npos) << middle.detail;
  auto plenty = classifyFreeSpace("disk.runtime_root", "/var/lib/docker", uint64_t{2} << 30, need);
  EXPECT_EQ(plenty.result, CheckResult::kPass);
  EXPECT_TRUE(plenty.remediation.empty());
}

TEST(CheckDiskTest, ContainerdLogDirNeedCoversTheCopy) {
  auto need = containerdLogDirNeed(100LL << 20);
  EXPECT_EQ(need.failBelow, uint64_t{200} << 20);
  EXPECT_EQ(need.warnBelow, uint64_t{400} << 20);
  EXPECT_EQ(containerdLogDirNeed(1 << 20).failBelow, uint64_t{64} << 20);
}

TEST(CheckDiskTest, HumanBytes) {
  EXPECT_EQ(humanBytes(0), "0 B");
  EXPECT_EQ(humanBytes(1023), "1023 B");
  EXPECT_EQ(humanBytes(uint64_t{120} << 20), "120 MiB");
  EXPECT_EQ(humanBytes(uint64_t{3} << 29), "1.5 GiB");
}

TEST(CheckCgroupTest, ClassifiesTheHierarchy) {
  EXPECT_EQ(classifyCgroup(0x63677270, false), CgroupVersion::kV2);
  EXPECT_EQ(classifyCgroup(0x01021994, false), CgroupVersion::kV1);
  EXPECT_EQ(classifyCgroup(0x01021994, true), CgroupVersion::kHybrid);
  EXPECT_EQ(classifyCgroup(0xEF53, false), CgroupVersion::kUnknown);
  EXPECT_EQ(cgroupCheckLine(CgroupVersion::kV2, "/sys/fs/cgroup").result, CheckResult::kPass);
  auto none = cgroupCheckLine(CgroupVersion::kUnknown, "/host/sys/fs/cgroup");
  EXPECT_EQ(none.result, CheckResult::kFail);
  EXPECT_NE(none.detail.find("/host/sys/fs/cgroup"), std::string::npos);
  EXPECT_FALSE(none.remediation.empty());
}

TEST(CheckProxyTest, QualysProxyWinsOverHttpsProxy) {
  Config config;
  EXPECT_EQ(podUrlProxy(config), "");
  config.sensor.proxy.httpsProxy = "http://proxy:3128";
  EXPECT_EQ(podUrlProxy(config), "http://proxy:3128");
  config.sensor.proxy.qualysHttpsProxy = "http://qualys-proxy:8080";
  EXPECT_EQ(podUrlProxy(config), "http://qualys-proxy:8080");
}

}  // namespace
}  // namespace qcs::agent

#include <gtest/gtest.h>

#include "faults/fault_report.h"

namespace qcs::faults {
namespace {

TEST(NearestRankPercentile, IsAlwaysAMeasuredValue) {
  EXPECT_EQ(nearestRankPercentile({}, 50), std::nullopt);
  EXPECT_EQ(nearestRankPercentile({7}, 50), 7);
  EXPECT_EQ(nearestRankPercentile({7}, 99), 7);
  // n = 2: p50 is rank ceil(1.0) = 1, p99 rank ceil(1.98) = 2.
  EXPECT_EQ(nearestRankPercentile({30, 10}, 50), 10);
  EXPECT_EQ(nearestRankPercentile({30, 10}, 99), 30);
  // n = 20: p50 is rank 10, p99 rank ceil(19.8) = 20.
  std::vector<double> twenty;
  for (int i = 20; i >= 1; --i) twenty.push_back(i * 100);
  EXPECT_EQ(nearestRankPercentile(twenty, 50), 1000);
  EXPECT_EQ(nearestRankPercentile(twenty, 99), 2000);
  EXPECT_EQ(nearestRankPercentile(twenty, 100), 2000);
  EXPECT_EQ(nearestRankPercentile(twenty, 5), 100);
}

TEST(NearestRankPercentile, RejectsPercentilesOutsideTheRange) {
  EXPECT_EQ(nearestRankPercentile({1, 2}, 0), std::nullopt);
  EXPECT_EQ(nearestRankPercentile({1, 2}, 100.5), std::nullopt);
  EXPECT_EQ(nearestRankPercentile({1, 2}, -3), std::nullopt);
}

FaultTally clean(const std::string& fault) {
  FaultTally t;
  t.runtime = "docker";
  t.fault = fault;
  t.injected = 2;
  t.recovered = 2;
  t.recoveryMs = {400, 800};
  return t;
}

TEST(SuitePassed, NeedsEveryInjectionRecoveredAndNothingLeaked) {
  EXPECT_FALSE(suitePassed({})) << "nothing injected proves nothing";
  EXPECT_TRUE(suitePassed({clean("a"), clean("b")}));

  auto notRecovered = clean("a");
  notRecovered.recovered = 1;
  EXPECT_FALSE(suitePassed({clean("b"), notRecovered}));
  auto duplicate = clean("a");
  duplicate.duplicates = 1;
  EXPECT_FALSE(suitePassed({duplicate}));
  auto leak = clean("a");
  leak.leaks = 1;
  EXPECT_FALSE(suitePassed({leak}));
  auto secret = clean("a");
  secret.secrets = 1;
  EXPECT_FALSE(suitePassed({secret}));
  FaultTally none;
  EXPECT_FALSE(tallyClean(none)) << "a fault never injected is not clean";
}

TEST(RenderReport, HasARowPerFaultTotalsAndTheVerdict) {
  ReportInputs inputs;
  inputs.title = "report";
  inputs.machine = {{"nproc", "2"}, {"odd|name", "a|b"}};
  inputs.settings = {{"iterations", "2"}};
  auto failing = clean("exit-1");
  failing.runtime = "containerd";
  failing.recovered = 1;
  failing.recoveryMs = {2100};
  failing.leaks = 3;
  failing.notes = {"#2: not running again within 60s"};
  const std::string text = renderReport(inputs, {clean("sensor-sigkill"), failing});

  EXPECT_NE(text.find("| nproc | 2 |"), std::string::npos) << text;
  EXPECT_NE(text.find("| odd\\|name | a\\|b |"), std::string::npos) << "pipes must not break the table";
  EXPECT_NE(text.find("| docker | sensor-sigkill | 2 | 2 | 400 | 800 | 0 | 0 | 0 | ok |"), std::string::npos) << text;
  EXPECT_NE(text.find("| containerd | exit-1 | 2 | 1 | 2100 | 2100 | 0 | 3 | 0 | **FAIL** |"), std::string::npos)
      << text;
  EXPECT_NE(text.find("| **total** | | **4** | **3** | 800 | 2100 | **0** | **3** | **0** | **FAIL** |"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("**Verdict: FAIL** - 1 of 4 injected faults did not recover"), std::string::npos) << text;
  EXPECT_NE(text.find("(containerd/exit-1)"), std::string::npos) << text;
  EXPECT_NE(text.find("- #2: not running again within 60s"), std::string::npos) << text;
}

TEST(RenderReport, APassingRunSaysSo) {
  ReportInputs inputs{"r", "", {}, {}, {}, {"docker / oom: runtime reported the OOM kill x2."}};
  const std::string text = renderReport(inputs, {clean("oom")});
  EXPECT_NE(text.find("## Observations\n\n- docker / oom: runtime reported the OOM kill x2.\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("**Verdict: PASS** - all 2 injected faults recovered"), std::string::npos) << text;
  EXPECT_EQ(text.find("## Notes"), std::string::npos);
}

TEST(RenderReport, ANotRecoveredFaultShowsNoTimes) {
  FaultTally t;
  t.runtime = "docker";
  t.fault = "two-agents";
  t.injected = 2;
  const std::string text = renderReport(ReportInputs{"r", "", {}, {}, {}, {}}, {t});
  EXPECT_NE(text.find("| docker | two-agents | 2 | 0 | - | - | 0 | 0 | 0 | **FAIL** |"), std::string::npos) << text;
}

}  // namespace
}  // namespace qcs::faults

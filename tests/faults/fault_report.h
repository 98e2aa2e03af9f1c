// The fault suite's tally and its markdown report.
//
// Contract:
// - One FaultTally per (runtime, fault). Each injection either recovered (its time to recovery is
//   kept) or did not (a note says why). Duplicates, leaks and leaked secrets are counted per
//   injection; every one of them must be 0.
// - Percentiles are nearest-rank over the recovered injections' times: the value at 1-based rank
//   ceil(p/100 * n) of the sorted times, so p50 and p99 are always times that were measured.
// - suitePassed: at least one injection, every injection recovered, no duplicate, leak or secret.
// - renderReport is pure: the same inputs give the same text.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace qcs::faults {

struct FaultTally {
  std::string runtime;
  std::string fault;
  int injected = 0;
  int recovered = 0;
  std::vector<double> recoveryMs;  // one per recovered injection
  int duplicates = 0;
  int leaks = 0;
  int secrets = 0;
  std::vector<std::string> notes;  // what went wrong, per injection ("#3: ...")
};

// nullopt for no values or a percentile outside (0, 100].
std::optional<double> nearestRankPercentile(std::vector<double> values, double percentile);

// Every injection recovered and nothing was duplicated, leaked or exposed.
bool tallyClean(const FaultTally& tally);
bool suitePassed(const std::vector<FaultTally>& tallies);

struct ReportInputs {
  std::string title;
  std::string generatedAt;  // UTC, e.g. "2024-05-01T10:00:00Z"
  std::vector<std::pair<std::string, std::string>> machine;
  std::vector<std::pair<std::string, std::string>> settings;
  std::vector<std::string> remarks;       // how faults are injected and measured, one bullet each
  std::vector<std::string> observations;  // what was seen besides the counts, one bullet each
};

// The report: machine, settings, remarks, one table row per (runtime, fault), totals, the verdict
// line, the observations, then the notes of every tally that has any.
std::string renderReport(const ReportInputs& inputs, const std::vector<FaultTally>& tallies);

}  // namespace qcs::faults

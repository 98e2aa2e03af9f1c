#include "faults/fault_report.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace qcs::faults {

namespace {

// A table cell: pipes would end the cell, newlines the row.
std::string cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n' || c == '\r') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string millis(const std::optional<double>& ms) {
  if (!ms) return "-";
  std::ostringstream out;
  out << static_cast<long long>(std::llround(*ms));
  return out.str();
}

constexpr size_t kNotesPerTally = 10;

}  // namespace

std::optional<double> nearestRankPercentile(std::vector<double> values, double percentile) {
  if (values.empty() || !(percentile > 0.0) || percentile > 100.0) return std::nullopt;
  std::sort(values.begin(), values.end());
  const double exactRank = percentile / 100.0 * static_cast<double>(values.size());
  // ceil of a product like 0.5 * 2 must stay 1, not become 2 through rounding noise.
  auto rank = static_cast<size_t>(std::ceil(exactRank - 1e-9));
  rank = std::clamp<size_t>(rank, 1, values.size());
  return values[rank - 1];
}

bool tallyClean(const FaultTally& tally) {
  return tally.injected > 0 && tally.recovered == tally.injected && tally.duplicates == 0 && tally.leaks == 0 &&
         tally.secrets == 0;
}

bool suitePassed(const std::vector<FaultTally>& tallies) {
  if (tallies.empty()) return false;
  return std::all_of(tallies.begin(), tallies.end(), tallyClean);
}

std::string renderReport(const ReportInputs& inputs, const std::vector<FaultTally>& tallies) {
  std::ostringstream out;
  out << "# " << inputs.title << "\n\n";
  if (!inputs.generatedAt.empty()) out << "Generated " << inputs.generatedAt << ".\n\n";

  out << "## Machine\n\n| | |\n|---|---|\n";
  for (const auto& [name, value] : inputs.machine) out << "| " << cell(name) << " | " << cell(value) << " |\n";
  out << "\n## Settings\n\n| | |\n|---|---|\n";
  for (const auto& [name, value] : inputs.settings) out << "| " << cell(name) << " | " << cell(value) << " |\n";
  if (!inputs.remarks.empty()) {
    out << "\n## How faults are injected and measured\n\n";
    for (const auto& remark : inputs.remarks) out << "- " << remark << "\n";
  }

  out << "\n## Results\n\n"
      << "Time to recovery in milliseconds from the injection, nearest-rank percentiles over the recovered "
         "injections.\n\n"
      << "| runtime | fault | injected | recovered | p50 ms | p99 ms | duplicates | leaks | secrets | result |\n"
      << "|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n";
  FaultTally total;
  for (const auto& t : tallies) {
    out << "| " << cell(t.runtime) << " | " << cell(t.fault) << " | " << t.injected << " | " << t.recovered << " | "
        << millis(nearestRankPercentile(t.recoveryMs, 50)) << " | " << millis(nearestRankPercentile(t.recoveryMs, 99))
        << " | " << t.duplicates << " | " << t.leaks << " | " << t.secrets << " | "
        << (tallyClean(t) ? "ok" : "**FAIL**") << " |\n";
    total.injected += t.injected;
    total.recovered += t.recovered;
    total.duplicates += t.duplicates;
    total.leaks += t.leaks;
    total.secrets += t.secrets;
    total.recoveryMs.insert(total.recoveryMs.end(), t.recoveryMs.begin(), t.recoveryMs.end());
  }
  const bool passed = suitePassed(tallies);
  out << "| **total** | | **" << total.injected << "** | **" << total.recovered << "** | "
      << millis(nearestRankPercentile(total.recoveryMs, 50)) << " | "
      << millis(nearestRankPercentile(total.recoveryMs, 99)) << " | **" << total.duplicates << "** | **" << total.leaks
      << "** | **" << total.secrets << "** | " << (passed ? "ok" : "**FAIL**") << " |\n\n";

  if (passed) {
    out << "**Verdict: PASS** - all " << total.injected
        << " injected faults recovered, with 0 duplicate sensors, 0 leaked containers or snapshots and 0 "
           "secrets seen outside the sensor.\n";
  } else {
    std::vector<std::string> failing;
    for (const auto& t : tallies) {
      if (!tallyClean(t)) failing.push_back(t.runtime + "/" + t.fault);
    }
    out << "**Verdict: FAIL** - " << (total.injected - total.recovered) << " of " << total.injected
        << " injected faults did not recover; " << total.duplicates << " duplicate sensors, " << total.leaks
        << " leaks, " << total.secrets << " secrets seen outside the sensor";
    if (!failing.empty()) {
      out << " (";
      for (size_t i = 0; i < failing.size(); ++i) out << (i ? ", " : "") << failing[i];
      out << ")";
    }
    out << ".\n";
  }

  if (!inputs.observations.empty()) {
    out << "\n## Observations\n\n";
    for (const auto& observation : inputs.observations) out << "- " << observation << "\n";
  }

  bool anyNotes = false;
  for (const auto& t : tallies) anyNotes = anyNotes || !t.notes.empty();
  if (anyNotes) {
    out << "\n## Notes\n";
    for (const auto& t : tallies) {
      if (t.notes.empty()) continue;
      out << "\n### " << t.runtime << " / " << t.fault << "\n\n";
      for (size_t i = 0; i < t.notes.size() && i < kNotesPerTally; ++i) out << "- " << t.notes[i] << "\n";
      if (t.notes.size() > kNotesPerTally) {
        out << "- ... and " << (t.notes.size() - kNotesPerTally) << " more (see the suite's output)\n";
      }
    }
  }
  return out.str();
}

}  // namespace qcs::faults

// Prometheus text exposition format 0.0.4, written straight into one std::string.
//
// Contract:
// - serializeTextFormat() renders what prometheus::Registry::Collect() returns (counter, gauge,
//   histogram, summary and untyped families) and is a drop-in for prometheus::TextSerializer: the
//   same families, lines and label order; it exists because that serializer goes through an ostream
//   and printf, which cost most of a scrape.
// - Per family: "# HELP name text" when the help is not empty (text escapes \ and newline), then
//   "# TYPE name type", then the samples. A family without samples keeps its HELP and TYPE lines.
// - Histograms: every bucket as name_bucket{...,le="bound"} with its cumulative count, a
//   le="+Inf" bucket holding the sample count when the buckets do not end with one, then _sum and
//   _count. Summaries: name{...,quantile="q"} per quantile, then _sum and _count.
// - Label values escape \, " and newline; other bytes (UTF-8 included) pass through unchanged.
// - Numbers: appendSampleValue(). A timestamp follows the value when timestamp_ms is not 0.
// - The output is reserved once from an upper bound computed over the input, so rendering does not
//   reallocate.
#pragma once

#include <prometheus/metric_family.h>

#include <string>
#include <vector>

namespace qcs::agent {

std::string serializeTextFormat(const std::vector<prometheus::MetricFamily>& families);

// Appends to `out` (reserving room for the families first).
void appendTextFormat(const std::vector<prometheus::MetricFamily>& families, std::string& out);

// A sample value the way Prometheus parses it back to the same double: NaN, +Inf, -Inf; an
// integral value below 1e21 in magnitude as plain digits ("-0" keeps its sign); anything else in
// the shortest form that round-trips (std::to_chars), e.g. 0.1, 1e-09, 1e+21.
void appendSampleValue(double value, std::string& out);

}  // namespace qcs::agent

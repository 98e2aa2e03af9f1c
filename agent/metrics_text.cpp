#include "agent/metrics_text.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string_view>

namespace qcs::agent {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Longest spellings: a shortest round-trip double is at most 24 characters
// ("-2.2250738585072014e-308"), an integral one below 1e21 at most 22, an int64 timestamp 20.
constexpr size_t kMaxNumberChars = 32;

// The fixed parts of a sample line: "_bucket" suffix, '{', '}', ',', ' ' before value and
// timestamp, newline.
constexpr size_t kLineOverhead = 16;

const char* typeName(MetricType type) {
  switch (type) {
    case MetricType::Counter: return "counter";
    case MetricType::Gauge: return "gauge";
    case MetricType::Summary: return "summary";
    case MetricType::Untyped: return "untyped";
    case MetricType::Histogram: return "histogram";
  }
  // Only reachable with a value outside the enum (a newer prometheus-cpp type this code does not
  // know): the compiler's -Wswitch flags such an addition above, and Prometheus treats untyped
  // samples as gauges, which is the safest reading.
  return "untyped";
}

// Appends `text` with backslash, newline (as \n) and, when `escapeQuote`, '"' escaped. Runs of
// plain bytes are copied whole: label values rarely hold anything to escape.
void appendEscaped(std::string_view text, bool escapeQuote, std::string& out) {
  size_t runStart = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c != '\\' && c != '\n' && (c != '"' || !escapeQuote)) continue;
    out.append(text.data() + runStart, i - runStart);
    out += '\\';
    out += c == '\n' ? 'n' : c;
    runStart = i + 1;
  }
  out.append(text.data() + runStart, text.size() - runStart);
}

// Writes appendSampleValue()'s spelling of `value` at `first` (room for kMaxNumberChars) and
// returns its end.
char* writeSampleValue(double value, char* first) {
  char* const last = first + kMaxNumberChars;
  const auto literal = [first](std::string_view text) { return std::copy(text.begin(), text.end(), first); };
  if (std::isnan(value)) return literal("NaN");
  if (std::isinf(value)) return literal(value > 0 ? "+Inf" : "-Inf");
  std::to_chars_result result{};
  // Integral values (counters, byte counts, timestamps in seconds) read best as plain digits; the
  // shortest form would write 1000000 as 1e+06. At 1e21 and above plain digits only get long.
  if (value == std::trunc(value) && std::fabs(value) < 1e21) {
    if (value == 0 && std::signbit(value)) return literal("-0");
    // 2^63 is exact as a double; below it every integral double fits an int64 exactly.
    if (std::fabs(value) < 0x1p63) {
      result = std::to_chars(first, last, static_cast<int64_t>(value));
    } else {
      result = std::to_chars(first, last, value, std::chars_format::fixed);
    }
  } else {
    result = std::to_chars(first, last, value);
  }
  assert(result.ec == std::errc());
  return result.ptr;
}

void appendInteger(std::integral auto value, std::string& out) {
  char buffer[kMaxNumberChars];
  const auto [end, ec] = std::to_chars(buffer, buffer + sizeof buffer, value);
  assert(ec == std::errc());
  out.append(buffer, end);
}

// Writes "name<suffix>{labels[,extraName="extraValue"]} " (no braces when there is no label).
// extraValue is already in its final spelling and needs no escaping (a number or +Inf).
void appendSeries(const MetricFamily& family, const ClientMetric& metric, std::string_view suffix,
                  std::string_view extraName, std::string_view extraValue, std::string& out) {
  out += family.name;
  out += suffix;
  if (!metric.label.empty() || !extraName.empty()) {
    out += '{';
    bool first = true;
    for (const ClientMetric::Label& label : metric.label) {
      if (!first) out += ',';
      first = false;
      out += label.name;
      out += "=\"";
      appendEscaped(label.value, /*escapeQuote=*/true, out);
      out += '"';
    }
    if (!extraName.empty()) {
      if (!first) out += ',';
      out += extraName;
      out += "=\"";
      out += extraValue;
      out += '"';
    }
    out += '}';
  }
  out += ' ';
}

void appendTail(const ClientMetric& metric, std::string& out) {
  if (metric.timestamp_ms != 0) {
    out += ' ';
    appendInteger(metric.timestamp_ms, out);
  }
  out += '\n';
}

void appendDoubleSample(const MetricFamily& family, const ClientMetric& metric, std::string_view suffix, double value,
                        std::string& out) {
  appendSeries(family, metric, suffix, {}, {}, out);
  appendSampleValue(value, out);
  appendTail(metric, out);
}

void appendCountSample(const MetricFamily& family, const ClientMetric& metric, std::string_view suffix,
                       std::string_view extraName, std::string_view extraValue, uint64_t count, std::string& out) {
  appendSeries(family, metric, suffix, extraName, extraValue, out);
  appendInteger(count, out);
  appendTail(metric, out);
}

void appendHistogram(const MetricFamily& family, const ClientMetric& metric, std::string& out) {
  const ClientMetric::Histogram& histogram = metric.histogram;
  char bound[kMaxNumberChars];
  bool endsWithInf = false;
  for (const ClientMetric::Bucket& bucket : histogram.bucket) {
    const std::string_view le(bound, writeSampleValue(bucket.upper_bound, bound) - bound);
    appendCountSample(family, metric, "_bucket", "le", le, bucket.cumulative_count, out);
    endsWithInf = std::isinf(bucket.upper_bound) && bucket.upper_bound > 0;
  }
  // Prometheus needs the +Inf bucket to compute quantiles; it always equals the sample count.
  if (!endsWithInf) appendCountSample(family, metric, "_bucket", "le", "+Inf", histogram.sample_count, out);
  appendDoubleSample(family, metric, "_sum", histogram.sample_sum, out);
  appendCountSample(family, metric, "_count", {}, {}, histogram.sample_count, out);
}

void appendSummary(const MetricFamily& family, const ClientMetric& metric, std::string& out) {
  const ClientMetric::Summary& summary = metric.summary;
  char quantile[kMaxNumberChars];
  for (const ClientMetric::Quantile& q : summary.quantile) {
    const std::string_view text(quantile, writeSampleValue(q.quantile, quantile) - quantile);
    appendSeries(family, metric, {}, "quantile", text, out);
    appendSampleValue(q.value, out);
    appendTail(metric, out);
  }
  appendDoubleSample(family, metric, "_sum", summary.sample_sum, out);
  appendCountSample(family, metric, "_count", {}, {}, summary.sample_count, out);
}

void appendFamily(const MetricFamily& family, std::string& out) {
  if (!family.help.empty()) {
    out += "# HELP ";
    out += family.name;
    out += ' ';
    appendEscaped(family.help, /*escapeQuote=*/false, out);
    out += '\n';
  }
  out += "# TYPE ";
  out += family.name;
  out += ' ';
  out += typeName(family.type);
  out += '\n';
  for (const ClientMetric& metric : family.metric) {
    switch (family.type) {
      case MetricType::Counter: appendDoubleSample(family, metric, {}, metric.counter.value, out); break;
      case MetricType::Gauge: appendDoubleSample(family, metric, {}, metric.gauge.value, out); break;
      case MetricType::Untyped: appendDoubleSample(family, metric, {}, metric.untyped.value, out); break;
      case MetricType::Histogram: appendHistogram(family, metric, out); break;
      case MetricType::Summary: appendSummary(family, metric, out); break;
    }
  }
}

// An upper bound of what appendFamily writes: every escapable byte counted twice, every number at
// its longest.
size_t sizeBound(const MetricFamily& family) {
  size_t size = 2 * (family.name.size() + 16) + 2 * family.help.size();
  for (const ClientMetric& metric : family.metric) {
    size_t labels = 0;
    for (const ClientMetric::Label& label : metric.label) labels += label.name.size() + 2 * label.value.size() + 4;
    // One line per value: the extra label ("le" or "quantile") and its number included.
    const size_t line = family.name.size() + labels + 2 * kMaxNumberChars + sizeof("quantile=\"\"") + kLineOverhead;
    size_t lines = 1;
    if (family.type == MetricType::Histogram) lines = metric.histogram.bucket.size() + 3;
    if (family.type == MetricType::Summary) lines = metric.summary.quantile.size() + 2;
    size += lines * (line + kMaxNumberChars);
  }
  return size;
}

}  // namespace

void appendSampleValue(double value, std::string& out) {
  char buffer[kMaxNumberChars];
  out.append(buffer, writeSampleValue(value, buffer));
}

void appendTextFormat(const std::vector<prometheus::MetricFamily>& families, std::string& out) {
  size_t bound = out.size();
  for (const MetricFamily& family : families) bound += sizeBound(family);
  out.reserve(bound);
  for (const MetricFamily& family : families) appendFamily(family, out);
}

std::string serializeTextFormat(const std::vector<prometheus::MetricFamily>& families) {
  std::string out;
  appendTextFormat(families, out);
  return out;
}

}  // namespace qcs::agent

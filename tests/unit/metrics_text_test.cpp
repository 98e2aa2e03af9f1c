// The text-format serializer (agent/metrics_text.h) against prometheus::TextSerializer, the one it
// replaces: byte for byte where both spell every number alike, sample for sample otherwise (the
// reference writes 16 significant digits and "Nan", and orders a histogram's lines differently);
// its own spellings of numbers; and that every value it prints parses back to the same double.
#include "agent/metrics_text.h"

#include <gtest/gtest.h>
#include <prometheus/text_serializer.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "agent/metrics.h"
#include "agent/supervisor.h"

namespace qcs::agent {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- A small parser of the text format, strict enough to fail on malformed output. ----

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // unescaped, in the written order
  std::string valueText;
  double value = 0;
  std::string timestamp;  // "" when absent
};

struct ParsedFamily {
  std::string name;
  std::string help;  // unescaped when the writer escapes HELP, as written otherwise
  bool hasHelp = false;
  std::string type;
  std::vector<Sample> samples;
};

std::optional<double> parseValue(const std::string& text) {
  // Go's strconv.ParseFloat, which Prometheus uses, takes these spellings case-insensitively.
  if (text == "NaN" || text == "Nan") return kNaN;
  if (text == "+Inf") return kInf;
  if (text == "-Inf") return -kInf;
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return std::nullopt;
  return value;
}

std::string unescape(const std::string& text, bool allowQuote) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    EXPECT_LT(i + 1, text.size()) << "dangling backslash in " << text;
    if (i + 1 >= text.size()) break;
    const char next = text[++i];
    if (next == 'n') {
      out += '\n';
    } else if (next == '\\' || (allowQuote && next == '"')) {
      out += next;
    } else {
      ADD_FAILURE() << "unknown escape \\" << next << " in " << text;
    }
  }
  return out;
}

// Parses one sample line; records a test failure and returns nullopt when it is malformed.
std::optional<Sample> parseSample(const std::string& line) {
  Sample sample;
  size_t pos = line.find_first_of("{ ");
  if (pos == std::string::npos) {
    ADD_FAILURE() << "no value: " << line;
    return std::nullopt;
  }
  sample.name = line.substr(0, pos);
  if (line[pos] == '{') {
    ++pos;
    while (pos < line.size() && line[pos] != '}') {
      const size_t eq = line.find("=\"", pos);
      if (eq == std::string::npos) {
        ADD_FAILURE() << "bad label at " << pos << ": " << line;
        return std::nullopt;
      }
      const std::string name = line.substr(pos, eq - pos);
      size_t end = eq + 2;
      while (end < line.size() && line[end] != '"') end += line[end] == '\\' ? 2 : 1;
      if (end >= line.size()) {
        ADD_FAILURE() << "unterminated label value: " << line;
        return std::nullopt;
      }
      sample.labels.emplace_back(name, unescape(line.substr(eq + 2, end - eq - 2), true));
      pos = end + 1;
      if (pos < line.size() && line[pos] == ',') ++pos;
    }
    if (pos >= line.size()) {
      ADD_FAILURE() << "unterminated labels: " << line;
      return std::nullopt;
    }
    ++pos;  // '}'
  }
  if (pos >= line.size() || line[pos] != ' ') {
    ADD_FAILURE() << "no space before the value: " << line;
    return std::nullopt;
  }
  const std::string rest = line.substr(pos + 1);
  const size_t space = rest.find(' ');
  sample.valueText = rest.substr(0, space);
  if (space != std::string::npos) sample.timestamp = rest.substr(space + 1);
  const auto value = parseValue(sample.valueText);
  if (!value) {
    ADD_FAILURE() << "value does not parse: " << line;
    return std::nullopt;
  }
  sample.value = *value;
  return sample;
}

std::vector<ParsedFamily> parseExposition(const std::string& text, bool helpEscaped) {
  std::vector<ParsedFamily> families;
  EXPECT_TRUE(text.empty() || text.back() == '\n') << "the last line ends with a newline";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# HELP ", 0) == 0) {
      const size_t space = line.find(' ', 7);
      ParsedFamily family;
      family.name = line.substr(7, space - 7);
      family.hasHelp = true;
      const std::string help = space == std::string::npos ? "" : line.substr(space + 1);
      family.help = helpEscaped ? unescape(help, false) : help;
      families.push_back(family);
    } else if (line.rfind("# TYPE ", 0) == 0) {
      const size_t space = line.find(' ', 7);
      const std::string name = line.substr(7, space - 7);
      if (families.empty() || families.back().name != name || !families.back().type.empty()) {
        families.emplace_back();
        families.back().name = name;
      }
      families.back().type = line.substr(space + 1);
    } else {
      auto sample = parseSample(line);
      if (!sample) continue;
      if (families.empty()) {
        ADD_FAILURE() << "sample before any TYPE line: " << line;
        continue;
      }
      ParsedFamily& family = families.back();
      const bool compound = family.type == "histogram" || family.type == "summary";
      const bool named = sample->name == family.name ||
                         (compound && (sample->name == family.name + "_sum" || sample->name == family.name + "_count" ||
                                       (family.type == "histogram" && sample->name == family.name + "_bucket")));
      EXPECT_TRUE(named) << sample->name << " under family " << family.name;
      family.samples.push_back(*sample);
    }
  }
  return families;
}

// A sample's identity: name and labels, with le and quantile compared as numbers (their spelling is
// a number's spelling, which legitimately differs).
std::string seriesKey(const Sample& sample) {
  std::string key = sample.name + "{";
  for (const auto& [name, value] : sample.labels) {
    std::string canonical = value;
    if (name == "le" || name == "quantile") {
      const auto number = parseValue(value);
      EXPECT_TRUE(number) << name << "=\"" << value << "\" is not a number";
      char buffer[40];
      std::snprintf(buffer, sizeof buffer, "%.16g", number.value_or(0));
      canonical = buffer;
    }
    key += name + "=" + canonical + ",";
  }
  return key + "}";
}

std::string printed16(double value) {
  char buffer[40];
  std::snprintf(buffer, sizeof buffer, "%.16g", value);
  return buffer;
}

// Ours must be the exact value; the reference prints 16 significant digits, so it may hold that
// value rounded (0.30000000000000004 as 0.3).
bool sameValue(const Sample& ours, const Sample& reference) {
  if (std::isnan(ours.value) || std::isnan(reference.value))
    return std::isnan(ours.value) && std::isnan(reference.value);
  if (ours.value == reference.value) return std::signbit(ours.value) == std::signbit(reference.value);
  return reference.valueText == printed16(ours.value);
}

struct Comparison {
  size_t samples = 0;
  size_t roundedByReference = 0;  // samples where only the 16-digit rounding made them differ
};

// Sample-for-sample equality of two expositions: the same families in the same order with the same
// help and type, and the same set of series with the same values and timestamps.
Comparison expectSameSamples(const std::string& oursText, const std::string& theirsText) {
  Comparison comparison;
  const auto oursParsed = parseExposition(oursText, /*helpEscaped=*/true);
  const auto referenceParsed = parseExposition(theirsText, /*helpEscaped=*/false);
  EXPECT_EQ(oursParsed.size(), referenceParsed.size());
  for (size_t i = 0; i < std::min(oursParsed.size(), referenceParsed.size()); ++i) {
    const ParsedFamily& a = oursParsed[i];
    const ParsedFamily& b = referenceParsed[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.type, b.type) << a.name;
    EXPECT_EQ(a.hasHelp, b.hasHelp) << a.name;
    EXPECT_EQ(a.help, b.help) << a.name;
    std::map<std::string, const Sample*> oursByKey;
    std::map<std::string, const Sample*> referenceByKey;
    for (const Sample& s : a.samples) EXPECT_TRUE(oursByKey.emplace(seriesKey(s), &s).second) << "twice: " << s.name;
    for (const Sample& s : b.samples) referenceByKey.emplace(seriesKey(s), &s);
    EXPECT_EQ(a.samples.size(), b.samples.size()) << a.name;
    for (const auto& [key, reference] : referenceByKey) {
      auto it = oursByKey.find(key);
      if (it == oursByKey.end()) {
        ADD_FAILURE() << "missing series " << key;
        continue;
      }
      const Sample& mine = *it->second;
      ++comparison.samples;
      EXPECT_TRUE(sameValue(mine, *reference))
          << key << ": ours " << mine.valueText << ", reference " << reference->valueText;
      if (mine.value != reference->value && !std::isnan(mine.value)) ++comparison.roundedByReference;
      EXPECT_EQ(mine.timestamp, reference->timestamp) << key;
      // Our line order: buckets in the given order; in a family's series, label order as given.
      EXPECT_EQ(mine.labels.size(), reference->labels.size()) << key;
    }
  }
  return comparison;
}

// The value of a series by seriesKey(); nullopt when absent, so a missing series never reads as 0.
std::optional<double> valueOf(const std::map<std::string, double>& series, const std::string& key) {
  auto it = series.find(key);
  if (it == series.end()) return std::nullopt;
  return it->second;
}

std::string referenceText(const std::vector<MetricFamily>& families) {
  return prometheus::TextSerializer().Serialize(families);
}

std::string spelled(double value) {
  std::string out;
  appendSampleValue(value, out);
  return out;
}

MetricFamily makeFamily(std::string name, std::string help, MetricType type) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

ClientMetric labelled(std::vector<ClientMetric::Label> labels) {
  ClientMetric metric;
  metric.label = std::move(labels);
  return metric;
}

ClientMetric gaugeOf(double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric metric = labelled(std::move(labels));
  metric.gauge.value = value;
  return metric;
}

ClientMetric counterOf(double value, std::vector<ClientMetric::Label> labels = {}) {
  ClientMetric metric = labelled(std::move(labels));
  metric.counter.value = value;
  return metric;
}

// ---- Number spellings ----

TEST(MetricsTextTest, SpellsNumbersAsPrometheusParsesThem) {
  EXPECT_EQ(spelled(0.0), "0");
  EXPECT_EQ(spelled(-0.0), "-0");
  EXPECT_EQ(spelled(1), "1");
  EXPECT_EQ(spelled(-137), "-137");
  EXPECT_EQ(spelled(1e6), "1000000") << "integral values without an exponent";
  EXPECT_EQ(spelled(1'800'000'000), "1800000000");
  EXPECT_EQ(spelled(9007199254740993.0), "9007199254740992") << "2^53+1 is 2^53 as a double";
  EXPECT_EQ(spelled(9007199254740994.0), "9007199254740994");
  EXPECT_EQ(spelled(0x1p63), "9223372036854775808");
  EXPECT_EQ(spelled(-0x1p63), "-9223372036854775808");
  EXPECT_EQ(spelled(1e20), "100000000000000000000");
  EXPECT_EQ(spelled(1e21), "1e+21") << "plain digits only below 1e21";
  EXPECT_EQ(spelled(1.5e300), "1.5e+300");
  EXPECT_EQ(spelled(1e-9), "1e-09");
  EXPECT_EQ(spelled(0.001), "0.001");
  EXPECT_EQ(spelled(2.5), "2.5");
  EXPECT_EQ(spelled(0.1 + 0.2), "0.30000000000000004") << "shortest form that round-trips";
  EXPECT_EQ(spelled(std::numeric_limits<double>::max()), "1.7976931348623157e+308");
  EXPECT_EQ(spelled(std::numeric_limits<double>::denorm_min()), "5e-324");
  EXPECT_EQ(spelled(kNaN), "NaN");
  EXPECT_EQ(spelled(kInf), "+Inf");
  EXPECT_EQ(spelled(-kInf), "-Inf");
}

// Every value printed parses back (strtod, as Prometheus's ParseFloat) to the very same double.
TEST(MetricsTextTest, EveryPrintedValueParsesBackToTheSameDouble) {
  std::vector<double> values = {0.0,
                                -0.0,
                                1e-9,
                                1e21,
                                9007199254740993.0,
                                0x1p53 - 1,
                                0x1p63,
                                0x1p63 - 1024,
                                0x1p64,
                                std::nextafter(1e21, 0.0),
                                0.1,
                                0.1 + 0.2,
                                1.0 / 3,
                                2.0 / 3,
                                123456.789,
                                -2.5e-5,
                                std::numeric_limits<double>::max(),
                                std::numeric_limits<double>::lowest(),
                                std::numeric_limits<double>::min(),
                                std::numeric_limits<double>::denorm_min(),
                                std::numeric_limits<double>::epsilon(),
                                kInf,
                                -kInf};
  for (int exponent = -320; exponent <= 308; ++exponent) {
    const double power = std::pow(10.0, exponent);
    values.insert(values.end(), {power, std::nextafter(power, 0.0), std::nextafter(power, kInf), -power});
  }
  // Bit patterns from a fixed splitmix64 sequence: every exponent and mantissa shape, the same each run.
  uint64_t state = 0x9e3779b97f4a7c15ULL;
  for (int i = 0; i < 100000; ++i) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    const double value = std::bit_cast<double>(z);
    if (!std::isnan(value)) values.push_back(value);
    values.push_back(static_cast<double>(z >> (i % 64)));  // integers of every magnitude
  }
  size_t failures = 0;
  for (double value : values) {
    const std::string text = spelled(value);
    char* end = nullptr;
    const double back = std::strtod(text.c_str(), &end);
    const bool same =
        end == text.c_str() + text.size() && std::bit_cast<uint64_t>(back) == std::bit_cast<uint64_t>(value);
    if (!same && ++failures <= 10) ADD_FAILURE() << text << " parses back as " << back;
    if (value == std::trunc(value) && std::fabs(value) < 1e21) {
      EXPECT_EQ(text.find_first_of("e."), std::string::npos) << text << ": integral, so plain digits";
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << values.size();
  EXPECT_TRUE(std::isnan(std::strtod(spelled(kNaN).c_str(), nullptr)));
}

// ---- Whole expositions ----

TEST(MetricsTextTest, WritesHistogramsSummariesUntypedAndTimestampsInTheTextFormat) {
  MetricFamily histogram = makeFamily("h_seconds", "Help with \\ and a\nnewline", MetricType::Histogram);
  ClientMetric observed = labelled({{"op", "a"}});
  observed.histogram.sample_count = 3;
  observed.histogram.sample_sum = 1.5;
  observed.histogram.bucket = {{1, 0.5}, {3, 1}};  // no +Inf bucket: the serializer adds it
  histogram.metric.push_back(observed);
  ClientMetric empty;  // no labels, no observations, prometheus-cpp's +Inf bucket included
  empty.histogram.bucket = {{0, 0.25}, {0, kInf}};
  histogram.metric.push_back(empty);

  MetricFamily summary = makeFamily("s", "", MetricType::Summary);
  ClientMetric quantiles = labelled({{"k", "v"}});
  quantiles.summary.sample_count = 2;
  quantiles.summary.sample_sum = 3.25;
  quantiles.summary.quantile = {{0.5, 1}, {0.99, kNaN}};
  summary.metric.push_back(quantiles);

  MetricFamily untyped = makeFamily("u", "plain", MetricType::Untyped);
  ClientMetric stamped;
  stamped.untyped.value = -0.0;
  stamped.timestamp_ms = 1'700'000'000'123;
  untyped.metric.push_back(stamped);

  MetricFamily noSamples = makeFamily("nothing_total", "Never incremented", MetricType::Counter);

  std::string out = "prefix\n";
  appendTextFormat({histogram, summary, untyped, noSamples}, out);
  EXPECT_EQ(out,
            "prefix\n"
            "# HELP h_seconds Help with \\\\ and a\\nnewline\n"
            "# TYPE h_seconds histogram\n"
            "h_seconds_bucket{op=\"a\",le=\"0.5\"} 1\n"
            "h_seconds_bucket{op=\"a\",le=\"1\"} 3\n"
            "h_seconds_bucket{op=\"a\",le=\"+Inf\"} 3\n"
            "h_seconds_sum{op=\"a\"} 1.5\n"
            "h_seconds_count{op=\"a\"} 3\n"
            "h_seconds_bucket{le=\"0.25\"} 0\n"
            "h_seconds_bucket{le=\"+Inf\"} 0\n"
            "h_seconds_sum 0\n"
            "h_seconds_count 0\n"
            "# TYPE s summary\n"
            "s{k=\"v\",quantile=\"0.5\"} 1\n"
            "s{k=\"v\",quantile=\"0.99\"} NaN\n"
            "s_sum{k=\"v\"} 3.25\n"
            "s_count{k=\"v\"} 2\n"
            "# HELP u plain\n"
            "# TYPE u untyped\n"
            "u -0 1700000000123\n"
            "# HELP nothing_total Never incremented\n"
            "# TYPE nothing_total counter\n");
  EXPECT_EQ(serializeTextFormat({}), "");
}

TEST(MetricsTextTest, ByteForByteWithTextSerializerWhereBothSpellNumbersAlike) {
  MetricFamily gauges = makeFamily("g", "Awkward labels", MetricType::Gauge);
  gauges.metric = {gaugeOf(0, {{"a", "quote \" here"}}),
                   gaugeOf(-0.0, {{"a", "back\\slash"}}),
                   gaugeOf(1e-9, {{"a", "new\nline"}}),
                   gaugeOf(1e21, {{"a", "\xc3\xa9t\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x90\xb3"}}),
                   gaugeOf(9007199254740993.0, {{"a", "\\\"\n\\\\"}, {"b", ""}}),
                   gaugeOf(kInf, {{"a", "}{,="}}),
                   gaugeOf(-kInf, {{"a", "# HELP not a comment"}}),
                   gaugeOf(2.5),
                   gaugeOf(-137)};
  gauges.metric.back().timestamp_ms = -5;
  MetricFamily counters = makeFamily("c_total", "Counts", MetricType::Counter);
  counters.metric = {counterOf(0x1p53, {{"x", "y"}}), counterOf(123456789012345), counterOf(1e300)};
  counters.metric[1].timestamp_ms = 1'700'000'000'000;
  MetricFamily empty = makeFamily("empty_total", "", MetricType::Counter);
  const std::vector<MetricFamily> families = {gauges, counters, empty};
  EXPECT_EQ(serializeTextFormat(families), referenceText(families));
}

TEST(MetricsTextTest, SampleForSampleWithTextSerializerOnAwkwardFamilies) {
  std::vector<MetricFamily> families;
  MetricFamily values = makeFamily("v", "Values", MetricType::Gauge);
  const double specials[] = {0,    -0.0,   1e-9,   1e21, 9007199254740993.0, kNaN, kInf, -kInf, 0.1 + 0.2,
                             1e16, 1.8e19, 1e-300, 0.055};
  for (double value : specials) values.metric.push_back(gaugeOf(value, {{"v", spelled(value)}}));
  families.push_back(values);

  MetricFamily huge = makeFamily("huge_total", "Huge counters", MetricType::Counter);
  huge.metric = {counterOf(0x1p64, {{"n", "2^64"}}), counterOf(1e300, {{"n", "1e300"}}),
                 counterOf(std::numeric_limits<double>::max(), {{"n", "max"}})};
  families.push_back(huge);

  MetricFamily histograms = makeFamily("lat_seconds", "Latency", MetricType::Histogram);
  ClientMetric none = labelled({{"op", "quiet \"one\""}});
  none.histogram.bucket = {{0, 0.005}, {0, 0.1}, {0, 1}, {0, kInf}};
  ClientMetric some = labelled({{"op", "busy\\one\n"}});
  some.histogram.sample_count = std::numeric_limits<uint64_t>::max();
  some.histogram.sample_sum = 0.1 + 0.2;
  some.histogram.bucket = {{7, 1e-9}, {9, 0.1 + 0.2}, {std::numeric_limits<uint64_t>::max(), kInf}};
  ClientMetric noBuckets = labelled({{"op", "none"}});
  noBuckets.histogram.sample_count = 4;
  noBuckets.histogram.sample_sum = 8;
  noBuckets.timestamp_ms = 42;
  histograms.metric = {none, some, noBuckets};
  families.push_back(histograms);

  MetricFamily summaries = makeFamily("rpc_seconds", "", MetricType::Summary);
  ClientMetric summary = labelled({{"svc", "\xe6\x97\xa5\xe6\x9c\xac"}});
  summary.summary.sample_count = 10;
  summary.summary.sample_sum = 1e21;
  summary.summary.quantile = {{0.5, 0.25}, {0.9, kNaN}, {0.99, 1.0 / 3}};
  summaries.metric = {summary};
  families.push_back(summaries);

  MetricFamily untyped = makeFamily("raw", "Untyped", MetricType::Untyped);
  untyped.metric = {labelled({})};
  untyped.metric[0].untyped.value = -1e-9;
  families.push_back(untyped);
  families.push_back(makeFamily("empty_gauge", "No series", MetricType::Gauge));
  families.push_back(makeFamily("empty_histogram", "", MetricType::Histogram));

  const Comparison comparison = expectSameSamples(serializeTextFormat(families), referenceText(families));
  EXPECT_EQ(comparison.samples, 13u + 3 + (5 + 6 + 3) + 5 + 1);
  // Values that need 17 digits, which the reference rounds to 16: 0.1+0.2 as a gauge and as a
  // histogram sum, 2^64, and the largest double (whose 16-digit spelling even parses as +Inf).
  EXPECT_EQ(comparison.roundedByReference, 4u);
}

// The agent's own registry, filled as BM_RenderMetrics fills it. Metrics keeps its registry
// private, so the families are rebuilt from what render() wrote and serialized again by
// TextSerializer; independent checks below tie the rendered values to the inputs.
std::vector<MetricFamily> rebuildFamilies(const std::string& text) {
  std::vector<MetricFamily> families;
  for (const ParsedFamily& parsed : parseExposition(text, /*helpEscaped=*/true)) {
    MetricFamily family;
    family.name = parsed.name;
    family.help = parsed.help;
    const std::map<std::string, MetricType> types = {{"counter", MetricType::Counter},
                                                     {"gauge", MetricType::Gauge},
                                                     {"histogram", MetricType::Histogram},
                                                     {"summary", MetricType::Summary},
                                                     {"untyped", MetricType::Untyped}};
    family.type = types.at(parsed.type);
    for (const Sample& sample : parsed.samples) {
      std::vector<ClientMetric::Label> labels;
      std::optional<double> le;
      for (const auto& [name, value] : sample.labels) {
        if (name == "le") {
          le = parseValue(value);
        } else {
          labels.push_back({name, value});
        }
      }
      // A histogram's lines for one label set share one ClientMetric.
      ClientMetric* metric = nullptr;
      for (ClientMetric& existing : family.metric) {
        if (existing.label == labels) metric = &existing;
      }
      if (metric == nullptr || family.type != MetricType::Histogram) {
        family.metric.push_back(labelled(labels));
        metric = &family.metric.back();
      }
      if (family.type == MetricType::Counter) metric->counter.value = sample.value;
      if (family.type == MetricType::Gauge) metric->gauge.value = sample.value;
      if (family.type == MetricType::Histogram) {
        if (le) metric->histogram.bucket.push_back({static_cast<uint64_t>(sample.value), *le});
        if (sample.name == parsed.name + "_sum") metric->histogram.sample_sum = sample.value;
        if (sample.name == parsed.name + "_count") metric->histogram.sample_count = static_cast<uint64_t>(sample.value);
      }
    }
    families.push_back(family);
  }
  return families;
}

TEST(MetricsTextTest, TheAgentRegistryMatchesTextSerializer) {
  Metrics metrics("1.2.3 \"beta\"", "abc\\def");
  const char* ops[] = {"inspect", "create", "start", "remove", "stats", "events"};
  for (const char* op : ops) {
    for (int i = 0; i < 10; ++i) metrics.runtimeCall("docker", op, 0.001 * (i + 1), i == 9);
  }
  platform::PlatformInfo node;
  node.cloud = "aws";
  node.orchestrator = "ecs";
  node.region = "eu-west-1";
  node.cluster = "prod \"blue\"\n";
  metrics.setPlatform(node);
  SupervisorStatus status;
  status.runtimeKind = "docker";
  status.runtimeUp = true;
  status.state = SensorState::kRunning;
  status.containerId = "4f1c3b2a9e8d";
  status.restarts[RestartReason::kExit] = 3;
  status.lastExitCode = 137;
  status.sensorStartedAt = WallTime(std::chrono::milliseconds(1'800'000'000'500));
  status.pullsSucceeded = 1;
  status.lastPullSeconds = 2.5;
  status.statsContainerId = status.containerId;
  status.sensorCpuSeconds = 12.5;
  status.sensorMemoryBytes = 200 << 20;
  const std::string text = metrics.render(status);

  const auto families = rebuildFamilies(text);
  const Comparison comparison = expectSameSamples(text, referenceText(families));
  // 6 ops x (14 buckets, _sum, _count) + 6 error counters; the pull histogram's 11 buckets, _sum,
  // _count; 6 restart reasons, 2 pull results, 6 process_* and 12 single series; one per state.
  EXPECT_EQ(comparison.samples, 6 * 16 + 6 + 13 + 6 + 2 + 6 + 12 + std::size(kAllSensorStates));

  // The rendered values against the inputs, so the comparison above compares the right thing.
  std::map<std::string, double> series;
  size_t familyCount = 0;
  for (const ParsedFamily& family : parseExposition(text, true)) {
    ++familyCount;
    for (const Sample& sample : family.samples) series[seriesKey(sample)] = sample.value;
  }
  EXPECT_EQ(familyCount, families.size());
  EXPECT_EQ(familyCount, 24u) << "every family Metrics registers";
  EXPECT_EQ(valueOf(series, "qcs_agent_build_info{revision=abc\\def,version=1.2.3 \"beta\",}"), 1) << text;
  EXPECT_EQ(
      valueOf(series, "qcs_agent_info{cloud=aws,cluster=prod \"blue\"\n,orchestrator=ecs,region=eu-west-1,zone=,}"), 1);
  EXPECT_EQ(valueOf(series, "qcs_sensor_restarts_total{reason=exit,}"), 3);
  EXPECT_EQ(valueOf(series, "qcs_sensor_last_exit_code{}"), 137);
  EXPECT_EQ(valueOf(series, "qcs_sensor_start_time_seconds{}"), 1'800'000'000.5);
  EXPECT_EQ(valueOf(series, "qcs_sensor_memory_bytes{}"), 200 << 20);
  EXPECT_EQ(valueOf(series, "qcs_image_pull_duration_seconds_sum{}"), 2.5);
  EXPECT_EQ(valueOf(series, "qcs_image_pull_duration_seconds_bucket{le=2.5,}"), 1);
  EXPECT_EQ(valueOf(series, "qcs_image_pull_duration_seconds_bucket{le=1,}"), 0);
  for (const char* op : ops) {
    // prometheus-cpp sorts labels by name.
    const std::string labels = std::string("op=") + op + ",runtime=docker,";
    EXPECT_EQ(valueOf(series, "qcs_runtime_errors_total{" + labels + "}"), 1) << op;
    EXPECT_EQ(valueOf(series, "qcs_runtime_request_duration_seconds_count{" + labels + "}"), 10) << op;
    double sum = 0;
    int upTo5ms = 0;
    for (int i = 0; i < 10; ++i) {
      sum += 0.001 * (i + 1);
      upTo5ms += 0.001 * (i + 1) <= 0.005 ? 1 : 0;
    }
    EXPECT_EQ(valueOf(series, "qcs_runtime_request_duration_seconds_bucket{" + labels + "le=0.005,}"), upTo5ms) << op;
    EXPECT_EQ(valueOf(series, "qcs_runtime_request_duration_seconds_bucket{" + labels + "le=0.025,}"), 10) << op;
    EXPECT_EQ(valueOf(series, "qcs_runtime_request_duration_seconds_bucket{" + labels + "le=inf,}"), 10) << op;
    EXPECT_EQ(valueOf(series, "qcs_runtime_request_duration_seconds_sum{" + labels + "}"), sum) << op;
  }
}

}  // namespace
}  // namespace qcs::agent

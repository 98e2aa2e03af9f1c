// The agent's configuration: YAML file, environment, --set, validation and rendering.
//
// One table (keyTable) describes every key: its YAML path, how it is parsed from text, how it is
// rendered, and its single-value rule. The YAML walker, the environment and --set layers, the
// validator and the renderer are all driven by it, so a new key is one line in one place.
//
// Values are merged in layers (file, environment, --set). Each value remembers where it came
// from so that every problem names its origin ("agent.yaml line 7", "environment QCS_X",
// "--set"). Parse errors (a duration without a unit) are reported when a layer sets the value;
// rules are checked once, on the effective values, so a bad file value that the environment
// overrides is not an error.
#include "agent/config.h"

#include "common/encoding.h"
#include "runtime/image_reference.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <sstream>
#include <string_view>
#include <system_error>

namespace qcs::agent {
namespace {

using std::chrono::milliseconds;

// ---------------------------------------------------------------------------------------------
// Text helpers

bool isAsciiSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool isDigit(char c) { return c >= '0' && c <= '9'; }
bool isLower(char c) { return c >= 'a' && c <= 'z'; }
bool isUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool isAlpha(char c) { return isLower(c) || isUpper(c); }
bool isAlnum(char c) { return isAlpha(c) || isDigit(c); }
char lowerChar(char c) { return isUpper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
char upperChar(char c) { return isLower(c) ? static_cast<char>(c - 'a' + 'A') : c; }

std::string_view trimAscii(std::string_view text) {
  while (!text.empty() && isAsciiSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && isAsciiSpace(text.back())) text.remove_suffix(1);
  return text;
}

std::string toLower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), lowerChar);
  return out;
}

std::string toUpper(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), upperChar);
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += separator;
    out += parts[i];
  }
  return out;
}

// A value as it appears in a message: double-quoted, escaped, and cut when very long (the
// message is for a person, and fuzzers feed megabytes).
std::string quoteValue(std::string_view value) {
  constexpr size_t kMaxShown = 120;
  std::string out = "\"";
  for (size_t i = 0; i < value.size() && i < kMaxShown; ++i) {
    const char c = value[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  if (value.size() > kMaxShown) out += "...";
  out += '"';
  return out;
}

std::vector<std::string> splitPath(std::string_view path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    parts.emplace_back(path.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) return parts;
    start = dot + 1;
  }
}

std::string joinPath(const std::string& prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : prefix + "." + std::string(name);
}

// "sensor.extra_mounts[0].target" -> "sensor.extra_mounts[0]" -> "sensor.extra_mounts" -> "sensor".
std::string parentPath(std::string_view path) {
  const size_t cut = path.find_last_of(".[");
  return cut == std::string_view::npos ? std::string() : std::string(path.substr(0, cut));
}

std::string lastComponent(std::string_view path) {
  const size_t cut = path.find_last_of('.');
  return std::string(cut == std::string_view::npos ? path : path.substr(cut + 1));
}

// ---------------------------------------------------------------------------------------------
// "Did you mean": case-insensitive edit distance, '-' and '_' count as the same character.

char foldForMatch(char c) { return c == '-' ? '_' : lowerChar(c); }

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> previous(b.size() + 1), current(b.size() + 1);
  std::iota(previous.begin(), previous.end(), size_t{0});
  for (size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitution = previous[j - 1] + (foldForMatch(a[i - 1]) == foldForMatch(b[j - 1]) ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

// Up to three candidates close to `wanted`: first those with the same last component (a key put
// in the wrong section), then those a few typos away.
std::vector<std::string> closeMatches(std::string_view wanted, const std::vector<std::string>& candidates) {
  constexpr size_t kLimit = 3;
  constexpr size_t kLongest = 100;  // no suggestions for absurd input: the distance is quadratic
  std::vector<std::string> matches;
  if (wanted.empty() || wanted.size() > kLongest) return matches;
  const std::string wantedLast = lastComponent(wanted);
  for (const std::string& candidate : candidates) {
    if (candidate != wanted && editDistance(lastComponent(candidate), wantedLast) == 0 && matches.size() < kLimit) {
      matches.push_back(candidate);
    }
  }
  const size_t threshold = std::clamp<size_t>(wantedLast.size() / 4, 1, 3);
  std::vector<std::pair<size_t, std::string>> near;
  for (const std::string& candidate : candidates) {
    if (candidate.size() > kLongest) continue;
    const size_t distance = editDistance(wanted, candidate);
    if (distance > 0 && distance <= threshold) near.emplace_back(distance, candidate);
  }
  std::sort(near.begin(), near.end());
  for (const auto& [distance, candidate] : near) {
    if (matches.size() >= kLimit) break;
    if (std::find(matches.begin(), matches.end(), candidate) == matches.end()) matches.push_back(candidate);
  }
  return matches;
}

std::string withSuggestion(std::string message, const std::vector<std::string>& matches) {
  if (!matches.empty()) message += fmt::format("; did you mean {}?", join(matches, " or "));
  return message;
}

// ---------------------------------------------------------------------------------------------
// Decimal numbers with a unit, computed exactly in integers.

struct Decimal {
  uint64_t whole = 0;
  uint64_t fraction = 0;       // value = whole + fraction / fractionScale
  uint64_t fractionScale = 1;  // a power of ten
};

enum class NumberScan { kOk, kMissing, kTooLarge, kTooPrecise };

// Reads digits[.digits] (or .digits) from the front of `text` and advances past it.
NumberScan readDecimal(std::string_view& text, Decimal& out) {
  constexpr int kMaxDigits = 18;  // 10^18 fits in uint64_t with room to spare
  out = Decimal{};
  size_t i = 0;
  int wholeDigits = 0;
  for (; i < text.size() && isDigit(text[i]); ++i) {
    if (out.whole == 0 && text[i] == '0') continue;  // leading zeros carry no digits
    if (++wholeDigits > kMaxDigits) return NumberScan::kTooLarge;
    out.whole = out.whole * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  const bool sawWhole = i > 0;
  bool sawFraction = false;
  if (i + 1 < text.size() && text[i] == '.' && isDigit(text[i + 1])) {
    ++i;
    std::string_view digits = text.substr(i);
    digits =
        digits.substr(0, static_cast<size_t>(std::find_if_not(digits.begin(), digits.end(), isDigit) - digits.begin()));
    i += digits.size();
    sawFraction = true;
    while (!digits.empty() && digits.back() == '0') digits.remove_suffix(1);
    if (digits.size() > static_cast<size_t>(kMaxDigits)) return NumberScan::kTooPrecise;
    for (char c : digits) {
      out.fraction = out.fraction * 10 + static_cast<uint64_t>(c - '0');
      out.fractionScale *= 10;
    }
  }
  if (!sawWhole && !sawFraction) return NumberScan::kMissing;
  text.remove_prefix(i);
  return NumberScan::kOk;
}

enum class Scaled { kOk, kInexact, kOverflow };

// value * unit as an exact integer.
Scaled scaleDecimal(const Decimal& value, int64_t unit, int64_t& out) {
  int64_t whole = 0;
  if (value.whole > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
      __builtin_mul_overflow(static_cast<int64_t>(value.whole), unit, &whole)) {
    return Scaled::kOverflow;
  }
  const uint64_t divisor = std::gcd(value.fraction, value.fractionScale);
  const uint64_t numerator = value.fraction / divisor;
  const uint64_t denominator = value.fractionScale / divisor;
  if (static_cast<uint64_t>(unit) % denominator != 0) return Scaled::kInexact;
  // numerator < denominator, so this is below `unit` and cannot overflow.
  const auto fractionPart = static_cast<int64_t>(numerator * (static_cast<uint64_t>(unit) / denominator));
  if (__builtin_add_overflow(whole, fractionPart, &out)) return Scaled::kOverflow;
  return Scaled::kOk;
}

Error invalid(std::string message) { return makeError(ErrorCode::kInvalidArgument, std::move(message)); }

// A suffix and what it multiplies by.
struct Unit {
  std::string_view suffix;
  int64_t scale;
};

// ---------------------------------------------------------------------------------------------
// Syntax checks shared by several keys.

bool isEnvName(std::string_view name) {
  if (name.empty() || !(isAlpha(name.front()) || name.front() == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return isAlnum(c) || c == '_'; });
}

// [first][rest]* where first is alphanumeric.
bool isSimpleName(std::string_view name, std::string_view extraRest) {
  if (name.empty() || !isAlnum(name.front())) return false;
  return std::all_of(name.begin(), name.end(),
                     [&](char c) { return isAlnum(c) || extraRest.find(c) != std::string_view::npos; });
}

bool isPort(std::string_view text) {
  if (text.empty() || text.size() > 5 || !std::all_of(text.begin(), text.end(), isDigit)) return false;
  return std::stoi(std::string(text)) <= 65535;
}

bool isIpv4(std::string_view text) {
  in_addr address{};
  return inet_pton(AF_INET, std::string(text).c_str(), &address) == 1;
}

bool isIpv6(std::string_view text) {
  in6_addr address{};
  return inet_pton(AF_INET6, std::string(text).c_str(), &address) == 1;
}

// RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens.
bool isHostname(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (const std::string& label : splitPath(host)) {
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    if (!std::all_of(label.begin(), label.end(), [](char c) { return isAlnum(c) || c == '-'; })) return false;
  }
  return true;
}

// "host", "host:port", "[v6]" or "[v6]:port"; `requirePort` for listen addresses.
std::optional<std::string> checkHostPort(std::string_view hostPort, bool requirePort) {
  std::string_view host = hostPort;
  std::string_view port;
  bool hasPort = false;
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close == std::string_view::npos) return "an IPv6 address is missing its closing ]";
    std::string_view after = host.substr(close + 1);
    host = host.substr(1, close - 1);
    if (!isIpv6(host)) return fmt::format("{} is not an IPv6 address", quoteValue(host));
    if (!after.empty()) {
      if (after.front() != ':') return "expected :port after the ]";
      hasPort = true;
      port = after.substr(1);
    }
  } else {
    const size_t colon = host.rfind(':');
    if (colon != std::string_view::npos) {
      if (host.find(':') != colon) return "put an IPv6 address in brackets, e.g. [::1]:9819";
      hasPort = true;
      port = host.substr(colon + 1);
      host = host.substr(0, colon);
    }
    if (host.empty()) return "the host is empty";
    const bool looksNumeric = std::all_of(host.begin(), host.end(), [](char c) { return isDigit(c) || c == '.'; });
    if (looksNumeric ? !isIpv4(host) : !isHostname(host)) {
      return fmt::format("{} is not an IPv4 address or host name", quoteValue(host));
    }
  }
  if (requirePort && !hasPort) return "the port is missing";
  if (hasPort && !isPort(port)) return fmt::format("{} is not a port (0-65535)", quoteValue(port));
  return std::nullopt;
}

struct UrlParts {
  std::string scheme;    // lower-cased
  std::string userinfo;  // may hold a password: never shown
  std::string hostPort;
};

std::optional<UrlParts> splitUrl(std::string_view url) {
  const size_t separator = url.find("://");
  if (separator == std::string_view::npos || separator == 0) return std::nullopt;
  UrlParts parts;
  parts.scheme = toLower(url.substr(0, separator));
  std::string_view authority = url.substr(separator + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  const size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    parts.userinfo = std::string(authority.substr(0, at));
    authority = authority.substr(at + 1);
  }
  parts.hostPort = std::string(authority);
  return parts;
}

// A URL with its password (if any) replaced, safe to print: scheme://user:***@host/...
std::string redactUrl(const std::string& url) {
  const auto parts = splitUrl(url);
  if (!parts || parts->userinfo.empty()) return url;
  const size_t separator = url.find("://") + 3;
  const size_t colon = parts->userinfo.find(':');
  const std::string user = colon == std::string::npos ? parts->userinfo : parts->userinfo.substr(0, colon);
  return url.substr(0, separator) + user + ":***@" + url.substr(separator + parts->userinfo.size() + 1);
}

// `value` must be a URL with one of `schemes` and a host. Shown redacted: proxy URLs carry passwords.
std::optional<std::string> checkUrl(const std::string& value, const std::vector<std::string>& schemes) {
  std::vector<std::string> prefixes;
  for (const std::string& scheme : schemes) prefixes.push_back(scheme + "://");
  const std::string expected = fmt::format("expected {} followed by a host", join(prefixes, " or "));
  const auto parts = splitUrl(value);
  if (!parts || std::find(schemes.begin(), schemes.end(), parts->scheme) == schemes.end()) {
    return fmt::format("{} is not a URL of the right kind; {}", quoteValue(redactUrl(value)), expected);
  }
  if (auto wrong = checkHostPort(parts->hostPort, false)) {
    return fmt::format("{} has no valid host ({}); {}", quoteValue(redactUrl(value)), *wrong, expected);
  }
  return std::nullopt;
}

// Docker reference grammar: [registry[:port]/]path[:tag][@sha256:<64 hex>], checked by the same
// parser the runtime uses.
std::optional<std::string> checkImageReference(const std::string& value) {
  constexpr std::string_view kAccepted =
      "expected [registry[:port]/]name[:tag][@sha256:<64 hex digits>], e.g. qualys/qcs-sensor:1.2.3";
  if (value.empty()) return fmt::format("must not be empty; {}", kAccepted);
  auto parsed = runtime::parseImageReference(value);
  if (parsed.ok()) return std::nullopt;
  return fmt::format("{}; {}", parsed.message(), kAccepted);
}

// ---------------------------------------------------------------------------------------------
// Single-value rules, applied to the effective text of a key.

using Check = std::function<std::optional<std::string>(const std::string&)>;

Check oneOf(std::vector<std::string> allowed) {
  return [allowed = std::move(allowed)](const std::string& value) -> std::optional<std::string> {
    if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return std::nullopt;
    return withSuggestion(fmt::format("{} is not one of {}", quoteValue(value), join(allowed, ", ")),
                          closeMatches(value, allowed));
  };
}

Check absolutePath(bool required) {
  return [required](const std::string& value) -> std::optional<std::string> {
    if (value.empty()) {
      if (!required) return std::nullopt;
      return std::string("must not be empty; give an absolute path");
    }
    if (value.front() != '/') return fmt::format("{} is not an absolute path; it must start with /", quoteValue(value));
    return std::nullopt;
  };
}

Check namePattern(std::string_view extraRest, std::string pattern) {
  return [extraRest, pattern = std::move(pattern)](const std::string& value) -> std::optional<std::string> {
    if (isSimpleName(value, extraRest)) return std::nullopt;
    return fmt::format("{} is not a valid name; expected {}", quoteValue(value), pattern);
  };
}

// The check applies to a value that is set; empty means "not set".
Check optionalValue(Check check) {
  return [check = std::move(check)](const std::string& value) -> std::optional<std::string> {
    if (value.empty()) return std::nullopt;
    return check(value);
  };
}

Check url(std::vector<std::string> schemes, bool required) {
  return [schemes = std::move(schemes), required](const std::string& value) -> std::optional<std::string> {
    if (value.empty() && !required) return std::nullopt;
    return checkUrl(value, schemes);
  };
}

std::optional<std::string> checkRuntimeEndpoint(const std::string& value) {
  if (value.empty()) return std::nullopt;
  constexpr std::string_view kUnix = "unix://";
  if (value.starts_with(kUnix)) {
    if (value.size() > kUnix.size() && value[kUnix.size()] == '/') return std::nullopt;
    return fmt::format("{} must name an absolute socket path, e.g. unix:///run/containerd/containerd.sock",
                       quoteValue(value));
  }
  if (value.find("://") != std::string::npos) {
    return fmt::format(
        "{}: only unix sockets are supported; give a socket path such as /var/run/docker.sock "
        "or unix:///run/containerd/containerd.sock",
        quoteValue(value));
  }
  if (value.front() != '/')
    return fmt::format("{} is not an absolute socket path; it must start with / or unix://", quoteValue(value));
  return std::nullopt;
}

std::optional<std::string> checkListen(const std::string& value) {
  if (auto wrong = checkHostPort(value, true)) {
    return fmt::format("{} is not host:port ({}); e.g. 127.0.0.1:9819, [::1]:9819 or localhost:9819", quoteValue(value),
                       *wrong);
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Scalar value codecs.

Result<double> parseNumber(const std::string& text) {
  const std::string_view trimmed = trimAscii(text);
  double value = 0;
  const auto [end, error] = std::from_chars(trimmed.data(), trimmed.data() + trimmed.size(), value);
  if (trimmed.empty() || error != std::errc() || end != trimmed.data() + trimmed.size() || !std::isfinite(value)) {
    return invalid(fmt::format("{} is not a number", quoteValue(text)));
  }
  return value;
}

Result<int64_t> parseCount(const std::string& text) {
  const std::string_view trimmed = trimAscii(text);
  int64_t value = 0;
  const auto [end, error] = std::from_chars(trimmed.data(), trimmed.data() + trimmed.size(), value);
  if (trimmed.empty() || error != std::errc() || end != trimmed.data() + trimmed.size()) {
    return invalid(fmt::format("{} is not a whole number", quoteValue(text)));
  }
  return value;
}

std::string formatCount(int64_t value) { return std::to_string(value); }

std::string formatNumber(double value) {
  std::array<char, 32> buffer{};
  const auto [end, error] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  return error == std::errc() ? std::string(buffer.data(), end) : fmt::format("{}", value);
}

bool parseBool(std::string_view text, bool& out) {
  const std::string lower = toLower(text);
  if (lower == "true" || lower == "yes" || lower == "on") {
    out = true;
    return true;
  }
  if (lower == "false" || lower == "no" || lower == "off") {
    out = false;
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Where values came from, and the problems found so far.

class Loader;

using TextSetter = std::function<std::optional<std::string>(Config&, const std::string&)>;

// One configuration key. Scalars have `set` and `get`; lists and maps have `readYaml` and
// `emitValue` (and `set` when they can also be given as text, like sensor.args).
struct KeySpec {
  std::string path;
  TextSetter set;                                 // parses text into the config; says what is wrong
  std::function<std::string(const Config&)> get;  // the canonical text of the effective value
  Check check;                                    // single-value rule on the effective text
  bool renderOnlyWhenSet = false;                 // secret-ref fields: only the chosen source's
  bool mayHoldCredentials = false;                // proxy URLs: rendered with the password redacted
  std::function<void(Config&)> resetsGroup;       // secret-ref `source`: setting it replaces the ref
  std::function<void(const YAML::Node&, const std::string&, const std::string&, Loader&)> readYaml;
  std::function<void(YAML::Emitter&, const Config&)> emitValue;

  bool isScalar() const { return static_cast<bool>(get); }
  bool overridable() const { return static_cast<bool>(set); }
};

const std::vector<KeySpec>& keyTable();
const KeySpec* findKey(std::string_view path);
bool isSection(std::string_view path);
std::vector<std::string> knownPaths();

// One value set by a layer.
struct Entry {
  std::string path;
  std::string value;
  std::string origin;
};

// The state of one load: the config being built, where each value came from, and the problems
// and warnings found so far.
class Loader {
 public:
  explicit Loader(std::string fileLabel) : fileLabel_(std::move(fileLabel)) {}

  Config config;
  std::vector<std::string> problems;
  std::vector<std::string> warnings;

  std::string yamlOrigin(const YAML::Node& node) const {
    const YAML::Mark mark = node.Mark();
    return mark.line < 0 ? fileLabel_ : fmt::format("{} line {}", fileLabel_, mark.line + 1);
  }

  // Records that `path` (and everything under it) was set by `origin`.
  void setOrigin(const std::string& path, const std::string& origin) {
    for (auto it = origins_.lower_bound(path); it != origins_.end() && it->first.starts_with(path);) {
      const char next = it->first.size() > path.size() ? it->first[path.size()] : '\0';
      it = (next == '\0' || next == '.' || next == '[') ? origins_.erase(it) : std::next(it);
    }
    origins_[path] = origin;
  }

  std::string originOf(const std::string& path) const {
    for (std::string at = path; !at.empty(); at = parentPath(at)) {
      if (auto it = origins_.find(at); it != origins_.end()) return it->second;
    }
    return "default";
  }

  bool isDefault(const std::string& path) const { return originOf(path) == "default"; }

  void problemAt(const std::string& path, const std::string& what, const std::string& origin) {
    problems.push_back(fmt::format("{}: {} ({})", path, what, origin));
  }
  void problem(const std::string& path, const std::string& what) { problemAt(path, what, originOf(path)); }
  // For a value that is wrong because of another key: blames that key's origin when this one
  // was never set.
  void problemBecauseOf(const std::string& path, const std::string& what, const std::string& cause) {
    problemAt(path, what, originOf(isDefault(path) ? cause : path));
  }
  void warning(const std::string& path, const std::string& what) {
    warnings.push_back(fmt::format("{}: {} ({})", path, what, originOf(path)));
  }

  Status readYaml(const std::string& text);
  void applyEnvironment(const std::map<std::string, std::string>& environment);
  void applyOverrides(const std::vector<std::pair<std::string, std::string>>& overrides);
  Result<Config> finish(std::vector<std::string>* warningsOut);

 private:
  void walkMap(const YAML::Node& map, const std::string& prefix, std::vector<Entry>& entries);
  void applyLayer(const std::vector<Entry>& entries);

  std::string fileLabel_;
  std::map<std::string, std::string> origins_;
};

std::string describeNode(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "a single value";
    default: return "nothing";
  }
}

std::string unknownKeyMessage(const std::string& path) {
  return withSuggestion("unknown key", closeMatches(path, knownPaths()));
}

void Loader::walkMap(const YAML::Node& map, const std::string& prefix, std::vector<Entry>& entries) {
  std::set<std::string> seen;
  for (const auto& item : map) {
    const YAML::Node& key = item.first;
    const YAML::Node& value = item.second;
    const std::string origin = yamlOrigin(key);
    if (!key.IsScalar()) {
      problemAt(prefix.empty() ? "(top level)" : prefix, "keys must be plain names", origin);
      continue;
    }
    const std::string path = joinPath(prefix, key.Scalar());
    if (!seen.insert(key.Scalar()).second) {
      problemAt(path, "appears twice in the same map; keep one", origin);
      continue;
    }
    if (const KeySpec* spec = findKey(path)) {
      if (!spec->isScalar()) {
        spec->readYaml(value, path, origin, *this);
      } else if (value.IsMap() || value.IsSequence()) {
        problemAt(path, fmt::format("expected a single value, got {}", describeNode(value)), origin);
      } else {
        entries.push_back({path, value.IsNull() ? std::string() : value.Scalar(), origin});
      }
    } else if (isSection(path)) {
      if (value.IsMap()) {
        walkMap(value, path, entries);
      } else if (!value.IsNull()) {
        problemAt(path, fmt::format("expected a map of settings, got {}", describeNode(value)), origin);
      }
    } else {
      problemAt(path, unknownKeyMessage(path), origin);
    }
  }
}

// Secret-ref `source` keys reset their ref before any value of the layer is applied, so a layer
// that names a source replaces the whole ref whatever the order of its keys.
void Loader::applyLayer(const std::vector<Entry>& entries) {
  for (const Entry& entry : entries) {
    const KeySpec& spec = *findKey(entry.path);
    if (spec.resetsGroup) {
      spec.resetsGroup(config);
      setOrigin(parentPath(entry.path), entry.origin);
    }
  }
  for (const Entry& entry : entries) {
    const KeySpec& spec = *findKey(entry.path);
    setOrigin(entry.path, entry.origin);
    if (auto wrong = spec.set(config, entry.value)) problemAt(entry.path, *wrong, entry.origin);
  }
}

Status Loader::readYaml(const std::string& text) {
  // YAML streams are Unicode; the parser passes other bytes through and the emitter would replace
  // them, so `render` could not give back the value the agent runs with.
  if (const size_t bad = invalidUtf8Offset(text); bad != std::string::npos) {
    const std::string_view before(text.data(), bad);
    const size_t line = static_cast<size_t>(std::count(before.begin(), before.end(), '\n')) + 1;
    const size_t lastNewline = before.rfind('\n');
    const size_t column = lastNewline == std::string_view::npos ? bad + 1 : bad - lastNewline;
    return invalid(fmt::format("{} line {} column {}: byte 0x{:02X} is not valid UTF-8; save the file as UTF-8",
                               fileLabel_, line, column, static_cast<unsigned char>(text[bad])));
  }
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    return invalid(
        fmt::format("{} line {} column {}: not valid YAML: {}", fileLabel_, e.mark.line + 1, e.mark.column + 1, e.msg));
  } catch (const YAML::Exception& e) {
    return invalid(fmt::format("{}: not valid YAML: {}", fileLabel_, e.what()));
  }
  if (root.IsNull()) return okStatus();  // empty, or only comments: all defaults
  if (!root.IsMap()) {
    problemAt("(top level)",
              fmt::format("expected a map of sections (runtime, sensor, ...), got {}", describeNode(root)),
              yamlOrigin(root));
    return okStatus();
  }
  std::vector<Entry> entries;
  walkMap(root, "", entries);
  applyLayer(entries);
  return okStatus();
}

void Loader::applyEnvironment(const std::map<std::string, std::string>& environment) {
  std::vector<Entry> entries;
  std::vector<std::string> knownNames;
  for (const KeySpec& spec : keyTable()) {
    if (!spec.overridable()) continue;
    const std::string name = envNameForKey(spec.path);
    knownNames.push_back(name);
    if (auto it = environment.find(name); it != environment.end()) {
      entries.push_back({spec.path, it->second, "environment " + name});
    }
  }
  // Other QCS_* variables may belong to something else: ignored, but a near miss is worth a word.
  for (const auto& [name, value] : environment) {
    if (!name.starts_with("QCS_") || std::find(knownNames.begin(), knownNames.end(), name) != knownNames.end())
      continue;
    const auto matches = closeMatches(name, knownNames);
    if (!matches.empty()) {
      warnings.push_back(fmt::format("environment {}: not a setting of the agent, ignored; did you mean {}?", name,
                                     join(matches, " or ")));
    }
  }
  applyLayer(entries);
}

void Loader::applyOverrides(const std::vector<std::pair<std::string, std::string>>& overrides) {
  std::vector<Entry> entries;
  for (const auto& [path, value] : overrides) {
    const KeySpec* spec = findKey(path);
    if (spec != nullptr && spec->overridable()) {
      entries.push_back({path, value, "--set"});
      continue;
    }
    if (spec != nullptr) {
      problemAt(path, "is a list or map and can only be set in the YAML file", "--set");
    } else if (isSection(path)) {
      std::vector<std::string> children;  // direct children; "x.*" for a group
      for (const KeySpec& candidate : keyTable()) {
        if (!candidate.overridable() || !candidate.path.starts_with(path + ".")) continue;
        const size_t end = candidate.path.find('.', path.size() + 1);
        const std::string child = end == std::string::npos ? candidate.path : candidate.path.substr(0, end) + ".*";
        if (std::find(children.begin(), children.end(), child) == children.end()) children.push_back(child);
      }
      problemAt(path, fmt::format("is a group of settings; set one of {}", join(children, ", ")), "--set");
    } else {
      std::vector<std::string> overridable;
      for (const std::string& key : overridableKeys()) overridable.push_back(key);
      const auto matches = closeMatches(path, overridable);
      problemAt(path.empty() ? std::string("(empty key)") : path,
                matches.empty() ? "unknown key (qcs-agent render lists every key)"
                                : fmt::format("unknown key; close matches: {}", join(matches, ", ")),
                "--set");
    }
  }
  applyLayer(entries);
}

// ---------------------------------------------------------------------------------------------
// Lists and maps.

template <typename Access>
KeySpec stringListKey(std::string keyPath, Access access, bool commaSeparatedText) {
  KeySpec spec;
  spec.path = std::move(keyPath);
  if (commaSeparatedText) {
    spec.set = [access](Config& config, const std::string& text) -> std::optional<std::string> {
      std::vector<std::string> items;
      std::stringstream stream(text);
      for (std::string item; std::getline(stream, item, ',');) {
        const std::string_view trimmed = trimAscii(item);
        if (!trimmed.empty()) items.emplace_back(trimmed);
      }
      access(config) = std::move(items);
      return std::nullopt;
    };
  }
  spec.readYaml = [access](const YAML::Node& value, const std::string& path, const std::string& origin,
                           Loader& loader) {
    std::vector<std::string> items;
    std::vector<std::string> itemOrigins;
    if (!value.IsNull() && !value.IsSequence()) {
      loader.problemAt(path, fmt::format("expected a list of strings, got {}", describeNode(value)), origin);
      return;
    }
    bool ok = true;
    for (const YAML::Node& item : value) {
      const std::string itemPath = fmt::format("{}[{}]", path, items.size());
      if (!item.IsScalar()) {
        loader.problemAt(itemPath, fmt::format("expected a string, got {}", describeNode(item)),
                         loader.yamlOrigin(item));
        ok = false;
      }
      items.push_back(item.IsScalar() ? item.Scalar() : std::string());
      itemOrigins.push_back(loader.yamlOrigin(item));
    }
    if (!ok) return;
    loader.setOrigin(path, origin);
    for (size_t i = 0; i < itemOrigins.size(); ++i) loader.setOrigin(fmt::format("{}[{}]", path, i), itemOrigins[i]);
    access(loader.config) = std::move(items);
  };
  spec.emitValue = [access](YAML::Emitter& out, const Config& config) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const std::string& item : access(config)) out << item;
    out << YAML::EndSeq;
  };
  return spec;
}

// Lists and maps of structured entries keep whatever could be read, so that a type error in one
// entry does not hide the problems of the others.
template <typename Access>
KeySpec stringMapKey(std::string keyPath, Access access) {
  KeySpec spec;
  spec.path = std::move(keyPath);
  spec.readYaml = [access](const YAML::Node& value, const std::string& path, const std::string& origin,
                           Loader& loader) {
    if (!value.IsNull() && !value.IsMap()) {
      loader.problemAt(path, fmt::format("expected a map of NAME: value, got {}", describeNode(value)), origin);
      return;
    }
    std::map<std::string, std::string> env;
    loader.setOrigin(path, origin);
    for (const auto& item : value) {
      const std::string itemOrigin = loader.yamlOrigin(item.first);
      if (!item.first.IsScalar()) {
        loader.problemAt(path, "variable names must be plain strings", itemOrigin);
        continue;
      }
      const std::string itemPath = path + "." + item.first.Scalar();
      if (item.second.IsMap() || item.second.IsSequence()) {
        // The value is never shown: operators sometimes put secrets where they should not.
        loader.problemAt(itemPath, fmt::format("expected a single value, got {}", describeNode(item.second)),
                         itemOrigin);
      } else if (!env.emplace(item.first.Scalar(), item.second.IsNull() ? "" : item.second.Scalar()).second) {
        loader.problemAt(itemPath, "appears twice; keep one", itemOrigin);
      } else {
        loader.setOrigin(itemPath, itemOrigin);
      }
    }
    access(loader.config) = std::move(env);
  };
  spec.emitValue = [access](YAML::Emitter& out, const Config& config) {
    const auto& map = access(config);
    if (map.empty()) out << YAML::Flow;
    out << YAML::BeginMap;
    for (const auto& [name, value] : map) out << YAML::Key << name << YAML::Value << value;
    out << YAML::EndMap;
  };
  return spec;
}

void readMount(const YAML::Node& item, const std::string& itemPath, MountConfig& mount, Loader& loader) {
  static const std::vector<std::string> kFields{"source", "target", "read_only"};
  loader.setOrigin(itemPath, loader.yamlOrigin(item));
  if (!item.IsMap()) {
    loader.problemAt(itemPath, fmt::format("expected a {{source, target, read_only}} map, got {}", describeNode(item)),
                     loader.yamlOrigin(item));
    return;
  }
  for (const auto& field : item) {
    const std::string fieldOrigin = loader.yamlOrigin(field.first);
    const std::string name = field.first.IsScalar() ? field.first.Scalar() : std::string();
    const std::string fieldPath = itemPath + "." + name;
    loader.setOrigin(fieldPath, fieldOrigin);
    if (std::find(kFields.begin(), kFields.end(), name) == kFields.end()) {
      loader.problemAt(
          fieldPath, withSuggestion("unknown key (a mount has source, target, read_only)", closeMatches(name, kFields)),
          fieldOrigin);
    } else if (!field.second.IsScalar()) {
      loader.problemAt(fieldPath, fmt::format("expected a single value, got {}", describeNode(field.second)),
                       fieldOrigin);
    } else if (name == "read_only") {
      if (!parseBool(field.second.Scalar(), mount.readOnly)) {
        loader.problemAt(fieldPath,
                         fmt::format("{} is not a boolean; use true or false", quoteValue(field.second.Scalar())),
                         fieldOrigin);
      }
    } else {
      (name == "source" ? mount.source : mount.target) = field.second.Scalar();
    }
  }
}

KeySpec extraMountsKey() {
  KeySpec spec;
  spec.path = "sensor.extra_mounts";
  spec.readYaml = [](const YAML::Node& value, const std::string& path, const std::string& origin, Loader& loader) {
    if (!value.IsNull() && !value.IsSequence()) {
      loader.problemAt(
          path, fmt::format("expected a list of {{source, target, read_only}} maps, got {}", describeNode(value)),
          origin);
      return;
    }
    std::vector<MountConfig> mounts;
    loader.setOrigin(path, origin);
    for (const YAML::Node& item : value) {
      const std::string itemPath = fmt::format("{}[{}]", path, mounts.size());
      readMount(item, itemPath, mounts.emplace_back(), loader);
    }
    loader.config.sensor.extraMounts = std::move(mounts);
  };
  spec.emitValue = [](YAML::Emitter& out, const Config& config) {
    if (config.sensor.extraMounts.empty()) out << YAML::Flow;
    out << YAML::BeginSeq;
    for (const MountConfig& mount : config.sensor.extraMounts) {
      out << YAML::Flow << YAML::BeginMap << YAML::Key << "source" << YAML::Value << mount.source << YAML::Key
          << "target" << YAML::Value << mount.target << YAML::Key << "read_only" << YAML::Value << mount.readOnly
          << YAML::EndMap;
    }
    out << YAML::EndSeq;
  };
  return spec;
}

// ---------------------------------------------------------------------------------------------
// Scalars.

template <typename Access>
KeySpec textKey(std::string path, Access access, Check check = {}) {
  KeySpec spec;
  spec.path = std::move(path);
  spec.set = [access](Config& config, const std::string& text) -> std::optional<std::string> {
    access(config) = text;
    return std::nullopt;
  };
  spec.get = [access](const Config& config) -> std::string { return access(config); };
  spec.check = std::move(check);
  return spec;
}

template <typename Access, typename Parse, typename Format>
KeySpec parsedKey(std::string path, Access access, Parse parse, Format format) {
  KeySpec spec;
  spec.path = std::move(path);
  spec.set = [access, parse](Config& config, const std::string& text) -> std::optional<std::string> {
    auto parsed = parse(text);
    if (!parsed.ok()) return parsed.message();
    access(config) = *parsed;
    return std::nullopt;
  };
  spec.get = [access, format](const Config& config) -> std::string { return format(access(config)); };
  return spec;
}

template <typename Access>
KeySpec durationKey(std::string path, Access access) {
  return parsedKey(std::move(path), access, parseDuration, formatDuration);
}

template <typename Access>
KeySpec numberKey(std::string path, Access access) {
  return parsedKey(std::move(path), access, parseNumber, formatNumber);
}

struct SecretField {
  const char* name;
  std::string SecretRef::*member;
};

constexpr std::array<SecretField, 8> kSecretFields{{
    {"source", &SecretRef::source},
    {"name", &SecretRef::name},
    {"path", &SecretRef::path},
    {"secret_id", &SecretRef::secretId},
    {"json_key", &SecretRef::jsonKey},
    {"region", &SecretRef::region},
    {"version_stage", &SecretRef::versionStage},
    {"endpoint", &SecretRef::endpoint},
}};

// The keys of one secret reference: prefix.source, prefix.name, ...
template <typename AccessRef>
void addSecretRefKeys(std::vector<KeySpec>& keys, const std::string& prefix, AccessRef accessRef) {
  for (const SecretField& field : kSecretFields) {
    const auto member = field.member;
    KeySpec spec = textKey(
        prefix + "." + field.name, [ accessRef, member ](auto& config) -> auto& { return accessRef(config).*member; });
    spec.renderOnlyWhenSet = true;
    if (member == &SecretRef::source)
      spec.resetsGroup = [accessRef](Config& config) { accessRef(config) = SecretRef{}; };
    keys.push_back(std::move(spec));
  }
}

KeySpec withCredentials(KeySpec spec) {
  spec.mayHoldCredentials = true;
  return spec;
}

// Every key, in SPEC order (which is also the rendering order).
std::vector<KeySpec> buildKeyTable() {
  std::vector<KeySpec> keys;
  keys.push_back(textKey(
      "runtime.kind", [](auto& c) -> auto& { return c.runtime.kind; }, oneOf({"auto", "docker", "containerd"})));
  keys.push_back(textKey(
      "runtime.endpoint", [](auto& c) -> auto& { return c.runtime.endpoint; }, checkRuntimeEndpoint));
  keys.push_back(textKey(
      "runtime.host_root", [](auto& c) -> auto& { return c.runtime.hostRoot; }, absolutePath(true)));
  keys.push_back(textKey(
      "runtime.containerd_namespace", [](auto& c) -> auto& { return c.runtime.containerdNamespace; },
      namePattern("._-", "[A-Za-z0-9][A-Za-z0-9._-]*")));
  keys.push_back(textKey(
      "runtime.containerd_snapshotter", [](auto& c) -> auto& { return c.runtime.containerdSnapshotter; },
      namePattern("._-", "a containerd snapshotter name such as overlayfs, native, btrfs, zfs")));
  keys.push_back(textKey(
      "runtime.containerd_log_dir", [](auto& c) -> auto& { return c.runtime.containerdLogDir; }, absolutePath(true)));
  keys.push_back(parsedKey(
      "runtime.containerd_log_max_size", [](auto& c) -> auto& { return c.runtime.containerdLogMaxBytes; },
      parseMemoryQuantity, formatMemoryQuantity));
  keys.push_back(textKey(
      "sensor.image", [](auto& c) -> auto& { return c.sensor.image; }, checkImageReference));
  keys.push_back(textKey(
      "sensor.pull_policy", [](auto& c) -> auto& { return c.sensor.pullPolicy; },
      oneOf({"always", "if-not-present", "never"})));
  keys.push_back(textKey(
      "sensor.name", [](auto& c) -> auto& { return c.sensor.name; },
      namePattern("_.-", "a Docker container name, [a-zA-Z0-9][a-zA-Z0-9_.-]*")));
  keys.push_back(textKey(
      "sensor.mode", [](auto& c) -> auto& { return c.sensor.mode; }, oneOf({"general", "registry", "cicd"})));
  keys.push_back(textKey(
      "sensor.pod_url", [](auto& c) -> auto& { return c.sensor.podUrl; }, url({"https"}, true)));
  keys.push_back(stringListKey(
      "sensor.args", [](auto& c) -> auto& { return c.sensor.args; }, true));
  keys.push_back(stringMapKey(
      "sensor.env", [](auto& c) -> auto& { return c.sensor.env; }));
  keys.push_back(stringListKey(
      "sensor.capabilities", [](auto& c) -> auto& { return c.sensor.capabilities; }, false));
  keys.push_back(parsedKey(
      "sensor.resources.cpu_request", [](auto& c) -> auto& { return c.sensor.resources.cpuRequestMilli; },
      parseCpuQuantity, formatCpuQuantity));
  keys.push_back(parsedKey(
      "sensor.resources.cpu_limit", [](auto& c) -> auto& { return c.sensor.resources.cpuLimitMilli; }, parseCpuQuantity,
      formatCpuQuantity));
  keys.push_back(parsedKey(
      "sensor.resources.memory_request", [](auto& c) -> auto& { return c.sensor.resources.memoryRequestBytes; },
      parseMemoryQuantity, formatMemoryQuantity));
  keys.push_back(parsedKey(
      "sensor.resources.memory_limit", [](auto& c) -> auto& { return c.sensor.resources.memoryLimitBytes; },
      parseMemoryQuantity, formatMemoryQuantity));
  keys.push_back(textKey(
      "sensor.storage_path", [](auto& c) -> auto& { return c.sensor.storagePath; }, absolutePath(false)));
  keys.push_back(extraMountsKey());
  keys.push_back(withCredentials(textKey(
      "sensor.proxy.qualys_https_proxy", [](auto& c) -> auto& { return c.sensor.proxy.qualysHttpsProxy; },
      url({"http", "https"}, false))));
  keys.push_back(withCredentials(textKey(
      "sensor.proxy.https_proxy", [](auto& c) -> auto& { return c.sensor.proxy.httpsProxy; },
      url({"http", "https"}, false))));
  keys.push_back(textKey(
      "sensor.proxy.ca_file", [](auto& c) -> auto& { return c.sensor.proxy.caFile; }, absolutePath(false)));
  keys.push_back(textKey(
      "sensor.log_driver", [](auto& c) -> auto& { return c.sensor.logDriver; },
      namePattern("-_.", "auto, default or a Docker log driver such as json-file, local, journald or awslogs")));
  keys.push_back(stringMapKey(
      "sensor.log_options", [](auto& c) -> auto& { return c.sensor.logOptions; }));
  addSecretRefKeys(
      keys, "secrets.activation_id", [](auto& c) -> auto& { return c.secrets.activationId; });
  addSecretRefKeys(
      keys, "secrets.customer_id", [](auto& c) -> auto& { return c.secrets.customerId; });
  keys.push_back(durationKey(
      "secrets.refresh_interval", [](auto& c) -> auto& { return c.secrets.refreshInterval; }));
  keys.push_back(textKey(
      "registry_auth.kind", [](auto& c) -> auto& { return c.registryAuth.kind; },
      oneOf({"none", "auto", "basic", "docker-config", "ecr", "acr", "gcr"})));
  keys.push_back(textKey(
      "registry_auth.username", [](auto& c) -> auto& { return c.registryAuth.username; }));
  addSecretRefKeys(
      keys, "registry_auth.password", [](auto& c) -> auto& { return c.registryAuth.password; });
  keys.push_back(textKey(
      "registry_auth.docker_config", [](auto& c) -> auto& { return c.registryAuth.dockerConfig; },
      absolutePath(false)));
  for (KeySpec spec : {textKey(
                           "registry_auth.ecr_registry", [](auto& c) -> auto& { return c.registryAuth.ecrRegistry; },
                           optionalValue(namePattern(
                               ".-:", "a registry host[:port], e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com"))),
                       textKey(
                           "registry_auth.ecr_endpoint", [](auto& c) -> auto& { return c.registryAuth.ecrEndpoint; },
                           url({"http", "https"}, false)),
                       textKey(
                           "registry_auth.ecr_region", [](auto& c) -> auto& { return c.registryAuth.ecrRegion; },
                           optionalValue(namePattern("-", "an AWS region such as eu-west-1")))}) {
    spec.renderOnlyWhenSet = true;
    keys.push_back(std::move(spec));
  }
  for (KeySpec spec :
       {textKey(
            "registry_auth.acr_exchange_endpoint", [](auto& c) -> auto& { return c.registryAuth.acrExchangeEndpoint; },
            url({"http", "https"}, false)),
        textKey(
            "registry_auth.azure_client_id", [](auto& c) -> auto& { return c.registryAuth.azureClientId; },
            optionalValue(namePattern("-", "a managed identity's client id (a GUID)")))}) {
    spec.renderOnlyWhenSet = true;
    keys.push_back(std::move(spec));
  }
  keys.push_back(durationKey(
      "supervision.backoff.initial", [](auto& c) -> auto& { return c.supervision.backoff.initial; }));
  keys.push_back(durationKey(
      "supervision.backoff.max", [](auto& c) -> auto& { return c.supervision.backoff.max; }));
  keys.push_back(numberKey(
      "supervision.backoff.multiplier", [](auto& c) -> auto& { return c.supervision.backoff.multiplier; }));
  keys.push_back(numberKey(
      "supervision.backoff.jitter", [](auto& c) -> auto& { return c.supervision.backoff.jitter; }));
  keys.push_back(durationKey(
      "supervision.backoff.reset_after", [](auto& c) -> auto& { return c.supervision.backoff.resetAfter; }));
  keys.push_back(durationKey(
      "supervision.reconcile_interval", [](auto& c) -> auto& { return c.supervision.reconcileInterval; }));
  keys.push_back(textKey(
      "supervision.on_stop", [](auto& c) -> auto& { return c.supervision.onStop; }, oneOf({"leave", "stop"})));
  keys.push_back(durationKey(
      "supervision.stop_timeout", [](auto& c) -> auto& { return c.supervision.stopTimeout; }));
  keys.push_back(stringListKey(
      "supervision.health.exec.command", [](auto& c) -> auto& { return c.supervision.health.execCommand; }, true));
  keys.push_back(durationKey(
      "supervision.health.quiet_after", [](auto& c) -> auto& { return c.supervision.health.quietAfter; }));
  keys.push_back(durationKey(
      "supervision.health.startup_grace", [](auto& c) -> auto& { return c.supervision.health.startupGrace; }));
  keys.push_back(durationKey(
      "supervision.health.period", [](auto& c) -> auto& { return c.supervision.health.period; }));
  keys.push_back(durationKey(
      "supervision.health.timeout", [](auto& c) -> auto& { return c.supervision.health.timeout; }));
  keys.push_back(parsedKey(
      "supervision.health.failure_threshold", [](auto& c) -> auto& { return c.supervision.health.failureThreshold; },
      parseCount, formatCount));
  keys.push_back(textKey(
      "platform.detect", [](auto& c) -> auto& { return c.platform.detect; },
      oneOf({"auto", "none", "aws", "azure", "gcp"})));
  for (KeySpec spec :
       {textKey(
            "platform.aws_imds_endpoint", [](auto& c) -> auto& { return c.platform.awsImdsEndpoint; },
            url({"http", "https"}, false)),
        textKey(
            "platform.azure_imds_endpoint", [](auto& c) -> auto& { return c.platform.azureImdsEndpoint; },
            url({"http", "https"}, false)),
        textKey(
            "platform.gcp_metadata_host", [](auto& c) -> auto& { return c.platform.gcpMetadataHost; },
            optionalValue(namePattern(".-:", "a host[:port] such as metadata.google.internal or 127.0.0.1:8080")))}) {
    spec.renderOnlyWhenSet = true;
    keys.push_back(std::move(spec));
  }
  keys.push_back(textKey(
      "http.listen", [](auto& c) -> auto& { return c.http.listen; }, checkListen));
  keys.push_back(textKey(
      "logging.level", [](auto& c) -> auto& { return c.logging.level; },
      oneOf({"trace", "debug", "info", "warn", "error", "critical", "off"})));
  keys.push_back(textKey(
      "logging.format", [](auto& c) -> auto& { return c.logging.format; }, oneOf({"text", "json"})));
  return keys;
}

const std::vector<KeySpec>& keyTable() {
  static const std::vector<KeySpec> table = buildKeyTable();
  return table;
}

const KeySpec* findKey(std::string_view path) {
  for (const KeySpec& spec : keyTable()) {
    if (spec.path == path) return &spec;
  }
  return nullptr;
}

// Every proper prefix of a key path: "sensor", "sensor.resources", "secrets.activation_id", ...
const std::set<std::string>& sections() {
  static const std::set<std::string> all = [] {
    std::set<std::string> out;
    for (const KeySpec& spec : keyTable()) {
      for (std::string at = parentPath(spec.path); !at.empty(); at = parentPath(at)) out.insert(at);
    }
    return out;
  }();
  return all;
}

bool isSection(std::string_view path) { return sections().count(std::string(path)) > 0; }

std::vector<std::string> knownPaths() {
  std::vector<std::string> paths(sections().begin(), sections().end());
  for (const KeySpec& spec : keyTable()) paths.push_back(spec.path);
  return paths;
}

// ---------------------------------------------------------------------------------------------
// Rules that span several keys or look inside lists and maps.

// capabilities(7), as of Linux 5.9.
constexpr std::array<std::string_view, 41> kLinuxCapabilities{
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
};

// Container paths the agent mounts itself (SPEC "The sensor container").
constexpr std::array<std::string_view, 7> kAgentMountTargets{
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/usr/local/qualys/qpa/data/conf/agent-data",
    "/usr/local/qualys/qpa/data",
    "/etc/qualys/qpa/cert/custom-ca.crt",
};

// The sensor environment the agent sets, and the key to use instead.
constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kAgentEnvironment{{
    {"ACTIVATIONID", "secrets.activation_id"},
    {"CUSTOMERID", "secrets.customer_id"},
    {"POD_URL", "sensor.pod_url"},
    {"qualys_https_proxy", "sensor.proxy.qualys_https_proxy"},
    {"https_proxy", "sensor.proxy.https_proxy"},
}};

std::string withoutTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

// Capabilities are stored the way Docker and the OCI spec want them: upper case, no CAP_ prefix.
void normalizeCapabilities(Config& config) {
  for (std::string& capability : config.sensor.capabilities) {
    capability = toUpper(trimAscii(capability));
    if (capability.starts_with("CAP_")) capability.erase(0, 4);
  }
}

void validateArgs(Loader& loader) {
  const Config::Sensor& sensor = loader.config.sensor;
  for (size_t i = 0; i < sensor.args.size(); ++i) {
    const std::string& arg = sensor.args[i];
    const std::string path = fmt::format("sensor.args[{}]", i);
    if (arg.empty() || arg.front() != '-') {
      loader.problem(path, fmt::format("{} is not a flag; each argument must start with \"-\", e.g. --perform-sca-scan",
                                       quoteValue(arg)));
      continue;
    }
    const std::string flag = arg.substr(0, arg.find('='));
    if (flag == "--registry-sensor" || flag == "--cicd-deployed-sensor") {
      loader.problem(path, fmt::format("{} selects the sensor mode; remove it and set sensor.mode ({}) instead",
                                       quoteValue(arg), flag == "--registry-sensor" ? "registry" : "cicd"));
    } else if (flag == "--storage-driver-type" || flag == "--container-runtime") {
      loader.problem(path,
                     fmt::format("{} is derived by the agent from the detected runtime; remove it", quoteValue(arg)));
    } else if (flag == "--sensor-without-persistent-storage" && !sensor.storagePath.empty()) {
      loader.problem(
          path, fmt::format("{} contradicts sensor.storage_path {} (set at {}); remove the flag or clear "
                            "sensor.storage_path",
                            quoteValue(arg), quoteValue(sensor.storagePath), loader.originOf("sensor.storage_path")));
    } else if (flag == "--optimize-image-scans" && sensor.mode != "general") {
      loader.warning(path, fmt::format("{} only has an effect in general mode, and sensor.mode is {}", quoteValue(arg),
                                       quoteValue(sensor.mode)));
    }
  }
}

void validateSensorEnv(Loader& loader) {
  for (const auto& [name, value] : loader.config.sensor.env) {
    const std::string path = "sensor.env." + name;
    if (!isEnvName(name)) {
      loader.problem(path,
                     fmt::format("{} is not a valid variable name; expected [A-Za-z_][A-Za-z0-9_]*", quoteValue(name)));
      continue;
    }
    for (const auto& [reserved, instead] : kAgentEnvironment) {
      if (toLower(name) == toLower(reserved)) {
        loader.problem(path, fmt::format("{} is set by the agent; use {} instead", name, instead));
      }
    }
  }
}

void validateCapabilities(Loader& loader) {
  const std::vector<std::string> known(kLinuxCapabilities.begin(), kLinuxCapabilities.end());
  std::set<std::string> seen;
  const auto& capabilities = loader.config.sensor.capabilities;
  for (size_t i = 0; i < capabilities.size(); ++i) {
    const std::string path = fmt::format("sensor.capabilities[{}]", i);
    const std::string& capability = capabilities[i];
    if (std::find(known.begin(), known.end(), capability) == known.end()) {
      loader.problem(path, withSuggestion(fmt::format("{} is not a Linux capability (e.g. SYS_ADMIN, NET_ADMIN)",
                                                      quoteValue(capability)),
                                          closeMatches(capability, known)));
    } else if (!seen.insert(capability).second) {
      loader.problem(path, fmt::format("{} is listed twice", capability));
    }
  }
}

void validateResources(Loader& loader) {
  const auto& resources = loader.config.sensor.resources;
  struct Pair {
    const char* request;
    const char* limit;
    int64_t requestValue;
    int64_t limitValue;
    std::string (*format)(int64_t);
  };
  const std::array<Pair, 2> pairs{{
      {"sensor.resources.cpu_request", "sensor.resources.cpu_limit", resources.cpuRequestMilli, resources.cpuLimitMilli,
       formatCpuQuantity},
      {"sensor.resources.memory_request", "sensor.resources.memory_limit", resources.memoryRequestBytes,
       resources.memoryLimitBytes, formatMemoryQuantity},
  }};
  for (const Pair& pair : pairs) {
    bool positive = true;
    for (const auto& [path, value] :
         {std::pair{pair.request, pair.requestValue}, std::pair{pair.limit, pair.limitValue}}) {
      if (value <= 0) {
        loader.problem(path, fmt::format("{} must be greater than zero", pair.format(value)));
        positive = false;
      }
    }
    if (positive && pair.requestValue > pair.limitValue) {
      loader.problem(pair.request,
                     fmt::format("{} is more than {} {}; a request cannot exceed its limit",
                                 pair.format(pair.requestValue), pair.limit, pair.format(pair.limitValue)));
    }
  }
  constexpr int64_t kDockerMinimumMemory = 6LL << 20;
  if (resources.memoryLimitBytes > 0 && resources.memoryLimitBytes < kDockerMinimumMemory) {
    loader.problem("sensor.resources.memory_limit", fmt::format("{} is below 6Mi, the smallest limit Docker accepts",
                                                                formatMemoryQuantity(resources.memoryLimitBytes)));
  }
}

void validateContainerdLog(Loader& loader) {
  constexpr int64_t kMinimumLog = 64LL << 10;
  const int64_t size = loader.config.runtime.containerdLogMaxBytes;
  if (size < kMinimumLog) {
    loader.problem("runtime.containerd_log_max_size",
                   fmt::format("{} is below 64Ki; the cap must leave room for the last lines a crash report copies",
                               formatMemoryQuantity(size)));
  }
}

void validateMounts(Loader& loader) {
  std::set<std::string> targets;
  const auto& mounts = loader.config.sensor.extraMounts;
  for (size_t i = 0; i < mounts.size(); ++i) {
    const std::string path = fmt::format("sensor.extra_mounts[{}]", i);
    for (const auto& [field, value] : {std::pair{"source", mounts[i].source}, std::pair{"target", mounts[i].target}}) {
      if (value.empty()) {
        loader.problem(path + "." + field, "is required: an absolute path");
      } else if (auto wrong = absolutePath(true)(value)) {
        loader.problem(path + "." + field, *wrong);
      }
    }
    if (mounts[i].target.empty() || mounts[i].target.front() != '/') continue;
    const std::string target = withoutTrailingSlashes(mounts[i].target);
    if (std::find(kAgentMountTargets.begin(), kAgentMountTargets.end(), target) != kAgentMountTargets.end()) {
      loader.problem(path + ".target",
                     fmt::format("{} is a target the agent mounts itself; choose another", quoteValue(target)));
    } else if (!targets.insert(target).second) {
      loader.problem(path + ".target",
                     fmt::format("{} is already the target of another extra mount", quoteValue(target)));
    }
  }
}

struct SecretSourceRule {
  std::string_view source;
  std::vector<std::string_view> fields;  // fields that may be set with this source; the first is required
};

const std::array<SecretSourceRule, 3>& secretSources() {
  static const std::array<SecretSourceRule, 3> rules{{
      {"env", {"name"}},
      {"file", {"path"}},
      {"aws-secretsmanager", {"secret_id", "json_key", "region", "version_stage", "endpoint"}},
  }};
  return rules;
}

bool anyFieldSet(const SecretRef& ref) {
  return std::any_of(kSecretFields.begin(), kSecretFields.end(),
                     [&](const SecretField& field) { return !(ref.*field.member).empty(); });
}

// `requiredBy` names why the ref must be set (its own path, or the key that needs it); empty when
// the ref is optional.
void validateSecretRef(Loader& loader, const std::string& prefix, const SecretRef& ref, const std::string& requiredBy) {
  const std::string sourcePath = prefix + ".source";
  if (!ref.isSet()) {
    if (!requiredBy.empty() || anyFieldSet(ref)) {
      loader.problemBecauseOf(sourcePath, "is required: one of env, file, aws-secretsmanager",
                              requiredBy.empty() ? prefix : requiredBy);
    }
    return;
  }
  const auto& rules = secretSources();
  const auto rule =
      std::find_if(rules.begin(), rules.end(), [&](const SecretSourceRule& r) { return r.source == ref.source; });
  if (rule == rules.end()) {
    loader.problem(sourcePath, *oneOf({"env", "file", "aws-secretsmanager"})(ref.source));
    return;
  }
  for (const SecretField& field : kSecretFields) {
    if (field.member == &SecretRef::source || (ref.*field.member).empty()) continue;
    if (std::find(rule->fields.begin(), rule->fields.end(), field.name) == rule->fields.end()) {
      const std::vector<std::string> fields(rule->fields.begin(), rule->fields.end());
      loader.problem(prefix + "." + field.name,
                     fmt::format("is not used with source {} (which takes {})", ref.source, join(fields, ", ")));
    }
  }
  const std::string requiredPath = prefix + "." + std::string(rule->fields.front());
  if (ref.source == "env") {
    if (ref.name.empty()) {
      loader.problemBecauseOf(requiredPath, "is required with source env: the agent's environment variable to read",
                              sourcePath);
    } else if (!isEnvName(ref.name)) {
      loader.problem(requiredPath, fmt::format("{} is not a valid variable name; expected [A-Za-z_][A-Za-z0-9_]*",
                                               quoteValue(ref.name)));
    }
  } else if (ref.source == "file") {
    if (ref.path.empty()) {
      loader.problemBecauseOf(requiredPath, "is required with source file: the absolute path of the file", sourcePath);
    } else if (auto wrong = absolutePath(true)(ref.path)) {
      loader.problem(requiredPath, *wrong);
    }
  } else {
    if (ref.secretId.empty()) {
      loader.problemBecauseOf(requiredPath, "is required with source aws-secretsmanager: the secret's ARN or name",
                              sourcePath);
    }
    if (!ref.endpoint.empty()) {
      if (auto wrong = checkUrl(ref.endpoint, {"http", "https"})) loader.problem(prefix + ".endpoint", *wrong);
    }
    if (!ref.region.empty() && !isSimpleName(ref.region, "-")) {
      loader.problem(prefix + ".region",
                     fmt::format("{} is not an AWS region name, e.g. eu-west-1", quoteValue(ref.region)));
    }
  }
}

void validateRegistryAuth(Loader& loader) {
  const Config::RegistryAuth& auth = loader.config.registryAuth;
  const std::string kindPath = "registry_auth.kind";
  const bool basic = auth.kind == "basic";
  const bool dockerConfig = auth.kind == "docker-config";
  if (basic) {
    if (auth.username.empty())
      loader.problemBecauseOf("registry_auth.username", "is required with kind basic", kindPath);
    validateSecretRef(loader, "registry_auth.password", auth.password, kindPath);
  } else {
    if (!auth.username.empty())
      loader.problem("registry_auth.username",
                     fmt::format("is only used with kind basic (kind is {})", quoteValue(auth.kind)));
    if (anyFieldSet(auth.password)) {
      loader.problem("registry_auth.password",
                     fmt::format("is only used with kind basic (kind is {})", quoteValue(auth.kind)));
    }
  }
  if (dockerConfig && auth.dockerConfig.empty()) {
    loader.problemBecauseOf("registry_auth.docker_config",
                            "is required with kind docker-config: the absolute path of a Docker config.json", kindPath);
  } else if (!dockerConfig && !auth.dockerConfig.empty()) {
    loader.problem("registry_auth.docker_config",
                   fmt::format("is only used with kind docker-config (kind is {})", quoteValue(auth.kind)));
  }
  if (auth.kind != "acr" && auth.kind != "auto") {
    for (const auto& [path, value] : {std::pair{"registry_auth.acr_exchange_endpoint", auth.acrExchangeEndpoint},
                                      std::pair{"registry_auth.azure_client_id", auth.azureClientId}}) {
      if (!value.empty()) {
        loader.problem(path, fmt::format("is only used with kind acr or auto (kind is {})", quoteValue(auth.kind)));
      }
    }
  }
  if (auth.kind != "ecr") {
    for (const auto& [path, value] : {std::pair{"registry_auth.ecr_registry", auth.ecrRegistry},
                                      std::pair{"registry_auth.ecr_endpoint", auth.ecrEndpoint},
                                      std::pair{"registry_auth.ecr_region", auth.ecrRegion}}) {
      if (!value.empty()) {
        loader.problem(path, fmt::format("is only used with kind ecr (kind is {})", quoteValue(auth.kind)));
      }
    }
  }
  if (loader.config.secrets.refreshInterval < std::chrono::seconds(1)) {
    loader.problem("secrets.refresh_interval", fmt::format("{} is too short; it must be at least 1s",
                                                           formatDuration(loader.config.secrets.refreshInterval)));
  }
}

void validateSupervision(Loader& loader) {
  const auto& supervision = loader.config.supervision;
  const auto& backoff = supervision.backoff;
  if (backoff.initial <= milliseconds::zero()) {
    loader.problem("supervision.backoff.initial",
                   fmt::format("{} must be greater than zero", formatDuration(backoff.initial)));
  }
  if (backoff.max < backoff.initial) {
    loader.problem("supervision.backoff.max",
                   fmt::format("{} is less than supervision.backoff.initial {}", formatDuration(backoff.max),
                               formatDuration(backoff.initial)));
  }
  if (!(backoff.multiplier >= 1)) {
    loader.problem("supervision.backoff.multiplier",
                   fmt::format("{} must be at least 1", formatNumber(backoff.multiplier)));
  }
  if (!(backoff.jitter >= 0 && backoff.jitter < 1)) {
    loader.problem(
        "supervision.backoff.jitter",
        fmt::format("{} must be at least 0 and less than 1 (a fraction, e.g. 0.1)", formatNumber(backoff.jitter)));
  }
  if (backoff.resetAfter <= milliseconds::zero()) {
    loader.problem("supervision.backoff.reset_after",
                   fmt::format("{} must be greater than zero", formatDuration(backoff.resetAfter)));
  }
  if (supervision.reconcileInterval < std::chrono::seconds(1)) {
    loader.problem("supervision.reconcile_interval", fmt::format("{} is too short; it must be at least 1s",
                                                                 formatDuration(supervision.reconcileInterval)));
  }
  if (supervision.stopTimeout < milliseconds::zero()) {
    loader.problem("supervision.stop_timeout",
                   fmt::format("{} must not be negative", formatDuration(supervision.stopTimeout)));
  }
  const auto& health = supervision.health;
  if (health.quietAfter < milliseconds::zero()) {
    loader.problem("supervision.health.quiet_after",
                   fmt::format("{} must not be negative (0 turns the probe off)", formatDuration(health.quietAfter)));
  }
  if (health.startupGrace < milliseconds::zero()) {
    loader.problem("supervision.health.startup_grace",
                   fmt::format("{} must not be negative", formatDuration(health.startupGrace)));
  }
  if (health.period < std::chrono::seconds(1)) {
    loader.problem("supervision.health.period",
                   fmt::format("{} is too short; it must be at least 1s", formatDuration(health.period)));
  }
  if (health.timeout <= milliseconds::zero()) {
    loader.problem("supervision.health.timeout",
                   fmt::format("{} must be greater than zero", formatDuration(health.timeout)));
  } else if (health.timeout > std::chrono::minutes(1)) {
    // The probe runs on the supervisor loop: a longer wait would starve /livez and the systemd watchdog.
    loader.problem("supervision.health.timeout",
                   fmt::format("{} is too long; it must be at most 1m", formatDuration(health.timeout)));
  } else if (health.timeout >= health.period) {
    loader.problem("supervision.health.timeout",
                   fmt::format("{} must be less than supervision.health.period {}", formatDuration(health.timeout),
                               formatDuration(health.period)));
  }
  if (health.failureThreshold < 1) {
    loader.problem("supervision.health.failure_threshold",
                   fmt::format("{} must be at least 1", health.failureThreshold));
  }
  if (!health.execCommand.empty() && health.execCommand.front().empty()) {
    loader.problem("supervision.health.exec.command", "the first item, the program to run, must not be empty");
  }
}

void validate(Loader& loader) {
  for (const KeySpec& spec : keyTable()) {
    if (!spec.check) continue;
    if (auto wrong = spec.check(spec.get(loader.config))) loader.problem(spec.path, *wrong);
  }
  validateArgs(loader);
  validateSensorEnv(loader);
  validateCapabilities(loader);
  validateResources(loader);
  validateMounts(loader);
  validateContainerdLog(loader);
  validateSecretRef(loader, "secrets.activation_id", loader.config.secrets.activationId, "secrets.activation_id");
  validateSecretRef(loader, "secrets.customer_id", loader.config.secrets.customerId, "secrets.customer_id");
  validateRegistryAuth(loader);
  validateSupervision(loader);
}

Result<Config> Loader::finish(std::vector<std::string>* warningsOut) {
  normalizeCapabilities(config);
  validate(*this);
  if (warningsOut != nullptr) warningsOut->insert(warningsOut->end(), warnings.begin(), warnings.end());
  if (!problems.empty()) return invalid(join(problems, "\n"));
  return config;
}

// ---------------------------------------------------------------------------------------------
// Quantities.

// Parses "<number><suffix>" with a suffix from `units` ("" only when listed). `what` names the
// quantity, `accepted` says what would be, and `inexact` why a value finer than 1 is refused.
Result<int64_t> parseQuantity(const std::string& text, std::string_view what, const std::vector<Unit>& units,
                              std::string_view accepted, std::string_view inexact) {
  const std::string_view trimmed = trimAscii(text);
  if (trimmed.empty()) return invalid(fmt::format("empty {}; {}", what, accepted));
  if (trimmed.front() == '-') return invalid(fmt::format("{}: a {} cannot be negative", quoteValue(trimmed), what));
  std::string_view rest = trimmed;
  Decimal number;
  const NumberScan scan = readDecimal(rest, number);
  if (scan == NumberScan::kTooLarge) return invalid(fmt::format("{} is too large", quoteValue(trimmed)));
  if (scan == NumberScan::kTooPrecise)
    return invalid(fmt::format("{} has too many decimal places", quoteValue(trimmed)));
  const auto unit = std::find_if(units.begin(), units.end(), [&](const Unit& u) { return u.suffix == rest; });
  if (scan == NumberScan::kMissing || unit == units.end()) {
    return invalid(fmt::format("{} is not a {}; {}", quoteValue(trimmed), what, accepted));
  }
  int64_t value = 0;
  switch (scaleDecimal(number, unit->scale, value)) {
    case Scaled::kOk: return value;
    case Scaled::kInexact: return invalid(fmt::format("{} {}", quoteValue(trimmed), inexact));
    case Scaled::kOverflow: break;
  }
  return invalid(fmt::format("{} is too large", quoteValue(trimmed)));
}

constexpr int64_t kKi = 1024;
constexpr int64_t kK = 1000;

const std::vector<Unit>& memoryUnits() {
  static const std::vector<Unit> units{
      {"", 1},
      {"k", kK},
      {"M", kK * kK},
      {"G", kK * kK * kK},
      {"T", kK * kK * kK * kK},
      {"P", kK * kK * kK * kK * kK},
      {"E", kK * kK * kK * kK * kK * kK},
      {"Ki", kKi},
      {"Mi", kKi * kKi},
      {"Gi", kKi * kKi * kKi},
      {"Ti", kKi * kKi * kKi * kKi},
      {"Pi", kKi * kKi * kKi * kKi * kKi},
      {"Ei", kKi * kKi * kKi * kKi * kKi * kKi},
  };
  return units;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API.

Result<milliseconds> parseDuration(const std::string& text) {
  constexpr std::string_view kAccepted = "write a number with a unit (ms, s, m, h), e.g. 30s, 5m, 1h30m or 1500ms";
  const std::string_view whole = trimAscii(text);
  if (whole.empty()) return invalid(fmt::format("empty duration; {}", kAccepted));
  if (whole.front() == '-') return invalid(fmt::format("{}: a duration cannot be negative", quoteValue(whole)));
  static constexpr std::array<Unit, 4> kUnits{{{"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 60 * 60 * 1000}}};
  std::string_view rest = whole;
  int64_t total = 0;
  while (!rest.empty()) {
    Decimal number;
    const NumberScan scan = readDecimal(rest, number);
    if (scan == NumberScan::kTooLarge) return invalid(fmt::format("{} is too long", quoteValue(whole)));
    if (scan == NumberScan::kTooPrecise)
      return invalid(fmt::format("{} has too many decimal places", quoteValue(whole)));
    if (scan == NumberScan::kMissing)
      return invalid(fmt::format("{} is not a duration; {}", quoteValue(whole), kAccepted));
    const size_t unitLength = static_cast<size_t>(std::find_if_not(rest.begin(), rest.end(), isAlpha) - rest.begin());
    const std::string_view suffix = rest.substr(0, unitLength);
    rest.remove_prefix(unitLength);
    if (suffix.empty()) {
      return invalid(
          fmt::format("{} has a number without a unit; add one of ms, s, m, h (e.g. \"30s\")", quoteValue(whole)));
    }
    const auto unit = std::find_if(kUnits.begin(), kUnits.end(), [&](const Unit& u) { return u.suffix == suffix; });
    if (unit == kUnits.end()) {
      return invalid(fmt::format("{}: unknown unit {}; use ms, s, m or h", quoteValue(whole), quoteValue(suffix)));
    }
    int64_t part = 0;
    const Scaled scaled = scaleDecimal(number, unit->scale, part);
    if (scaled == Scaled::kInexact) return invalid(fmt::format("{} is finer than a millisecond", quoteValue(whole)));
    if (scaled == Scaled::kOverflow || __builtin_add_overflow(total, part, &total)) {
      return invalid(fmt::format("{} is too long", quoteValue(whole)));
    }
  }
  return milliseconds(total);
}

std::string formatDuration(milliseconds d) {
  const int64_t ms = d.count();
  if (ms < 0) {
    return ms == std::numeric_limits<int64_t>::min() ? fmt::format("{}ms", ms) : "-" + formatDuration(-d);
  }
  if (ms % 1000 != 0) return fmt::format("{}ms", ms);
  const int64_t seconds = ms / 1000;
  if (seconds == 0) return "0s";
  std::string out;
  if (const int64_t hours = seconds / 3600; hours > 0) out += fmt::format("{}h", hours);
  if (const int64_t minutes = seconds % 3600 / 60; minutes > 0) out += fmt::format("{}m", minutes);
  if (const int64_t rest = seconds % 60; rest > 0) out += fmt::format("{}s", rest);
  return out;
}

Result<int64_t> parseCpuQuantity(const std::string& text) {
  static const std::vector<Unit> kUnits{{"", 1000}, {"m", 1}};
  return parseQuantity(text, "CPU quantity", kUnits, "write cores (\"0.5\", \"2\") or millicores (\"250m\")",
                       "is finer than a millicore (1m = 0.001 CPU)");
}

std::string formatCpuQuantity(int64_t milli) {
  return milli % 1000 == 0 ? fmt::format("{}", milli / 1000) : fmt::format("{}m", milli);
}

Result<int64_t> parseMemoryQuantity(const std::string& text) {
  auto parsed = parseQuantity(text, "memory quantity", memoryUnits(),
                              "write bytes with an optional suffix k, M, G, T (powers of 1000) or Ki, Mi, Gi, Ti "
                              "(powers of 1024), e.g. 512Mi or 1Gi",
                              "is not a whole number of bytes");
  if (!parsed.ok() && trimAscii(text).ends_with("m")) {
    return invalid(parsed.message() + " (\"m\" would mean milli-bytes; for mebibytes write Mi)");
  }
  return parsed;
}

std::string formatMemoryQuantity(int64_t bytes) {
  if (bytes == 0) return "0";
  // Binary suffixes first (what operators write for memory), then decimal ones, else bytes.
  const auto& units = memoryUnits();
  for (auto it = units.rbegin(); it != units.rend(); ++it) {
    if (it->suffix.ends_with("i") && bytes % it->scale == 0) return fmt::format("{}{}", bytes / it->scale, it->suffix);
  }
  for (auto it = units.rbegin(); it != units.rend(); ++it) {
    if (!it->suffix.empty() && !it->suffix.ends_with("i") && bytes % it->scale == 0) {
      return fmt::format("{}{}", bytes / it->scale, it->suffix);
    }
  }
  return fmt::format("{}", bytes);
}

std::string envNameForKey(const std::string& key) {
  std::string name = "QCS_" + toUpper(key);
  std::replace(name.begin(), name.end(), '.', '_');
  return name;
}

const std::vector<std::string>& overridableKeys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> out;
    for (const KeySpec& spec : keyTable()) {
      if (spec.overridable()) out.push_back(spec.path);
    }
    return out;
  }();
  return keys;
}

Result<Config> parseConfig(const std::string& yaml, std::vector<std::string>* warnings) {
  try {
    Loader loader("agent.yaml");
    if (Status read = loader.readYaml(yaml); !read.ok()) return read.error();
    return loader.finish(warnings);
  } catch (const std::exception& e) {
    return makeError(ErrorCode::kInternal, fmt::format("reading the configuration: {}", e.what()));
  }
}

Result<Config> loadConfig(const LoadOptions& options, std::vector<std::string>* warnings) {
  try {
    Loader loader(options.path);
    std::error_code error;
    const bool exists = std::filesystem::exists(options.path, error);
    if (!exists && !error) {
      if (options.pathExplicit) {
        return makeError(ErrorCode::kNotFound, fmt::format("configuration file {} does not exist", options.path));
      }
    } else {
      if (std::filesystem::is_directory(options.path, error)) {
        return makeError(
            ErrorCode::kInvalidArgument,
            fmt::format("configuration file {} is a directory; give the path of a YAML file", options.path));
      }
      std::ifstream file(options.path, std::ios::binary);
      if (!file) {
        const int openError = errno;
        return makeError(openError == EACCES ? ErrorCode::kPermissionDenied : ErrorCode::kInternal,
                         fmt::format("cannot read configuration file {}: {}", options.path, std::strerror(openError)));
      }
      std::ostringstream contents;
      contents << file.rdbuf();
      if (Status read = loader.readYaml(contents.str()); !read.ok()) return read.error();
    }
    loader.applyEnvironment(options.environment);
    loader.applyOverrides(options.overrides);
    return loader.finish(warnings);
  } catch (const std::exception& e) {
    return makeError(ErrorCode::kInternal, fmt::format("reading the configuration {}: {}", options.path, e.what()));
  }
}

// Keys in table order, sections opened and closed as the paths change. Proxy URLs are shown with
// their password redacted, so a config holding proxy credentials is the one case that does not
// survive parseConfig(renderConfigYaml(c)) unchanged.
std::string renderConfigYaml(const Config& config) {
  static const std::set<std::string> kFlowSections{"sensor.resources",       "sensor.proxy",
                                                   "secrets.activation_id",  "secrets.customer_id",
                                                   "registry_auth.password", "supervision.backoff"};
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::vector<std::string> open;  // the sections currently open, outermost first
  for (const KeySpec& spec : keyTable()) {
    const std::vector<std::string> parts = splitPath(spec.path);
    const std::vector<std::string> parents(parts.begin(), parts.end() - 1);
    size_t common = 0;
    while (common < open.size() && common < parents.size() && open[common] == parents[common]) ++common;
    for (; open.size() > common; open.pop_back()) out << YAML::EndMap;
    while (open.size() < parents.size()) {
      const std::string& name = parents[open.size()];
      open.push_back(name);
      out << YAML::Key << name << YAML::Value;
      if (kFlowSections.count(join(open, ".")) > 0) out << YAML::Flow;
      out << YAML::BeginMap;
    }
    if (!spec.isScalar()) {
      out << YAML::Key << parts.back() << YAML::Value;
      spec.emitValue(out, config);
      continue;
    }
    const std::string value = spec.get(config);
    if (spec.renderOnlyWhenSet && value.empty()) continue;
    out << YAML::Key << parts.back() << YAML::Value << (spec.mayHoldCredentials ? redactUrl(value) : value);
  }
  for (; !open.empty(); open.pop_back()) out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace qcs::agent

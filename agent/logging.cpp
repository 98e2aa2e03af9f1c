#include "agent/logging.h"

#include "agent/journald.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>

namespace qcs::agent {

void SecretRedactor::add(const std::string& value) {
  if (value.size() < 4) return;
  std::lock_guard lock(mu_);
  if (std::find(values_.begin(), values_.end(), value) == values_.end()) values_.push_back(value);
}

void SecretRedactor::apply(std::string& text) const {
  std::lock_guard lock(mu_);
  for (const auto& value : values_) {
    for (size_t pos = text.find(value); pos != std::string::npos; pos = text.find(value, pos)) {
      text.replace(pos, value.size(), "[redacted]");
      pos += 10;
    }
  }
}

namespace {

std::string isoTime(std::chrono::system_clock::time_point tp) {
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(tp);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(tp - secs).count();
  std::time_t t = std::chrono::system_clock::to_time_t(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[64];
  std::snprintf(out, sizeof out, "%s.%06lldZ", buf, static_cast<long long>(micros));
  return out;
}

// One JSON object per line: {"ts","level","msg","logger"}.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    nlohmann::json line{{"ts", isoTime(msg.time)},
                        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                              spdlog::level::to_string_view(msg.level).size())},
                        {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text.push_back('\n');
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

// Formats with the inner formatter, then scrubs secrets from the finished line.
class RedactingFormatter final : public spdlog::formatter {
 public:
  RedactingFormatter(std::unique_ptr<spdlog::formatter> inner, std::shared_ptr<SecretRedactor> redactor)
      : inner_(std::move(inner)), redactor_(std::move(redactor)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    spdlog::memory_buf_t formatted;
    inner_->format(msg, formatted);
    std::string text(formatted.data(), formatted.size());
    if (redactor_) redactor_->apply(text);
    dest.append(text.data(), text.data() + text.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<RedactingFormatter>(inner_->clone(), redactor_);
  }

 private:
  std::unique_ptr<spdlog::formatter> inner_;
  std::shared_ptr<SecretRedactor> redactor_;
};

}  // namespace

Status setupLogging(const std::string& level, const std::string& format, std::shared_ptr<SecretRedactor> redactor,
                    std::shared_ptr<const LogContext> journalContext) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    return makeError(ErrorCode::kInvalidArgument, "logging.level: \"" + level + "\" is not a log level");
  }
  std::unique_ptr<spdlog::formatter> inner;
  if (format == "json") {
    inner = std::make_unique<JsonFormatter>();
  } else if (format == "text") {
    inner = std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%fZ %^%-5l%$ %v",
                                                        spdlog::pattern_time_type::utc);
  } else {
    return makeError(ErrorCode::kInvalidArgument, "logging.format: \"" + format + "\" is not text or json");
  }
  const bool toJournal = journalContext && stderrIsJournal();
  spdlog::sink_ptr sink;
  if (toJournal) {
    sink = std::make_shared<JournalSink>(makeSystemdJournalWriter(), std::move(redactor), std::move(journalContext));
  } else {
    sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_formatter(std::make_unique<RedactingFormatter>(std::move(inner), std::move(redactor)));
  }
  auto logger = std::make_shared<spdlog::logger>("qcs-agent", sink);
  logger->set_level(lvl);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  if (toJournal) {
    spdlog::info(
        "logging to journald with structured fields (stderr is the journal stream); logging.format {} "
        "does not apply",
        format);
  }
  return okStatus();
}

}  // namespace qcs::agent

#include "agent/journald.h"

#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>

// The sink passes the caller's location itself; without this, sd_journal_sendv is a macro that
// would stamp every entry with this file's CODE_FILE/CODE_LINE.
#ifndef SD_JOURNAL_SUPPRESS_LOCATION
#define SD_JOURNAL_SUPPRESS_LOCATION
#endif
#include <systemd/sd-journal.h>

#include <charconv>
#include <cstdlib>
#include <limits>

namespace qcs::agent {

namespace {

std::optional<uint64_t> parseDecimal(std::string_view text) {
  // from_chars takes no sign, space or prefix for unsigned types; the end check rejects trailing junk.
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

class SystemdJournalWriter final : public JournalWriter {
 public:
  int send(const std::vector<std::string>& fields) override {
    if (fields.size() > static_cast<size_t>(std::numeric_limits<int>::max())) return -E2BIG;
    std::vector<iovec> iov;
    iov.reserve(fields.size());
    for (const auto& field : fields) {
      iov.push_back(iovec{const_cast<char*>(field.data()), field.size()});
    }
    return sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
  }
};

}  // namespace

std::optional<JournalStreamId> parseJournalStream(std::string_view value) {
  auto colon = value.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto device = parseDecimal(value.substr(0, colon));
  auto inode = parseDecimal(value.substr(colon + 1));
  if (!device || !inode) return std::nullopt;
  return JournalStreamId{*device, *inode};
}

bool isJournalStream(int fd, const std::optional<std::string>& journalStream) {
  if (!journalStream) return false;
  auto id = parseJournalStream(*journalStream);
  if (!id) return false;
  struct stat st {};
  if (fstat(fd, &st) != 0) return false;
  return static_cast<uint64_t>(st.st_dev) == id->device && static_cast<uint64_t>(st.st_ino) == id->inode;
}

bool stderrIsJournal() {
  const char* value = std::getenv("JOURNAL_STREAM");
  return isJournalStream(2, value ? std::optional<std::string>(value) : std::nullopt);
}

void LogContext::set(Fields fields) {
  std::lock_guard lock(mu_);
  fields_ = std::move(fields);
}

LogContext::Fields LogContext::get() const {
  std::lock_guard lock(mu_);
  return fields_;
}

std::unique_ptr<JournalWriter> makeSystemdJournalWriter() { return std::make_unique<SystemdJournalWriter>(); }

int journalPriority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return LOG_DEBUG;
    case spdlog::level::info: return LOG_INFO;
    case spdlog::level::warn: return LOG_WARNING;
    case spdlog::level::err: return LOG_ERR;
    case spdlog::level::critical: return LOG_CRIT;
    default: return LOG_INFO;
  }
}

JournalSink::JournalSink(std::unique_ptr<JournalWriter> writer, std::shared_ptr<SecretRedactor> redactor,
                         std::shared_ptr<const LogContext> context)
    : writer_(std::move(writer)), redactor_(std::move(redactor)), context_(std::move(context)) {}

void JournalSink::sink_it_(const spdlog::details::log_msg& msg) {
  // Values are scrubbed before the field name is prefixed, so a secret can never mangle a name.
  auto field = [this](std::string_view name, std::string value) {
    if (redactor_) redactor_->apply(value);
    std::string out;
    out.reserve(name.size() + 1 + value.size());
    out.append(name).push_back('=');
    out.append(value);
    return out;
  };
  std::vector<std::string> fields;
  fields.reserve(9);
  fields.push_back(field("MESSAGE", std::string(msg.payload.data(), msg.payload.size())));
  fields.push_back("PRIORITY=" + std::to_string(journalPriority(msg.level)));
  fields.push_back("SYSLOG_IDENTIFIER=qcs-agent");
  if (!msg.source.empty()) {
    fields.push_back(field("CODE_FILE", msg.source.filename));
    fields.push_back("CODE_LINE=" + std::to_string(msg.source.line));
    if (msg.source.funcname != nullptr && *msg.source.funcname != '\0') {
      fields.push_back(field("CODE_FUNC", msg.source.funcname));
    }
  }
  if (context_) {
    auto context = context_->get();
    if (!context.runtime.empty()) fields.push_back(field("QCS_RUNTIME", std::move(context.runtime)));
    if (!context.containerId.empty()) fields.push_back(field("QCS_CONTAINER_ID", std::move(context.containerId)));
    if (!context.sensorState.empty()) fields.push_back(field("QCS_SENSOR_STATE", std::move(context.sensorState)));
  }
  int rc = -1;
  try {
    rc = writer_ ? writer_->send(fields) : -1;
  } catch (...) {
    rc = -1;  // the contract says writers do not throw; a logger must not take the caller down regardless
  }
  if (rc < 0) sendFailures_.fetch_add(1);
}

}  // namespace qcs::agent

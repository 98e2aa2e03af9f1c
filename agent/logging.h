// Logging setup: spdlog to journald (when started by systemd) or to stderr as text or JSON lines, with every registered
// secret value scrubbed from every line as a last line of defence (code must not log secrets in the first place; this
// catches what a peer echoes back, e.g. a registry error quoting a token).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/result.h"

namespace qcs::agent {

class SecretRedactor {
 public:
  // Registers a value to scrub. Values shorter than 4 characters are ignored (they would
  // mangle ordinary words).
  void add(const std::string& value);
  // Replaces every registered value in `text` with "[redacted]".
  void apply(std::string& text) const;

 private:
  mutable std::mutex mu_;
  std::vector<std::string> values_;
};

class LogContext;  // agent/journald.h

// Installs the default logger. level: trace|debug|info|warn|error|critical|off; format: text|json.
// With a journalContext and stderr connected to the journal (JOURNAL_STREAM, see agent/journald.h),
// records go to journald as structured entries carrying that context, and format does not apply;
// otherwise they go to stderr in the given format.
Status setupLogging(const std::string& level, const std::string& format, std::shared_ptr<SecretRedactor> redactor,
                    std::shared_ptr<const LogContext> journalContext = nullptr);

}  // namespace qcs::agent

// journald logging: structured log records for the systemd journal.
//
// Contract:
// - stderrIsJournal() follows systemd.exec(5): a service whose stderr is connected to the journal
//   gets JOURNAL_STREAM="<device>:<inode>" (decimal) of that stream. Only when fd 2 still is that
//   stream (a shell redirect or a child process inheriting the variable does not count) should the
//   process switch to native journal records.
// - JournalSink sends one entry per spdlog record: MESSAGE (the payload, scrubbed by the
//   SecretRedactor), PRIORITY (syslog level), SYSLOG_IDENTIFIER=qcs-agent, CODE_FILE/CODE_LINE/
//   CODE_FUNC when the record has a source location, and the agent's context from LogContext
//   (QCS_RUNTIME, QCS_CONTAINER_ID, QCS_SENSOR_STATE; omitted while empty).
// - Sending never throws and never blocks the caller for long: a failed send (journald gone, no
//   socket) is counted and dropped, since a logger cannot usefully log its own failure.
#pragma once

#include <spdlog/sinks/base_sink.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/logging.h"

namespace qcs::agent {

// JOURNAL_STREAM's value parsed: "<device>:<inode>", both unsigned decimal.
struct JournalStreamId {
  uint64_t device = 0;
  uint64_t inode = 0;
};
std::optional<JournalStreamId> parseJournalStream(std::string_view value);

// Whether `fd` is the stream named by `journalStream` (the value of JOURNAL_STREAM, nullopt when
// unset). Malformed values and fds that cannot be stat'ed count as "not the journal".
bool isJournalStream(int fd, const std::optional<std::string>& journalStream);

// isJournalStream(2, getenv("JOURNAL_STREAM")).
bool stderrIsJournal();

// What the agent is doing right now, attached to every journal record. Written by the
// composition root when the supervisor's status changes, read by the sink on any logging thread.
class LogContext {
 public:
  struct Fields {
    std::string runtime;      // "docker", "containerd"; empty before detection
    std::string containerId;  // the sensor container's full ID; empty when there is none
    std::string sensorState;  // sensorStateName(): "running", "backoff", ...
  };
  void set(Fields fields);
  Fields get() const;

 private:
  mutable std::mutex mu_;
  Fields fields_;
};

// Sends one journal entry made of "NAME=value" fields (the edge around sd_journal_sendv).
class JournalWriter {
 public:
  virtual ~JournalWriter() = default;
  // Returns 0 on success or a negative errno. Must not throw.
  virtual int send(const std::vector<std::string>& fields) = 0;
};

// The sd_journal_sendv implementation (talks to /run/systemd/journal/socket).
std::unique_ptr<JournalWriter> makeSystemdJournalWriter();

// spdlog level -> syslog priority (LOG_DEBUG .. LOG_CRIT).
int journalPriority(spdlog::level::level_enum level);

class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  // redactor and context may be null (no scrubbing, no context fields).
  JournalSink(std::unique_ptr<JournalWriter> writer, std::shared_ptr<SecretRedactor> redactor,
              std::shared_ptr<const LogContext> context);

  // Entries the writer refused since construction.
  uint64_t sendFailures() const { return sendFailures_.load(); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}

 private:
  std::unique_ptr<JournalWriter> writer_;
  std::shared_ptr<SecretRedactor> redactor_;
  std::shared_ptr<const LogContext> context_;
  std::atomic<uint64_t> sendFailures_{0};
};

}  // namespace qcs::agent

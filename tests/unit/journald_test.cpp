#include "agent/journald.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace qcs::agent {
namespace {

using ::testing::Contains;
using ::testing::Each;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// Records every entry instead of sending it.
class CapturingWriter final : public JournalWriter {
 public:
  explicit CapturingWriter(std::vector<std::vector<std::string>>& entries, int result = 0)
      : entries_(entries), result_(result) {}
  int send(const std::vector<std::string>& fields) override {
    entries_.push_back(fields);
    return result_;
  }

 private:
  std::vector<std::vector<std::string>>& entries_;
  int result_;
};

std::string streamIdOf(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return std::to_string(static_cast<uint64_t>(st.st_dev)) + ":" + std::to_string(static_cast<uint64_t>(st.st_ino));
}

// An open file in a fresh temporary directory, closed and removed at the end of the test.
class TempFile {
 public:
  explicit TempFile(const char* name) {
    std::string templ = (std::filesystem::temp_directory_path() / "qcs-journald-XXXXXX").string();
    dir_ = mkdtemp(templ.data());
    path_ = dir_ + "/" + name;
    fd_ = open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  }
  ~TempFile() {
    if (fd_ >= 0) close(fd_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  int fd() const { return fd_; }

 private:
  std::string dir_, path_;
  int fd_ = -1;
};

// The fields of one entry that start with `name=`.
std::vector<std::string> fieldsNamed(const std::vector<std::string>& entry, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& f : entry) {
    if (f.rfind(name + "=", 0) == 0) out.push_back(f);
  }
  return out;
}

TEST(JournalStreamTest, ParsesDeviceAndInode) {
  auto id = parseJournalStream("2049:123456789");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->device, 2049u);
  EXPECT_EQ(id->inode, 123456789u);
  id = parseJournalStream("18446744073709551615:0");
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(id->device, 18446744073709551615u);
}

TEST(JournalStreamTest, RejectsMalformedValues) {
  for (const char* value : {"", ":", "12", "12:", ":34", "a:b", "1:2x", "x1:2", "-1:2", "+1:2", " 1:2", "1: 2", "1:2:3",
                            "0x10:2", "18446744073709551616:1"}) {
    EXPECT_FALSE(parseJournalStream(value).has_value()) << "\"" << value << "\"";
  }
}

TEST(JournalStreamTest, MatchesTheFdItNames) {
  TempFile file("stream");
  ASSERT_GE(file.fd(), 0);
  EXPECT_TRUE(isJournalStream(file.fd(), streamIdOf(file.fd())));
}

TEST(JournalStreamTest, DoesNotMatchAnotherStream) {
  TempFile journal("journal");
  TempFile other("other");
  ASSERT_GE(journal.fd(), 0);
  ASSERT_GE(other.fd(), 0);
  // A pipe too: what a shell redirect or a supervisor other than systemd would hand the agent.
  int pipeFds[2];
  ASSERT_EQ(pipe(pipeFds), 0);
  const std::string journalId = streamIdOf(journal.fd());
  EXPECT_FALSE(isJournalStream(other.fd(), journalId));
  EXPECT_FALSE(isJournalStream(pipeFds[1], journalId));
  close(pipeFds[0]);
  close(pipeFds[1]);
}

TEST(JournalStreamTest, UnsetMalformedOrUnstatableIsNotTheJournal) {
  TempFile file("stream");
  ASSERT_GE(file.fd(), 0);
  const std::string id = streamIdOf(file.fd());
  EXPECT_FALSE(isJournalStream(file.fd(), std::nullopt));
  EXPECT_FALSE(isJournalStream(file.fd(), ""));
  EXPECT_FALSE(isJournalStream(file.fd(), id + "x"));
  EXPECT_FALSE(isJournalStream(file.fd(), id.substr(0, id.find(':'))));
  EXPECT_FALSE(isJournalStream(-1, id));
}

TEST(JournalPriorityTest, MapsSpdlogLevelsToSyslogPriorities) {
  EXPECT_EQ(journalPriority(spdlog::level::trace), LOG_DEBUG);
  EXPECT_EQ(journalPriority(spdlog::level::debug), LOG_DEBUG);
  EXPECT_EQ(journalPriority(spdlog::level::info), LOG_INFO);
  EXPECT_EQ(journalPriority(spdlog::level::warn), LOG_WARNING);
  EXPECT_EQ(journalPriority(spdlog::level::err), LOG_ERR);
  EXPECT_EQ(journalPriority(spdlog::level::critical), LOG_CRIT);
}

class JournalSinkTest : public ::testing::Test {
 protected:
  JournalSinkTest()
      : redactor_(std::make_shared<SecretRedactor>()),
        context_(std::make_shared<LogContext>()),
        sink_(std::make_shared<JournalSink>(std::make_unique<CapturingWriter>(entries_), redactor_, context_)),
        logger_("test", sink_) {
    logger_.set_level(spdlog::level::trace);
  }

  std::vector<std::vector<std::string>> entries_;
  std::shared_ptr<SecretRedactor> redactor_;
  std::shared_ptr<LogContext> context_;
  std::shared_ptr<JournalSink> sink_;
  spdlog::logger logger_;
};

TEST_F(JournalSinkTest, SendsMessagePriorityAndIdentifier) {
  logger_.warn("pull of {} failed: {}", "qualys/qcs-sensor:1.2", "timeout");
  ASSERT_EQ(entries_.size(), 1u);
  const auto& entry = entries_[0];
  EXPECT_THAT(entry, Contains("MESSAGE=pull of qualys/qcs-sensor:1.2 failed: timeout"));
  EXPECT_THAT(entry, Contains("PRIORITY=4"));
  EXPECT_THAT(entry, Contains("SYSLOG_IDENTIFIER=qcs-agent"));
  // No source location from spdlog::warn(), and an empty context adds nothing.
  EXPECT_THAT(entry, Each(Not(StartsWith("CODE_"))));
  EXPECT_THAT(entry, Each(Not(StartsWith("QCS_"))));
  EXPECT_EQ(sink_->sendFailures(), 0u);
}

TEST_F(JournalSinkTest, ScrubsRegisteredSecretsFromEveryValue) {
  const std::string secret = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
  redactor_->add(secret);
  context_->set({"docker", "abc" + secret, "running"});
  logger_.error("registry said: bad activation id {} (twice: {})", secret, secret);
  ASSERT_EQ(entries_.size(), 1u);
  const auto& entry = entries_[0];
  EXPECT_THAT(entry, Contains("MESSAGE=registry said: bad activation id [redacted] (twice: [redacted])"));
  EXPECT_THAT(entry, Contains("QCS_CONTAINER_ID=abc[redacted]"));
  EXPECT_THAT(entry, Each(Not(HasSubstr(secret))));
  EXPECT_THAT(entry, Contains("PRIORITY=3"));
}

TEST_F(JournalSinkTest, SendsSourceLocationWhenTheRecordHasOne) {
  logger_.log(spdlog::source_loc{"agent/supervisor.cpp", 412, "reconcile"}, spdlog::level::info, "reconciled");
  ASSERT_EQ(entries_.size(), 1u);
  const auto& entry = entries_[0];
  EXPECT_THAT(entry, Contains("CODE_FILE=agent/supervisor.cpp"));
  EXPECT_THAT(entry, Contains("CODE_LINE=412"));
  EXPECT_THAT(entry, Contains("CODE_FUNC=reconcile"));
  EXPECT_THAT(entry, Contains("PRIORITY=6"));
}

TEST_F(JournalSinkTest, CarriesTheCurrentContextOnEachRecord) {
  context_->set({"docker", "", "pulling"});
  logger_.info("pulling");
  context_->set({"docker", "4f2a9c1e8b7d", "running"});
  logger_.info("started");
  context_->set({"docker", "4f2a9c1e8b7d", "backoff"});
  logger_.info("exited");
  ASSERT_EQ(entries_.size(), 3u);

  EXPECT_THAT(entries_[0], Contains("QCS_RUNTIME=docker"));
  EXPECT_THAT(entries_[0], Contains("QCS_SENSOR_STATE=pulling"));
  EXPECT_TRUE(fieldsNamed(entries_[0], "QCS_CONTAINER_ID").empty());  // no container yet: omitted, not empty

  EXPECT_THAT(entries_[1], Contains("QCS_CONTAINER_ID=4f2a9c1e8b7d"));
  EXPECT_THAT(entries_[1], Contains("QCS_SENSOR_STATE=running"));

  EXPECT_EQ(fieldsNamed(entries_[2], "QCS_SENSOR_STATE"), std::vector<std::string>{"QCS_SENSOR_STATE=backoff"});
  EXPECT_EQ(fieldsNamed(entries_[2], "QCS_RUNTIME"), std::vector<std::string>{"QCS_RUNTIME=docker"});
}

TEST(JournalSinkFailureTest, CountsAndSwallowsWriterErrors) {
  std::vector<std::vector<std::string>> entries;
  auto sink = std::make_shared<JournalSink>(std::make_unique<CapturingWriter>(entries, -ENOENT), nullptr, nullptr);
  spdlog::logger logger("test", sink);
  logger.info("one");
  logger.error("two");
  EXPECT_EQ(entries.size(), 2u);
  EXPECT_EQ(sink->sendFailures(), 2u);
}

// The real sd_journal_sendv on a machine without journald. libsystemd drops the entry and returns 0
// when /run/systemd/journal/socket does not exist (ENOENT), so nothing fails here; refusals the
// sink does see (EAGAIN, EMSGSIZE, ...) are covered by CountsAndSwallowsWriterErrors.
TEST(SystemdJournalWriterTest, RealSendWithoutAJournalSocketDoesNotFail) {
  const bool journalRunning = std::filesystem::exists("/run/systemd/journal/socket");
  auto writer = makeSystemdJournalWriter();
  int rc = writer->send(
      {"MESSAGE=qcs-agent unit test", "PRIORITY=7", "SYSLOG_IDENTIFIER=qcs-agent-test", "QCS_MULTILINE=two\nlines"});
  if (!journalRunning) {
    EXPECT_EQ(rc, 0);
  }

  auto sink = std::make_shared<JournalSink>(makeSystemdJournalWriter(), std::make_shared<SecretRedactor>(),
                                            std::make_shared<LogContext>());
  spdlog::logger logger("test", sink);
  logger.set_level(spdlog::level::trace);
  EXPECT_NO_THROW(logger.debug("qcs-agent unit test through the sink\nsecond line"));
  if (!journalRunning) {
    EXPECT_EQ(sink->sendFailures(), 0u);
  }
}

// setupLogging picks the journal only when handed a context and fd 2 is the stream JOURNAL_STREAM names.
class LoggingDestinationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* v = std::getenv("JOURNAL_STREAM")) saved_ = v;
  }
  void TearDown() override {
    if (saved_) {
      setenv("JOURNAL_STREAM", saved_->c_str(), 1);
    } else {
      unsetenv("JOURNAL_STREAM");
    }
    ASSERT_TRUE(setupLogging("info", "text", nullptr).ok());
  }
  static bool defaultLoggerIsJournal() {
    const auto& sinks = spdlog::default_logger()->sinks();
    return sinks.size() == 1 && std::dynamic_pointer_cast<JournalSink>(sinks[0]) != nullptr;
  }
  std::optional<std::string> saved_;
};

TEST_F(LoggingDestinationTest, JournalWhenStderrIsTheJournalStream) {
  ASSERT_EQ(setenv("JOURNAL_STREAM", streamIdOf(2).c_str(), 1), 0);
  ASSERT_TRUE(setupLogging("info", "json", std::make_shared<SecretRedactor>(), std::make_shared<LogContext>()).ok());
  EXPECT_TRUE(defaultLoggerIsJournal());
}

TEST_F(LoggingDestinationTest, StderrOtherwise) {
  TempFile file("elsewhere");
  ASSERT_GE(file.fd(), 0);
  ASSERT_EQ(setenv("JOURNAL_STREAM", streamIdOf(file.fd()).c_str(), 1), 0);
  ASSERT_TRUE(setupLogging("info", "text", nullptr, std::make_shared<LogContext>()).ok());
  EXPECT_FALSE(defaultLoggerIsJournal());

  unsetenv("JOURNAL_STREAM");
  ASSERT_TRUE(setupLogging("info", "text", nullptr, std::make_shared<LogContext>()).ok());
  EXPECT_FALSE(defaultLoggerIsJournal());

  // Without a context the caller did not ask for the journal, whatever the environment says.
  ASSERT_EQ(setenv("JOURNAL_STREAM", streamIdOf(2).c_str(), 1), 0);
  ASSERT_TRUE(setupLogging("info", "text", nullptr).ok());
  EXPECT_FALSE(defaultLoggerIsJournal());
}

TEST_F(LoggingDestinationTest, FormatIsStillValidatedForTheJournal) {
  ASSERT_EQ(setenv("JOURNAL_STREAM", streamIdOf(2).c_str(), 1), 0);
  EXPECT_FALSE(setupLogging("info", "xml", nullptr, std::make_shared<LogContext>()).ok());
  EXPECT_FALSE(setupLogging("loud", "text", nullptr, std::make_shared<LogContext>()).ok());
}

}  // namespace
}  // namespace qcs::agent

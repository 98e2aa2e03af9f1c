#include "runtime/containerd/sensor_log.h"

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "sensor_log_fixture.h"

namespace qcs::runtime::containerd {
namespace {

namespace fs = std::filesystem;
using std::chrono::system_clock;
using Lines = std::vector<std::string>;

class SensorLogTest : public testing::SensorLogFixture {
 protected:
  static std::string numbered(int from, int to) {
    std::string text;
    for (int i = from; i <= to; ++i) text += "line " + std::to_string(i) + "\n";
    return text;
  }
};

// --- capSensorLog ---

TEST_F(SensorLogTest, CapLeavesAFileOfAtMostMaxBytes) {
  write(log_, std::string(100, 'x'));
  auto rotated = capSensorLog(log_, {.maxBytes = 100, .keep = 1});
  ASSERT_TRUE(rotated.ok()) << rotated.message();
  EXPECT_FALSE(*rotated);
  EXPECT_EQ(read(log_), std::string(100, 'x'));
  EXPECT_FALSE(fs::exists(log_ + ".1"));
}

TEST_F(SensorLogTest, CapRotatesAFileAboveMaxBytes) {
  const std::string content = std::string(100, 'x') + "\n";
  write(log_, content);
  auto rotated = capSensorLog(log_, {.maxBytes = 100, .keep = 1});
  ASSERT_TRUE(rotated.ok()) << rotated.message();
  EXPECT_TRUE(*rotated);
  EXPECT_EQ(fs::file_size(log_), 0u);
  EXPECT_EQ(read(log_ + ".1"), content);
  EXPECT_FALSE(fs::exists(log_ + ".1.tmp"));
}

TEST_F(SensorLogTest, CapWithKeepOneReplacesTheCopy) {
  write(log_, "first rotation\n");
  ASSERT_TRUE(*capSensorLog(log_, {.maxBytes = 4, .keep = 1}));
  write(log_, "second rotation\n");
  ASSERT_TRUE(*capSensorLog(log_, {.maxBytes = 4, .keep = 1}));
  EXPECT_EQ(read(log_ + ".1"), "second rotation\n");
  EXPECT_FALSE(fs::exists(log_ + ".2"));
}

TEST_F(SensorLogTest, CapWithKeepThreeShiftsAndDropsTheOldest) {
  for (const char* content : {"A\n", "B\n", "C\n", "D\n"}) {
    write(log_, content);
    auto rotated = capSensorLog(log_, {.maxBytes = 1, .keep = 3});
    ASSERT_TRUE(rotated.ok()) << rotated.message();
    ASSERT_TRUE(*rotated);
  }
  EXPECT_EQ(read(log_ + ".1"), "D\n");
  EXPECT_EQ(read(log_ + ".2"), "C\n");
  EXPECT_EQ(read(log_ + ".3"), "B\n");
  EXPECT_FALSE(fs::exists(log_ + ".4"));
  EXPECT_EQ(fs::file_size(log_), 0u);
}

// What the runc shim does: one O_APPEND descriptor held across the rotation.
TEST_F(SensorLogTest, AppenderKeepsWritingAtTheStartAfterARotation) {
  const int fd = ::open(log_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const std::string before = numbered(1, 200);
  ASSERT_EQ(::write(fd, before.data(), before.size()), static_cast<ssize_t>(before.size()));

  auto rotated = capSensorLog(log_, {.maxBytes = 1024, .keep = 1});
  ASSERT_TRUE(rotated.ok()) << rotated.message();
  ASSERT_TRUE(*rotated);

  const std::string after = "after rotation\n";
  ASSERT_EQ(::write(fd, after.data(), after.size()), static_cast<ssize_t>(after.size()));
  ::close(fd);
  EXPECT_EQ(read(log_), after);  // no hole of zeros before it
  EXPECT_EQ(read(log_ + ".1"), before);
}

TEST_F(SensorLogTest, CapKeepsTheModificationTimeAndTheMode) {
  write(log_, numbered(1, 50));
  ASSERT_EQ(::chmod(log_.c_str(), 0604), 0);
  const auto written = system_clock::now() - std::chrono::hours(2);
  setModified(log_, written);

  ASSERT_TRUE(*capSensorLog(log_, {.maxBytes = 10, .keep = 1}));
  auto last = sensorLogLastWrite(log_, written - std::chrono::seconds(1));
  ASSERT_TRUE(last.ok()) << last.message();
  ASSERT_TRUE(last->has_value());
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::microseconds>(**last - written).count(), 0);
  EXPECT_FALSE(sensorLogLastWrite(log_, system_clock::now() - std::chrono::hours(1))->has_value());
  EXPECT_EQ(fs::status(log_ + ".1").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_read);
}

TEST_F(SensorLogTest, CapOfAMissingFileDoesNothing) {
  auto rotated = capSensorLog(log_, {});
  ASSERT_TRUE(rotated.ok()) << rotated.message();
  EXPECT_FALSE(*rotated);
  EXPECT_FALSE(fs::exists(log_ + ".1"));
}

TEST_F(SensorLogTest, CapRejectsInvalidLimits) {
  write(log_, "x\n");
  for (const SensorLogLimits limits :
       {SensorLogLimits{.maxBytes = 0, .keep = 1}, SensorLogLimits{.maxBytes = 10, .keep = 0},
        SensorLogLimits{.maxBytes = -1, .keep = 1}}) {
    auto rotated = capSensorLog(log_, limits);
    ASSERT_FALSE(rotated.ok());
    EXPECT_EQ(rotated.code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_EQ(read(log_), "x\n");
}

TEST_F(SensorLogTest, CapRefusesADirectory) {
  fs::create_directory(log_);
  auto rotated = capSensorLog(log_, {.maxBytes = 1, .keep = 1});
  ASSERT_FALSE(rotated.ok());
  EXPECT_NE(rotated.message().find(log_), std::string::npos) << rotated.message();
}

// --- tailSensorLog ---

TEST_F(SensorLogTest, TailReturnsTheLastLinesOldestFirst) {
  write(log_, numbered(1, 10));
  auto tail = tailSensorLog(log_, 3);
  ASSERT_TRUE(tail.ok()) << tail.message();
  EXPECT_EQ(*tail, (Lines{"line 8", "line 9", "line 10"}));
}

TEST_F(SensorLogTest, TailOfAShortFileReturnsAllOfIt) {
  write(log_, numbered(1, 2));
  EXPECT_EQ(*tailSensorLog(log_, 50), (Lines{"line 1", "line 2"}));
}

TEST_F(SensorLogTest, TailReadsTheRotatedFileWhenTheLiveOneHoldsFewer) {
  write(log_ + ".1", numbered(1, 5));
  write(log_, numbered(6, 7));
  EXPECT_EQ(*tailSensorLog(log_, 4), (Lines{"line 4", "line 5", "line 6", "line 7"}));
  EXPECT_EQ(*tailSensorLog(log_, 2), (Lines{"line 6", "line 7"}));
  EXPECT_EQ(tailSensorLog(log_, 100)->size(), 7u);
}

TEST_F(SensorLogTest, TailAfterARealRotation) {
  write(log_, numbered(1, 30));
  ASSERT_TRUE(*capSensorLog(log_, {.maxBytes = 100, .keep = 2}));
  EXPECT_EQ(*tailSensorLog(log_, 2), (Lines{"line 29", "line 30"}));
}

TEST_F(SensorLogTest, TailCountsAPartialLastLine) {
  write(log_, "one\ntwo\nthree, still being writ");
  EXPECT_EQ(*tailSensorLog(log_, 2), (Lines{"two", "three, still being writ"}));
}

TEST_F(SensorLogTest, TailDropsCarriageReturnsAndKeepsEmptyLines) {
  write(log_, "a\r\n\r\n\nb\r\n");
  EXPECT_EQ(*tailSensorLog(log_, 10), (Lines{"a", "", "", "b"}));
  write(log_, "\n");
  EXPECT_EQ(*tailSensorLog(log_, 10), (Lines{""}));
}

TEST_F(SensorLogTest, TailOfMissingOrEmptyFiles) {
  auto none = tailSensorLog(log_, 5);
  ASSERT_TRUE(none.ok()) << none.message();
  EXPECT_TRUE(none->empty());
  write(log_, "");
  EXPECT_TRUE(tailSensorLog(log_, 5)->empty());
  write(log_ + ".1", "older\n");
  EXPECT_EQ(*tailSensorLog(log_, 5), (Lines{"older"}));
  EXPECT_TRUE(tailSensorLog(log_, 0)->empty());
}

TEST_F(SensorLogTest, TailOfABigFileIsItsEnd) {
  // 50 MiB of 100-byte lines; the 3000 asked for span several of the reader's blocks.
  constexpr int kLines = 50 * 1024 * 1024 / 100;
  {
    std::ofstream out(log_, std::ios::binary);
    char line[101];
    for (int i = 1; i <= kLines; ++i) {
      std::snprintf(line, sizeof line, "%-99d\n", i);
      out.write(line, 100);
    }
    ASSERT_TRUE(out.good());
  }
  ASSERT_EQ(fs::file_size(log_), static_cast<uintmax_t>(kLines) * 100);
  auto tail = tailSensorLog(log_, 3000);
  ASSERT_TRUE(tail.ok()) << tail.message();
  ASSERT_EQ(tail->size(), 3000u);
  for (size_t i = 0; i < tail->size(); ++i) {
    ASSERT_EQ(std::stoi((*tail)[i]), kLines - 3000 + 1 + static_cast<int>(i)) << i;
    ASSERT_EQ((*tail)[i].size(), 99u) << i;
  }
}

TEST_F(SensorLogTest, TailCutsALineLongerThanTheLimit) {
  write(log_ + ".1", "older\n");
  std::string huge(5 * kSensorLogMaxLineBytes, 'a');
  for (size_t i = 0; i < huge.size(); i += 1000) huge[i] = 'b';
  write(log_, "before\n" + huge);
  auto tail = tailSensorLog(log_, 1);
  ASSERT_TRUE(tail.ok()) << tail.message();
  ASSERT_EQ(tail->size(), 1u);
  EXPECT_EQ((*tail)[0], huge.substr(huge.size() - kSensorLogMaxLineBytes));
  // Two lines asked: still only the end of the long one, and nothing from the rotated file.
  auto two = tailSensorLog(log_, 2);
  ASSERT_TRUE(two.ok()) << two.message();
  ASSERT_EQ(two->size(), 1u);
  EXPECT_EQ((*two)[0], huge.substr(huge.size() - 2 * kSensorLogMaxLineBytes));
}

// --- sensorLogLastWrite ---

TEST_F(SensorLogTest, LastWriteIsTheModificationTimeSince) {
  auto missing = sensorLogLastWrite(log_, system_clock::time_point());
  ASSERT_TRUE(missing.ok()) << missing.message();
  EXPECT_FALSE(missing->has_value());

  write(log_, "hello\n");
  const auto at = system_clock::now() - std::chrono::minutes(10);
  setModified(log_, at);
  auto seen = sensorLogLastWrite(log_, at - std::chrono::seconds(1));
  ASSERT_TRUE(seen.ok()) << seen.message();
  ASSERT_TRUE(seen->has_value());
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::microseconds>(**seen - at).count(), 0);
  EXPECT_TRUE(sensorLogLastWrite(log_, at)->has_value());
  EXPECT_FALSE(sensorLogLastWrite(log_, at + std::chrono::seconds(1))->has_value());
}

// --- ensureSensorLogDir ---

TEST_F(SensorLogTest, EnsureDirCreatesParentsWithMode0750) {
  const std::string nested = dir_ + "/var/log/qcs-agent";
  auto created = ensureSensorLogDir(nested + "/");
  ASSERT_TRUE(created.ok()) << created.message();
  for (const std::string& path : {dir_ + "/var", dir_ + "/var/log", nested}) {
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0) << path;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << path;
    EXPECT_EQ(st.st_mode & 07777, 0750u) << path;
  }
}

TEST_F(SensorLogTest, EnsureDirLeavesAnExistingDirectoryAsItIs) {
  const std::string existing = dir_ + "/existing";
  ASSERT_EQ(::mkdir(existing.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(existing.c_str(), 0755), 0);
  auto ensured = ensureSensorLogDir(existing);
  ASSERT_TRUE(ensured.ok()) << ensured.message();
  struct stat st {};
  ASSERT_EQ(::stat(existing.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
}

// Root passes every permission check, so failures are provoked with a regular file where a
// directory has to be.
TEST_F(SensorLogTest, PathsUnderARegularFileFailNamingThePath) {
  const std::string file = dir_ + "/not-a-directory";
  write(file, "x");
  const std::string log = file + "/sensor.log";

  auto cap = capSensorLog(log, {});
  ASSERT_FALSE(cap.ok());
  EXPECT_EQ(cap.code(), ErrorCode::kInternal);
  EXPECT_NE(cap.message().find(log), std::string::npos) << cap.message();

  auto tail = tailSensorLog(log, 5);
  ASSERT_FALSE(tail.ok());
  EXPECT_NE(tail.message().find(log), std::string::npos) << tail.message();

  auto last = sensorLogLastWrite(log, system_clock::time_point());
  ASSERT_FALSE(last.ok());
  EXPECT_NE(last.message().find(log), std::string::npos) << last.message();

  auto ensured = ensureSensorLogDir(file + "/sub/dir");
  ASSERT_FALSE(ensured.ok());
  EXPECT_EQ(ensured.code(), ErrorCode::kInternal);
  EXPECT_NE(ensured.message().find(file), std::string::npos) << ensured.message();
  EXPECT_NE(ensured.message().find(std::strerror(ENOTDIR)), std::string::npos) << ensured.message();

  auto fileItself = ensureSensorLogDir(file);
  ASSERT_FALSE(fileItself.ok());
  EXPECT_NE(fileItself.message().find(file), std::string::npos) << fileItself.message();
}

// A directory the agent may not write to: as root, checked in a child that drops to nobody.
TEST_F(SensorLogTest, EnsureDirInALockedDirectoryIsPermissionDenied) {
  const std::string locked = dir_ + "/locked";
  ASSERT_EQ(::mkdir(locked.c_str(), 0500), 0);
  ASSERT_EQ(::chmod(locked.c_str(), 0500), 0);
  const std::string target = locked + "/qcs-agent";
  if (::geteuid() != 0) {
    auto ensured = ensureSensorLogDir(target);
    ASSERT_FALSE(ensured.ok());
    EXPECT_EQ(ensured.code(), ErrorCode::kPermissionDenied);
    EXPECT_NE(ensured.message().find(target), std::string::npos) << ensured.message();
    return;
  }
  // The temp directory is root's 0700: the child needs to traverse it.
  ASSERT_EQ(::chmod(dir_.c_str(), 0711), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {
    constexpr uid_t kNobody = 65534;
    if (::setgroups(0, nullptr) != 0 || ::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) ::_exit(3);
    auto ensured = ensureSensorLogDir(target);
    const bool named = !ensured.ok() && ensured.message().find(target) != std::string::npos;
    ::_exit(ensured.ok() ? 0 : (ensured.code() == ErrorCode::kPermissionDenied && named ? 1 : 2));
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << "0: created, 2: wrong code or message, 3: could not drop to nobody";
  EXPECT_FALSE(fs::exists(target));
}

}  // namespace
}  // namespace qcs::runtime::containerd

// capSensorLog on a filesystem that fills up: the live file's space is reserved up to the cap, so the
// shim's appends never fail for lack of space, and a rotation without room for its copy still
// truncates (runtime/containerd/sensor_log.h). The full-filesystem cases mount a small tmpfs and
// are skipped when that is not allowed (not root).
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "runtime/containerd/sensor_log.h"
#include "sensor_log_fixture.h"

namespace qcs::runtime::containerd {
namespace {

namespace fs = std::filesystem;

class SensorLogFullDiskTest : public testing::SensorLogFixture {
 protected:
  void TearDown() override {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
    SensorLogFixture::TearDown();
  }

  // A 1 MiB tmpfs over the test's directory; false (the test is skipped) when not permitted.
  bool mountSmallFilesystem() {
    if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") != 0) return false;
    mounted_ = true;
    return true;
  }

  static int64_t allocated(const std::string& path) { return static_cast<int64_t>(statOf(path).st_blocks) * 512; }
  static void setOldModificationTime(const std::string& path) {
    setModified(path, std::chrono::system_clock::time_point(std::chrono::seconds(1600000000) +
                                                            std::chrono::nanoseconds(123456789)));
  }
  static bool sameModificationTime(const std::string& path) {
    const auto st = statOf(path);
    return st.st_mtim.tv_sec == 1600000000 && st.st_mtim.tv_nsec == 123456789;
  }
  // Writes to a new file until the filesystem refuses even one more byte.
  void fill() {
    const int fd = ::open((dir_ + "/filler").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    std::string chunk(65536, 'f');
    for (size_t size = chunk.size(); size > 0;) {
      if (::write(fd, chunk.data(), size) < 0) size /= 2;
    }
    ::close(fd);
  }
  // Appends what the shim would, through an O_APPEND descriptor; the errno of a failed write, or 0.
  static int append(const std::string& path, const std::string& text) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return errno;
    const ssize_t n = ::write(fd, text.data(), text.size());
    const int err = n == static_cast<ssize_t>(text.size()) ? 0 : (n < 0 ? errno : ENOSPC);
    ::close(fd);
    return err;
  }

  bool mounted_ = false;
};

TEST_F(SensorLogFullDiskTest, ACapWithinTheLimitReservesTheCapAndChangesNothingElse) {
  write(log_, std::string(100, 'x'));
  setOldModificationTime(log_);
  auto truncated = capSensorLog(log_, {.maxBytes = 256 * 1024, .keep = 1});
  ASSERT_TRUE(truncated.ok()) << truncated.message();
  EXPECT_FALSE(*truncated);
  EXPECT_EQ(read(log_), std::string(100, 'x'));
  EXPECT_EQ(statOf(log_).st_size, 100);
  EXPECT_TRUE(sameModificationTime(log_)) << "reserving is not the sensor writing";
  EXPECT_GE(allocated(log_), 256 * 1024) << "the space up to the cap is allocated";
  EXPECT_FALSE(fs::exists(log_ + ".1"));
}

TEST_F(SensorLogFullDiskTest, TheTruncatedFileIsReservedAgain) {
  write(log_, std::string(8192, 'y') + "\n");
  auto truncated = capSensorLog(log_, {.maxBytes = 4096, .keep = 1});
  ASSERT_TRUE(truncated.ok()) << truncated.message();
  EXPECT_TRUE(*truncated);
  EXPECT_EQ(statOf(log_).st_size, 0);
  EXPECT_GE(allocated(log_), 4096);
  EXPECT_EQ(read(log_ + ".1").size(), 8193u);
}

TEST_F(SensorLogFullDiskTest, TheSensorsOutputStillFitsOnceTheFilesystemIsFull) {
  if (!mountSmallFilesystem()) GTEST_SKIP() << "mounting a tmpfs needs root";
  write(log_, "standin: args: --registry-sensor\n");
  ASSERT_TRUE(capSensorLog(log_, {.maxBytes = 128 * 1024, .keep = 1}).ok());
  fill();
  ASSERT_EQ(append(dir_ + "/filler", std::string(4096, 'z')), ENOSPC) << "the filesystem is full";
  // 64 KiB of output after the disk filled up: all of it lands in the reserved blocks.
  for (int i = 0; i < 64; ++i) ASSERT_EQ(append(log_, std::string(1023, 'a') + "\n"), 0) << "line block " << i;
  EXPECT_EQ(statOf(log_).st_size, 33 + 64 * 1024);
}

TEST_F(SensorLogFullDiskTest, WithoutRoomForTheCopyTheFileIsTruncatedAnyway) {
  if (!mountSmallFilesystem()) GTEST_SKIP() << "mounting a tmpfs needs root";
  write(log_ + ".1", "the previous copy\n");
  write(log_, std::string(300 * 1024, 'o'));
  setOldModificationTime(log_);
  fill();
  auto truncated = capSensorLog(log_, {.maxBytes = 64 * 1024, .keep = 1});
  ASSERT_TRUE(truncated.ok()) << truncated.message();
  EXPECT_TRUE(*truncated);
  EXPECT_EQ(statOf(log_).st_size, 0) << "old output dropped rather than new output refused";
  EXPECT_TRUE(sameModificationTime(log_));
  EXPECT_EQ(read(log_ + ".1"), "the previous copy\n") << "the existing copy is left as it was";
  EXPECT_FALSE(fs::exists(log_ + ".1.tmp"));
  // The space the old output held is the sensor's again, reserved up to the cap.
  EXPECT_GE(allocated(log_), 64 * 1024);
  EXPECT_EQ(append(log_, "standin: alive 1\n"), 0);
}

}  // namespace
}  // namespace qcs::runtime::containerd

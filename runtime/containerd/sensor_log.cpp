#include "runtime/containerd/sensor_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <iterator>
#include <string_view>
#include <utility>

namespace qcs::runtime::containerd {

namespace {

// Backward reads go in blocks this big: a tail of a few lines costs one or two reads.
constexpr int64_t kBlockBytes = 64 * 1024;
constexpr int64_t kCopyBufferBytes = 256 * 1024;
// A tail retries when the file shrinks under it (a concurrent cap); more than this means
// something else keeps truncating it.
constexpr int kTailAttempts = 3;

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // For a file just written: close() is where some filesystems report a failed write.
  int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

Error osError(const std::string& what, const std::string& path, int err) {
  const bool refused = err == EACCES || err == EPERM || err == EROFS;
  std::string message = "sensor log: " + what + " " + path + ": " + std::strerror(err);
  if (refused) {
    message +=
        " (the agent needs read-write access to the sensor log directory on the host; run it as root "
        "or give it that directory)";
  }
  return makeError(refused ? ErrorCode::kPermissionDenied : ErrorCode::kInternal, std::move(message));
}

std::string rotatedPath(const std::string& path, int index) { return path + "." + std::to_string(index); }

// Reads exactly `size` bytes at `offset` unless the file ends first; returns the bytes read or -1.
int64_t preadFull(int fd, char* buffer, int64_t size, int64_t offset) {
  int64_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(fd, buffer + done, static_cast<size_t>(size - done), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    done += n;
  }
  return done;
}

bool writeFull(int fd, const char* buffer, int64_t size) {
  int64_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, buffer + done, static_cast<size_t>(size - done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    done += n;
  }
  return true;
}

// Copies everything `source` holds now (it may grow while copying; the copy goes to whatever end
// it reaches) into a new file `target` with the given mode. On failure *writeErrno is the errno of a
// failed create or write of the target (0 for anything else).
Status copyToNewFile(int source, const std::string& sourcePath, const std::string& target, mode_t mode,
                     int* writeErrno) {
  *writeErrno = 0;
  auto targetError = [&](const char* what) {
    *writeErrno = errno;
    return osError(what, target, errno);
  };
  FileDescriptor out(::open(target.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
  if (!out.valid()) return targetError("cannot create");
  // The shim's file is 0644 and the copy keeps that, whatever the agent's umask.
  if (::fchmod(out.get(), mode) != 0) return osError("cannot set the mode of", target, errno);
  std::string buffer(static_cast<size_t>(kCopyBufferBytes), '\0');
  int64_t offset = 0;
  for (;;) {
    const int64_t n = preadFull(source, buffer.data(), kCopyBufferBytes, offset);
    if (n < 0) return osError("cannot read", sourcePath, errno);
    if (n == 0) break;
    if (!writeFull(out.get(), buffer.data(), n)) return targetError("cannot write");
    offset += n;
    if (n < kCopyBufferBytes) break;
  }
  if (out.close() != 0) return targetError("cannot write");
  return okStatus();
}

bool isNoSpace(int err) { return err == ENOSPC || err == EDQUOT; }

// Truncates the open file to 0, keeping the modification time it had just before.
Status truncateKeepingTime(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return osError("cannot stat", path, errno);
  if (::ftruncate(fd, 0) != 0) return osError("cannot truncate", path, errno);
  const struct timespec times[2] = {{0, UTIME_OMIT}, st.st_mtim};
  if (::futimens(fd, times) != 0) return osError("cannot restore the modification time of", path, errno);
  return okStatus();
}

// Allocates the file's blocks up to `bytes` without changing its size, so that the shim's appends
// up to the cap need no new block (see the header). Keeps the modification time: reserving is not
// the sensor writing. Best effort: an error only means the file goes without a reservation.
void reserveSpace(int fd, int64_t bytes) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return;
  if (static_cast<int64_t>(st.st_blocks) * 512 >= bytes) return;  // reserved already
  if (::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, bytes) != 0) return;
  const struct timespec times[2] = {{0, UTIME_OMIT}, st.st_mtim};
  (void)::futimens(fd, times);
}

struct FileTail {
  std::vector<std::string> lines;  // oldest first, at most the number asked for
  bool cut = false;                // the read budget ended inside a line: older files add nothing
};

// Splits the bytes at the end of a file into lines. `text` ends where the file ends.
std::vector<std::string> splitLines(std::string_view text) {
  std::vector<std::string> lines;
  if (text.empty()) return lines;
  if (text.back() == '\n') text.remove_suffix(1);
  size_t start = 0;
  for (;;) {
    const size_t newline = text.find('\n', start);
    std::string_view line =
        text.substr(start, newline == std::string_view::npos ? std::string_view::npos : newline - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    lines.emplace_back(line);
    if (newline == std::string_view::npos) break;
    start = newline + 1;
  }
  return lines;
}

// One pass over the file's end; nullopt when the file shrank under it.
Result<std::optional<FileTail>> readTail(int fd, const std::string& path, int wanted) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return osError("cannot stat", path, errno);
  const int64_t size = st.st_size;
  const int64_t budget = std::min<int64_t>(size, static_cast<int64_t>(wanted) * kSensorLogMaxLineBytes);
  const int64_t floor = size - budget;

  // Blocks newest first; counting stops once `wanted` newlines precede the file's final byte,
  // because the text after the wanted-th newline from the end holds every line asked for.
  std::vector<std::string> blocks;
  int64_t newlines = 0;
  int64_t position = size;
  while (position > floor && newlines < wanted) {
    const int64_t length = std::min(kBlockBytes, position - floor);
    position -= length;
    std::string block(static_cast<size_t>(length), '\0');
    const int64_t n = preadFull(fd, block.data(), length, position);
    if (n < 0) return osError("cannot read", path, errno);
    if (n < length) return std::optional<FileTail>();
    const int64_t finalByte = position + length == size ? 1 : 0;
    newlines += std::count(block.begin(), block.end() - finalByte, '\n');
    blocks.push_back(std::move(block));
  }

  std::string text;
  text.reserve(static_cast<size_t>(size - position));
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) text += *it;
  FileTail tail;
  tail.lines = splitLines(text);
  const auto keep = static_cast<size_t>(wanted);
  if (tail.lines.size() > keep) {
    tail.lines.erase(tail.lines.begin(), tail.lines.end() - static_cast<std::ptrdiff_t>(keep));
  } else if (position > 0) {
    // The budget ran out before the start of the file and before enough lines: the oldest line
    // returned is the end of a longer one.
    tail.cut = true;
  }
  return std::optional<FileTail>(std::move(tail));
}

// The last `wanted` lines of one file; a missing file has none.
Result<FileTail> lastLinesOf(const std::string& path, int wanted) {
  FileDescriptor file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file.valid()) {
    if (errno == ENOENT) return FileTail{};
    return osError("cannot open", path, errno);
  }
  for (int attempt = 0; attempt < kTailAttempts; ++attempt) {
    auto tail = readTail(file.get(), path, wanted);
    if (!tail.ok()) return tail.error();
    if (tail->has_value()) return std::move(**tail);
  }
  return makeError(ErrorCode::kUnavailable, "sensor log: " + path + " kept shrinking while its last lines were read (" +
                                                std::to_string(kTailAttempts) +
                                                " attempts); something other than the agent truncates it");
}

}  // namespace

Result<bool> capSensorLog(const std::string& path, const SensorLogLimits& limits) {
  if (limits.maxBytes <= 0 || limits.keep < 1) {
    return makeError(ErrorCode::kInvalidArgument,
                     "sensor log limits: max bytes must be above 0 and keep at least 1 (got " +
                         std::to_string(limits.maxBytes) + " bytes, keep " + std::to_string(limits.keep) + ")");
  }
  // Read-write: the truncate must hit the very file that was copied, even if the path changes.
  FileDescriptor file(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!file.valid()) {
    if (errno == ENOENT) return false;
    return osError("cannot open", path, errno);
  }
  struct stat st {};
  if (::fstat(file.get(), &st) != 0) return osError("cannot stat", path, errno);
  if (!S_ISREG(st.st_mode)) {
    return makeError(ErrorCode::kInternal, "sensor log: " + path + " is not a regular file; remove it");
  }
  if (st.st_size <= limits.maxBytes) {
    reserveSpace(file.get(), limits.maxBytes);
    return false;
  }

  // Copy before shifting: a failed copy leaves every rotated copy as it was.
  const std::string temporary = rotatedPath(path, 1) + ".tmp";
  int copyErrno = 0;
  if (auto copied = copyToNewFile(file.get(), path, temporary, st.st_mode & 07777, &copyErrno); !copied.ok()) {
    ::unlink(temporary.c_str());
    if (!isNoSpace(copyErrno)) return copied.error();
    // No room for a copy: the file still has to shrink, or the sensor's next lines find none either.
    if (auto truncated = truncateKeepingTime(file.get(), path); !truncated.ok()) return truncated.error();
    reserveSpace(file.get(), limits.maxBytes);
    return true;
  }
  for (int index = limits.keep - 1; index >= 1; --index) {
    const std::string from = rotatedPath(path, index);
    if (::rename(from.c_str(), rotatedPath(path, index + 1).c_str()) != 0 && errno != ENOENT) {
      const int err = errno;
      ::unlink(temporary.c_str());
      return osError("cannot rotate", from, err);
    }
  }
  if (::rename(temporary.c_str(), rotatedPath(path, 1).c_str()) != 0) {
    const int err = errno;
    ::unlink(temporary.c_str());
    return osError("cannot rename " + temporary + " to", rotatedPath(path, 1), err);
  }

  // The latest write time, just before the truncate, which would otherwise stamp "now" on it.
  if (auto truncated = truncateKeepingTime(file.get(), path); !truncated.ok()) return truncated.error();
  reserveSpace(file.get(), limits.maxBytes);
  return true;
}

Result<std::vector<std::string>> tailSensorLog(const std::string& path, int lines) {
  if (lines <= 0) return std::vector<std::string>{};
  auto live = lastLinesOf(path, lines);
  if (!live.ok()) return live.error();
  if (live->cut || live->lines.size() >= static_cast<size_t>(lines)) return std::move(live->lines);

  auto older = lastLinesOf(rotatedPath(path, 1), lines - static_cast<int>(live->lines.size()));
  if (!older.ok()) return older.error();
  std::vector<std::string> result = std::move(older->lines);
  result.insert(result.end(), std::make_move_iterator(live->lines.begin()), std::make_move_iterator(live->lines.end()));
  return result;
}

Result<std::optional<std::chrono::system_clock::time_point>> sensorLogLastWrite(
    const std::string& path, std::chrono::system_clock::time_point since) {
  using TimePoint = std::chrono::system_clock::time_point;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::optional<TimePoint>();
    return osError("cannot stat", path, errno);
  }
  const auto modified = TimePoint(std::chrono::duration_cast<TimePoint::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
  if (modified < since) return std::optional<TimePoint>();
  return std::optional<TimePoint>(modified);
}

Status ensureSensorLogDir(const std::string& dir) {
  if (dir.empty()) return makeError(ErrorCode::kInvalidArgument, "sensor log: the log directory is empty");
  constexpr mode_t kMode = 0750;
  // Each prefix ending before a '/', then the whole path: mkdir -p.
  std::vector<std::string> prefixes;
  for (size_t slash = dir.find('/', 1); slash != std::string::npos; slash = dir.find('/', slash + 1)) {
    if (dir[slash - 1] != '/') prefixes.push_back(dir.substr(0, slash));
  }
  if (dir.back() != '/') prefixes.push_back(dir);
  for (const std::string& prefix : prefixes) {
    if (::mkdir(prefix.c_str(), kMode) == 0) {
      // mkdir's mode passes through the umask; the directory's mode is part of the contract.
      if (::chmod(prefix.c_str(), kMode) != 0) return osError("cannot set the mode of", prefix, errno);
      continue;
    }
    const int err = errno;
    if (err != EEXIST) return osError("cannot create directory", prefix, err);
    struct stat st {};
    if (::stat(prefix.c_str(), &st) != 0) return osError("cannot stat", prefix, errno);
    if (!S_ISDIR(st.st_mode)) return osError("cannot create directory", prefix, ENOTDIR);
  }
  return okStatus();
}

}  // namespace qcs::runtime::containerd

// The sensor's size-capped log file on containerd (SPEC: the sensor's output never blocks it; on a
// crash the agent copies the last lines of its output into its own log).
//
// Contract:
// - The runtime creates the sensor's task with stdout and stderr = file://<host path>; containerd's
//   runc shim opens that file itself (O_APPEND|O_CREAT, 0644) and keeps it open for the task's life,
//   copying both streams into it. The agent never writes to it.
// - Because the shim holds the file open, it cannot be renamed away: the agent caps it by
//   copy-and-truncate (as logrotate's copytruncate). The shim's O_APPEND writes continue at the new
//   end, i.e. at offset 0. Lines written between the copy and the truncate may be lost.
// - A full filesystem must not silence the sensor: containerd 1.6's shim stops copying a task's
//   output for good at the first write that fails (ENOSPC), after which nobody drains the task's
//   stdout pipe and the sensor blocks once it is full. So the agent keeps the live file's blocks
//   allocated up to the cap (fallocate, FALLOC_FL_KEEP_SIZE: the size stays what was written), and
//   when there is no room for the rotated copy it truncates without one: old output is lost rather
//   than new output refused.
// - All paths are the agent's view of the host's filesystem (host_root applied by the caller).
// - A missing log file is not an error: the task may not have started yet.
// - Errors name the path and the OS's reason: kPermissionDenied for EACCES/EPERM/EROFS, kInternal
//   otherwise (a path under a non-directory, I/O errors). Invalid limits are kInvalidArgument.
// - Stateless functions; a cap and a tail of the same file may run on different threads (a tail
//   that sees the file shrink under it starts again from the new end).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace qcs::runtime::containerd {

struct SensorLogLimits {
  int64_t maxBytes = 10 * 1024 * 1024;  // the live file is capped once it grows beyond this
  int keep = 1;                         // rotated copies kept: <path>.1 (newest) .. <path>.<keep>
};

// A line longer than this is returned by tailSensorLog as its last kSensorLogMaxLineBytes bytes:
// the tail reads at most lines x this many bytes from each file, however large the file is.
inline constexpr int64_t kSensorLogMaxLineBytes = 16 * 1024;

// When the file is larger than limits.maxBytes: shift <path>.1..<keep-1> up by one (dropping
// <path>.<keep>), copy the file to <path>.1 (through a temporary, so <path>.1 is never half
// written), then truncate the file to 0, keeping its modification time (sensorLogLastWrite must
// not see the truncation as the sensor writing). When the copy fails for lack of space (ENOSPC,
// EDQUOT), the file is truncated all the same, without a copy, and the existing copies are left
// as they were. Either way (and when the file was within the cap) the live file's space is then
// reserved up to maxBytes, its size and modification time unchanged; a filesystem that cannot
// reserve (no fallocate, or already full) just goes without. Returns whether it truncated; false
// for a missing file or one of at most maxBytes.
Result<bool> capSensorLog(const std::string& path, const SensorLogLimits& limits);

// The last `lines` lines of the log, oldest first, reading <path>.1 too when <path> holds fewer.
// Reads backwards in blocks from each file's end, never a whole file. Lines end at '\n'; a
// trailing '\r' is dropped (CRLF); empty lines are lines (""); a partial last line (no '\n' yet)
// counts as a line. Missing files hold no lines. lines <= 0 gives an empty result.
Result<std::vector<std::string>> tailSensorLog(const std::string& path, int lines);

// The file's last modification time (when the sensor last wrote), or nullopt when the file is
// missing or was last modified before `since`.
Result<std::optional<std::chrono::system_clock::time_point>> sensorLogLastWrite(
    const std::string& path, std::chrono::system_clock::time_point since);

// Creates the directory, and its missing parents, with mode 0750; an existing directory is left
// as it is. kPermissionDenied/kInternal naming the path and the OS's reason.
Status ensureSensorLogDir(const std::string& dir);

}  // namespace qcs::runtime::containerd

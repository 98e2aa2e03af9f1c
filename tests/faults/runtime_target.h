// RuntimeTarget: one runtime under test (a private dockerd or containerd started by the harness),
// with everything the fault suite does to it and reads from it, independently of the agent.
//
// Contract:
// - start*Target() starts the daemon, puts the stand-in sensor image into the registry under
//   imageRef() (through the registry's gate, with the registry's htpasswd credentials) and removes
//   it from the daemon again, so the agent's first start pulls it. nullptr (with the reason on
//   stderr) when anything of that fails.
// - The small filesystem the disk-full fault fills is a tmpfs mounted by the target: on containerd
//   the agent's runtime.containerd_log_dir (2 MiB); on Docker dockerd's whole data-root (which holds
//   the sensor's json-file log), so filling it also affects dockerd itself.
// - leaks() lists what is left beyond the one sensor container (and, on containerd, its task, its
//   rootfs snapshot and the image's snapshots): other containers, tasks, leases, content being
//   written, snapshots, images. Empty means clean.
// - secretSurfaces() are the places a sensor secret must never appear in: container metadata other
//   than the environment, and the sensor's output.
// - Everything is called from the suite's main thread (daemons are started there: the harness ties
//   their lifetime to the thread that spawned them).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"
#include "faults/sensor_monitor.h"
#include "harness/harness.h"

namespace qcs::faults {

struct SensorInstance {
  std::string id;        // the container id (containerd: the sensor's name)
  std::string instance;  // one start of it: Docker "<id>@<StartedAt>", containerd "<id>@<pid>"
  bool running = false;
};

struct TargetOptions {
  std::string workDir;  // a directory the target may create files and mounts in
  std::string sensorName;
  std::string registryGate;  // "127.0.0.1:PORT": the address the agent pulls from
  std::string registryUser;
  std::string registryPassword;
  testing::Registry* registry = nullptr;  // the registry behind the gate (Docker pushes to it directly)
};

class RuntimeTarget {
 public:
  virtual ~RuntimeTarget() = default;

  virtual std::string name() const = 0;  // "docker" | "containerd"
  virtual std::string daemonVersion() = 0;
  // The agent configuration's `runtime:` section.
  virtual std::string agentRuntimeYaml() const = 0;
  // The image the agent runs, in the agent's spelling.
  virtual std::string imageRef() const = 0;
  virtual SensorMonitor& monitor() = 0;

  // The sensor's container as the runtime sees it now; nullopt when there is none.
  virtual std::optional<SensorInstance> sensor() = 0;
  virtual Status killSensor() = 0;    // SIGKILL to its process
  virtual Status removeSensor() = 0;  // force-remove the container (with its task and rootfs)
  virtual Status removeImage() = 0;   // the image and its content
  virtual Result<bool> imagePresent() = 0;

  virtual void stopDaemon() = 0;
  virtual bool startDaemon() = 0;  // on the same socket and directories
  virtual bool daemonRunning() const = 0;
  virtual std::string socketPath() const = 0;
  // Whether a sensor keeps running while its daemon is down (containerd's shims: yes).
  virtual bool sensorSurvivesDaemonStop() const = 0;

  virtual std::vector<std::string> leaks() = 0;
  virtual std::vector<std::pair<std::string, std::string>> secretSurfaces() = 0;  // (where, text)
  // The sensor's environment as the runtime holds it (where the secrets must be).
  virtual std::string sensorEnvironment() = 0;

  // The directory on the small filesystem the disk-full fault fills.
  virtual std::string smallFilesystem() const = 0;
  // Whether the daemon itself must write to that filesystem to start a container (dockerd keeps each
  // container's state in its data-root): then nothing can start until space is freed.
  virtual bool startNeedsSpaceThere() const = 0;
  // Whether the sensor's output file holds nothing but the output (containerd), so the suite may
  // append to it; dockerd's json-file log has a format of its own.
  virtual bool sensorOutputIsPlainFile() const = 0;
  // When the sensor last wrote output the runtime recorded (the log file's mtime, ns); 0 when unknown.
  virtual int64_t sensorOutputStamp() = 0;
  // Where the sensor's output is kept (for the report).
  virtual std::string sensorOutputPath() = 0;
};

std::unique_ptr<RuntimeTarget> startDockerTarget(const TargetOptions& options);
std::unique_ptr<RuntimeTarget> startContainerdTarget(const TargetOptions& options);

}  // namespace qcs::faults

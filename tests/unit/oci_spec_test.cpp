#include "runtime/containerd/oci_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace qcs::runtime::containerd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;
using Strings = std::vector<std::string>;

const OciSpecOptions kOptions{"qualys-container-sensor", "qualys"};

// The sensor container as SPEC describes it on containerd.
ContainerSpec sensorSpec() {
  ContainerSpec spec;
  spec.name = "qualys-container-sensor";
  spec.image = "qualys/qcs-sensor:latest";
  spec.args = {"--registry-sensor", "--perform-sca-scan", "--container-runtime", "containerd"};
  spec.env = {{"ACTIVATIONID", "11111111-2222-3333-4444-555555555555", true},
              {"CUSTOMERID", "66666666-7777-8888-9999-000000000000", true},
              {"POD_URL", "https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor", false}};
  spec.mounts = {{"/run/containerd/containerd.sock", "/run/containerd/containerd.sock", false},
                 {"/var/lib/containerd", "/var/lib/containerd", true},
                 {"/etc/qualys", "/usr/local/qualys/qpa/data/conf/agent-data", false}};
  spec.capAdd = {"SYS_ADMIN", "DAC_OVERRIDE", "SETUID", "SETGID"};
  spec.hostNetwork = true;
  spec.resources = {250, 500, 512LL << 20, 1LL << 30};
  spec.labels = {{"io.qcs-agent.managed", "true"}};
  return spec;
}

ImageConfig sensorImage() {
  ImageConfig image;
  image.entrypoint = {"/usr/local/qualys/qpa/bin/qualys-cloud-agent.sh"};
  image.cmd = {"--default-flag"};
  image.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"};
  return image;
}

Json build(const ContainerSpec& spec, const ImageConfig& image = sensorImage(),
           const OciSpecOptions& options = kOptions) {
  auto text = buildOciSpec(spec, image, options);
  EXPECT_TRUE(text.ok()) << text.message();
  if (!text.ok()) return Json();
  return Json::parse(*text);
}

Strings strings(const Json& array) { return array.get<Strings>(); }

std::vector<Json> mountsAt(const Json& oci, const std::string& destination) {
  std::vector<Json> found;
  for (const auto& mount : oci["mounts"]) {
    if (mount["destination"] == destination) found.push_back(mount);
  }
  return found;
}

size_t mountIndex(const Json& oci, const std::string& destination) {
  for (size_t i = 0; i < oci["mounts"].size(); ++i) {
    if (oci["mounts"][i]["destination"] == destination) return i;
  }
  return oci["mounts"].size();
}

Strings namespaceTypes(const Json& oci) {
  Strings types;
  for (const auto& ns : oci["linux"]["namespaces"]) types.push_back(ns["type"]);
  return types;
}

// ---------------------------------------------------------------------------------------------

TEST(OciSpecTest, TopLevelRootAndProcessBasics) {
  const Json oci = build(sensorSpec());
  EXPECT_EQ(oci["ociVersion"], "1.0.2");
  EXPECT_EQ(oci["root"], (Json{{"path", "rootfs"}, {"readonly", false}}));
  const Json& process = oci["process"];
  EXPECT_EQ(process["terminal"], false);
  EXPECT_EQ(process["cwd"], "/");
  EXPECT_EQ(process["user"], (Json{{"uid", 0}, {"gid", 0}}));
  EXPECT_EQ(process["noNewPrivileges"], true);
  ASSERT_EQ(process["rlimits"].size(), 1u);
  EXPECT_EQ(process["rlimits"][0], (Json{{"type", "RLIMIT_NOFILE"}, {"hard", 1048576}, {"soft", 1048576}}));
  EXPECT_FALSE(process.contains("apparmorProfile"));
  EXPECT_FALSE(oci["linux"].contains("seccomp"));
  // Labels live on the container record, not in the spec.
  EXPECT_FALSE(oci.contains("annotations"));
  EXPECT_EQ(oci.dump().find("io.qcs-agent.managed"), std::string::npos);
}

TEST(OciSpecTest, OpenFilesLimitIsConfigurableAndCanBeLeftToTheShim) {
  OciSpecOptions options = kOptions;
  options.openFilesLimit = 65536;
  const Json lowered = build(sensorSpec(), sensorImage(), options);
  ASSERT_EQ(lowered["process"]["rlimits"].size(), 1u);
  EXPECT_EQ(lowered["process"]["rlimits"][0], (Json{{"type", "RLIMIT_NOFILE"}, {"hard", 65536}, {"soft", 65536}}));
  options.openFilesLimit = 0;
  EXPECT_FALSE(build(sensorSpec(), sensorImage(), options)["process"].contains("rlimits"));
}

TEST(OciSpecTest, ArgsAreImageEntrypointThenSpecArgs) {
  const Json oci = build(sensorSpec());
  EXPECT_EQ(strings(oci["process"]["args"]),
            (Strings{"/usr/local/qualys/qpa/bin/qualys-cloud-agent.sh", "--registry-sensor", "--perform-sca-scan",
                     "--container-runtime", "containerd"}));
}

TEST(OciSpecTest, ArgsFallBackToImageCmdWhenSpecArgsAreEmpty) {
  ContainerSpec spec = sensorSpec();
  spec.args.clear();
  const Json oci = build(spec);
  EXPECT_EQ(strings(oci["process"]["args"]),
            (Strings{"/usr/local/qualys/qpa/bin/qualys-cloud-agent.sh", "--default-flag"}));
}

TEST(OciSpecTest, SpecArgsReplaceCmdOfAnImageWithoutEntrypoint) {
  ImageConfig image = sensorImage();
  image.entrypoint.clear();
  image.cmd = {"/bin/sh", "-c", "sleep 1"};
  ContainerSpec spec = sensorSpec();
  spec.args = {"/sensor", "--flag"};
  EXPECT_EQ(strings(build(spec, image)["process"]["args"]), (Strings{"/sensor", "--flag"}));
  spec.args.clear();
  EXPECT_EQ(strings(build(spec, image)["process"]["args"]), (Strings{"/bin/sh", "-c", "sleep 1"}));
}

TEST(OciSpecTest, EmptyCommandIsRejected) {
  ImageConfig image = sensorImage();
  image.entrypoint.clear();
  image.cmd.clear();
  ContainerSpec spec = sensorSpec();
  spec.args.clear();
  auto result = buildOciSpec(spec, image, kOptions);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(result.message(), HasSubstr("sensor.args"));
}

TEST(OciSpecTest, EnvIsImageEnvThenSpecEnvWithOverridesInPlace) {
  ImageConfig image = sensorImage();
  image.env = {"PATH=/opt/bin:/bin", "LANG=C.UTF-8", "POD_URL=https://image-default.invalid", "TZ=UTC"};
  ContainerSpec spec = sensorSpec();
  spec.env.push_back({"EXTRA", "1", false});
  spec.env.push_back({"TZ", "Europe/Paris", false});
  const Json oci = build(spec, image);
  EXPECT_EQ(
      strings(oci["process"]["env"]),
      (Strings{"PATH=/opt/bin:/bin", "LANG=C.UTF-8", "POD_URL=https://cmsqagpublic.qg2.apps.qualys.com/ContainerSensor",
               "TZ=Europe/Paris", "ACTIVATIONID=11111111-2222-3333-4444-555555555555",
               "CUSTOMERID=66666666-7777-8888-9999-000000000000", "EXTRA=1"}));
}

TEST(OciSpecTest, DefaultPathOnlyWhenNeitherImageNorSpecSetsOne) {
  const std::string defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  ImageConfig image = sensorImage();
  image.env = {"LANG=C.UTF-8"};
  ContainerSpec spec = sensorSpec();
  spec.env = {{"A", "1", false}};
  EXPECT_EQ(strings(build(spec, image)["process"]["env"]), (Strings{defaultPath, "LANG=C.UTF-8", "A=1"}));

  spec.env.push_back({"PATH", "/sensor/bin", false});
  EXPECT_EQ(strings(build(spec, image)["process"]["env"]), (Strings{"LANG=C.UTF-8", "A=1", "PATH=/sensor/bin"}));

  image.env = {"PATH=/image/bin"};
  spec.env = {};
  EXPECT_EQ(strings(build(spec, image)["process"]["env"]), (Strings{"PATH=/image/bin"}));
}

TEST(OciSpecTest, MalformedEnvEntriesAreRejected) {
  ImageConfig image = sensorImage();
  image.env = {"NOVALUE"};
  auto fromImage = buildOciSpec(sensorSpec(), image, kOptions);
  ASSERT_FALSE(fromImage.ok());
  EXPECT_EQ(fromImage.code(), ErrorCode::kInvalidArgument);

  ContainerSpec spec = sensorSpec();
  spec.env.push_back({"BAD=NAME", "x", false});
  auto fromSpec = buildOciSpec(spec, sensorImage(), kOptions);
  ASSERT_FALSE(fromSpec.ok());
  EXPECT_EQ(fromSpec.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(fromSpec.message(), HasSubstr("BAD=NAME"));
  // The error names the variable, never a value.
  EXPECT_EQ(fromSpec.message().find("11111111-2222"), std::string::npos);
}

TEST(OciSpecTest, CwdIsTheImageWorkingDir) {
  ImageConfig image = sensorImage();
  image.workingDir = "/usr/local/qualys";
  EXPECT_EQ(build(sensorSpec(), image)["process"]["cwd"], "/usr/local/qualys");
  image.workingDir = "relative/dir";
  auto result = buildOciSpec(sensorSpec(), image, kOptions);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.code(), ErrorCode::kInvalidArgument);
}

TEST(OciSpecTest, UserForms) {
  struct Case {
    std::string user;
    uint32_t uid;
    uint32_t gid;
  };
  for (const Case& c :
       {Case{"", 0, 0}, Case{"0", 0, 0}, Case{"root", 0, 0}, Case{"1000", 1000, 0}, Case{"1000:1001", 1000, 1001},
        Case{"root:0", 0, 0}, Case{"0:root", 0, 0}, Case{"4294967295:7", 4294967295u, 7}}) {
    ImageConfig image = sensorImage();
    image.user = c.user;
    const Json oci = build(sensorSpec(), image);
    EXPECT_EQ(oci["process"]["user"]["uid"], c.uid) << "user \"" << c.user << "\"";
    EXPECT_EQ(oci["process"]["user"]["gid"], c.gid) << "user \"" << c.user << "\"";
  }
}

TEST(OciSpecTest, UserNamesThatNeedALookupAreRejected) {
  for (const std::string user : {"sensor", "1000:staff", "nobody:1", "-1", "4294967296", "1000:", ":1000", "0x10"}) {
    ImageConfig image = sensorImage();
    image.user = user;
    auto result = buildOciSpec(sensorSpec(), image, kOptions);
    ASSERT_FALSE(result.ok()) << "user \"" << user << "\"";
    EXPECT_EQ(result.code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(result.message(), HasSubstr("User"));
  }
}

TEST(OciSpecTest, DefaultCapabilitiesAreContainerdsSorted) {
  EXPECT_THAT(defaultCapabilities(),
              ElementsAre("CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
                          "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP", "CAP_SETGID",
                          "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT"));
  EXPECT_EQ(knownCapabilities().size(), 41u);
  EXPECT_TRUE(std::is_sorted(knownCapabilities().begin(), knownCapabilities().end()));
}

TEST(OciSpecTest, CapabilitiesAreDefaultsPlusSpecAdds) {
  const Json oci = build(sensorSpec());
  const Json& caps = oci["process"]["capabilities"];
  Strings expected = defaultCapabilities();
  expected.push_back("CAP_SYS_ADMIN");  // DAC_OVERRIDE, SETUID, SETGID are defaults already
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(strings(caps["bounding"]), expected);
  EXPECT_EQ(strings(caps["effective"]), expected);
  EXPECT_EQ(strings(caps["permitted"]), expected);
  EXPECT_TRUE(caps["inheritable"].empty());
  EXPECT_TRUE(caps["ambient"].empty());
}

TEST(OciSpecTest, CapabilityNamesAreNormalised) {
  ContainerSpec spec = sensorSpec();
  spec.capAdd = {"CAP_SYS_ADMIN", "sys_ptrace", "Net_Admin", "SYS_ADMIN"};
  const Strings bounding = strings(build(spec)["process"]["capabilities"]["bounding"]);
  for (const std::string name : {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_NET_ADMIN"}) {
    EXPECT_EQ(std::count(bounding.begin(), bounding.end(), name), 1) << name;
  }
  EXPECT_EQ(bounding.size(), defaultCapabilities().size() + 3);
  EXPECT_TRUE(std::is_sorted(bounding.begin(), bounding.end()));
}

TEST(OciSpecTest, UnknownCapabilitiesAreRejectedByName) {
  ContainerSpec spec = sensorSpec();
  spec.capAdd = {"SYS_ADMIN", "FLY", "CAP_TELEPORT"};
  auto result = buildOciSpec(spec, sensorImage(), kOptions);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(result.message(), HasSubstr("\"FLY\""));
  EXPECT_THAT(result.message(), HasSubstr("\"CAP_TELEPORT\""));
  EXPECT_EQ(result.message().find("\"SYS_ADMIN\""), std::string::npos);
}

TEST(OciSpecTest, DefaultMountsArePresentExactlyOnce) {
  const Json oci = build(sensorSpec());
  struct Expected {
    std::string destination;
    std::string type;
    std::string source;
    Strings options;
  };
  const std::vector<Expected> defaults{
      {"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
      {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
      {"/dev/pts", "devpts", "devpts", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
      {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
      {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
      {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}},
      {"/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", "ro"}},
  };
  for (const auto& expected : defaults) {
    const auto found = mountsAt(oci, expected.destination);
    ASSERT_EQ(found.size(), 1u) << expected.destination;
    EXPECT_EQ(found[0]["type"], expected.type) << expected.destination;
    EXPECT_EQ(found[0]["source"], expected.source) << expected.destination;
    EXPECT_EQ(strings(found[0]["options"]), expected.options) << expected.destination;
  }
  EXPECT_LT(mountIndex(oci, "/dev"), mountIndex(oci, "/dev/pts"));
  EXPECT_LT(mountIndex(oci, "/sys"), mountIndex(oci, "/sys/fs/cgroup"));
  // 7 defaults, 2 host-network binds, 3 SPEC mounts.
  EXPECT_EQ(oci["mounts"].size(), 12u);
}

TEST(OciSpecTest, SpecMountsAreRecursivePrivateBindsWithTheirMode) {
  const Json oci = build(sensorSpec());
  const auto socket = mountsAt(oci, "/run/containerd/containerd.sock");
  ASSERT_EQ(socket.size(), 1u);
  EXPECT_EQ(socket[0]["type"], "bind");
  EXPECT_EQ(socket[0]["source"], "/run/containerd/containerd.sock");
  EXPECT_EQ(strings(socket[0]["options"]), (Strings{"rbind", "rprivate", "rw"}));
  const auto store = mountsAt(oci, "/var/lib/containerd");
  ASSERT_EQ(store.size(), 1u);
  EXPECT_EQ(strings(store[0]["options"]), (Strings{"rbind", "rprivate", "ro"}));
  const auto conf = mountsAt(oci, "/usr/local/qualys/qpa/data/conf/agent-data");
  ASSERT_EQ(conf.size(), 1u);
  EXPECT_EQ(conf[0]["source"], "/etc/qualys");
  EXPECT_EQ(strings(conf[0]["options"]), (Strings{"rbind", "rprivate", "rw"}));
}

TEST(OciSpecTest, SpecMountReplacesADefaultAtTheSameDestination) {
  ContainerSpec spec = sensorSpec();
  spec.mounts.push_back({"/srv/shm", "/dev/shm/", false});
  spec.mounts.push_back({"/srv/hosts", "/etc/hosts", true});
  const Json oci = build(spec);
  const auto shm = mountsAt(oci, "/dev/shm");
  ASSERT_EQ(shm.size(), 1u);
  EXPECT_EQ(shm[0]["type"], "bind");
  EXPECT_EQ(shm[0]["source"], "/srv/shm");
  const auto hosts = mountsAt(oci, "/etc/hosts");
  ASSERT_EQ(hosts.size(), 1u);
  EXPECT_EQ(hosts[0]["source"], "/srv/hosts");
  EXPECT_EQ(oci["mounts"].size(), 12u);
  EXPECT_LT(mountIndex(oci, "/dev"), mountIndex(oci, "/dev/shm"));
}

TEST(OciSpecTest, NestedSpecMountsComeAfterTheirParent) {
  ContainerSpec spec = sensorSpec();
  // Listed child first, as the sensor spec builder does for /etc/qualys and the storage dir.
  spec.mounts.push_back({"/var/lib/qualys-storage", "/usr/local/qualys/qpa/data", false});
  const Json oci = build(spec);
  EXPECT_LT(mountIndex(oci, "/usr/local/qualys/qpa/data"),
            mountIndex(oci, "/usr/local/qualys/qpa/data/conf/agent-data"));
}

TEST(OciSpecTest, BadSpecMountsAreRejected) {
  for (const Mount& bad : {Mount{"relative/src", "/target", false}, Mount{"/src", "relative/target", false},
                           Mount{"/src", "/", false}, Mount{"/other", "/var/lib/containerd/", true}}) {
    ContainerSpec spec = sensorSpec();
    spec.mounts.push_back(bad);
    auto result = buildOciSpec(spec, sensorImage(), kOptions);
    ASSERT_FALSE(result.ok()) << bad.source << " -> " << bad.target;
    EXPECT_EQ(result.code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(result.message(), HasSubstr(bad.target));
  }
}

TEST(OciSpecTest, HostNetworkSharesTheHostStackAndItsNameResolution) {
  const Json oci = build(sensorSpec());
  EXPECT_EQ(namespaceTypes(oci), (Strings{"pid", "ipc", "uts", "mount"}));
  for (const std::string file : {"/etc/hosts", "/etc/resolv.conf"}) {
    const auto found = mountsAt(oci, file);
    ASSERT_EQ(found.size(), 1u) << file;
    EXPECT_EQ(found[0]["type"], "bind");
    EXPECT_EQ(found[0]["source"], file);
    const Strings options = strings(found[0]["options"]);
    EXPECT_NE(std::find(options.begin(), options.end(), "ro"), options.end()) << file;
    EXPECT_NE(std::find(options.begin(), options.end(), "rbind"), options.end()) << file;
  }
}

TEST(OciSpecTest, OwnNetworkGetsANetworkNamespaceAndNoHostFiles) {
  ContainerSpec spec = sensorSpec();
  spec.hostNetwork = false;
  const Json oci = build(spec);
  EXPECT_EQ(namespaceTypes(oci), (Strings{"pid", "ipc", "uts", "mount", "network"}));
  EXPECT_TRUE(mountsAt(oci, "/etc/hosts").empty());
  EXPECT_TRUE(mountsAt(oci, "/etc/resolv.conf").empty());
  EXPECT_EQ(oci["mounts"].size(), 10u);
}

TEST(OciSpecTest, ResourcesFollowSpecQuantities) {
  const Json oci = build(sensorSpec());
  const Json& resources = oci["linux"]["resources"];
  EXPECT_EQ(resources["cpu"]["shares"], 256);
  EXPECT_EQ(resources["cpu"]["quota"], 50000);
  EXPECT_EQ(resources["cpu"]["period"], 100000);
  EXPECT_EQ(resources["memory"]["reservation"], 512LL * 1024 * 1024);
  EXPECT_EQ(resources["memory"]["limit"], 1024LL * 1024 * 1024);
}

TEST(OciSpecTest, UnsetResourcesAreAbsent) {
  ContainerSpec spec = sensorSpec();
  spec.resources = {};
  const Json resources = build(spec)["linux"]["resources"];
  EXPECT_FALSE(resources.contains("cpu"));
  EXPECT_FALSE(resources.contains("memory"));

  spec.resources.cpuLimitMilli = 1000;
  spec.resources.memoryLimitBytes = 1LL << 30;
  const Json limitsOnly = build(spec)["linux"]["resources"];
  EXPECT_FALSE(limitsOnly["cpu"].contains("shares"));
  EXPECT_EQ(limitsOnly["cpu"]["quota"], 100000);
  EXPECT_FALSE(limitsOnly["memory"].contains("reservation"));
  EXPECT_EQ(limitsOnly["memory"]["limit"], 1LL << 30);

  spec.resources = {};
  spec.resources.cpuRequestMilli = 100;
  spec.resources.memoryRequestBytes = 256LL << 20;
  const Json requestsOnly = build(spec)["linux"]["resources"];
  EXPECT_EQ(requestsOnly["cpu"]["shares"], 102);
  EXPECT_FALSE(requestsOnly["cpu"].contains("quota"));
  EXPECT_FALSE(requestsOnly["cpu"].contains("period"));
  EXPECT_FALSE(requestsOnly["memory"].contains("limit"));
  EXPECT_EQ(requestsOnly["memory"]["reservation"], 256LL << 20);
}

TEST(OciSpecTest, CpuValuesStayWithinKernelBounds) {
  ContainerSpec spec = sensorSpec();
  spec.resources = {1, 5, 0, 0};
  const Json tiny = build(spec)["linux"]["resources"]["cpu"];
  EXPECT_EQ(tiny["shares"], 2);
  EXPECT_EQ(tiny["quota"], 1000);
  spec.resources = {10'000'000, 0, 0, 0};
  EXPECT_EQ(build(spec)["linux"]["resources"]["cpu"]["shares"], 262144);

  spec.resources = {-1, 0, 0, 0};
  auto negative = buildOciSpec(spec, sensorImage(), kOptions);
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.code(), ErrorCode::kInvalidArgument);
}

TEST(OciSpecTest, DevicesAreDenyAllThenContainerdsDefaults) {
  const Json devices = build(sensorSpec())["linux"]["resources"]["devices"];
  ASSERT_EQ(devices.size(), 10u);
  EXPECT_EQ(devices[0], (Json{{"allow", false}, {"access", "rwm"}}));
  auto allows = [&](int major, int minor) {
    return std::any_of(devices.begin() + 1, devices.end(), [&](const Json& rule) {
      return rule["allow"] == true && rule["type"] == "c" && rule["major"] == major && rule["access"] == "rwm" &&
             (minor < 0 ? !rule.contains("minor") : rule.value("minor", -1) == minor);
    });
  };
  EXPECT_TRUE(allows(1, 3));     // null
  EXPECT_TRUE(allows(1, 5));     // zero
  EXPECT_TRUE(allows(1, 7));     // full
  EXPECT_TRUE(allows(1, 8));     // random
  EXPECT_TRUE(allows(1, 9));     // urandom
  EXPECT_TRUE(allows(5, 0));     // tty
  EXPECT_TRUE(allows(5, 1));     // console
  EXPECT_TRUE(allows(5, 2));     // ptmx
  EXPECT_TRUE(allows(136, -1));  // every pts
}

TEST(OciSpecTest, MaskedAndReadonlyPathsAreContainerdsDefaults) {
  const Json linuxSection = build(sensorSpec())["linux"];
  EXPECT_EQ(strings(linuxSection["maskedPaths"]),
            (Strings{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                     "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"}));
  EXPECT_EQ(strings(linuxSection["readonlyPaths"]),
            (Strings{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}));
}

TEST(OciSpecTest, CgroupsPathIsNamespaceThenId) {
  EXPECT_EQ(build(sensorSpec())["linux"]["cgroupsPath"], "/qualys/qualys-container-sensor");
  EXPECT_EQ(build(sensorSpec(), sensorImage(), {"sensor-2", "k8s.io"})["linux"]["cgroupsPath"], "/k8s.io/sensor-2");
  for (const OciSpecOptions& bad :
       {OciSpecOptions{"", "qualys"}, OciSpecOptions{"sensor", ""}, OciSpecOptions{"../escape", "qualys"},
        OciSpecOptions{"sensor", "a/b"}, OciSpecOptions{"-sensor", "qualys"}}) {
    auto result = buildOciSpec(sensorSpec(), sensorImage(), bad);
    ASSERT_FALSE(result.ok()) << bad.nameSpace << "/" << bad.containerId;
    EXPECT_EQ(result.code(), ErrorCode::kInvalidArgument);
  }
}

TEST(OciSpecTest, PrivilegedLiftsTheRestrictions) {
  ContainerSpec spec = sensorSpec();
  spec.privileged = true;
  const Json oci = build(spec);
  const Json& caps = oci["process"]["capabilities"];
  EXPECT_EQ(strings(caps["bounding"]), knownCapabilities());
  EXPECT_EQ(strings(caps["effective"]), knownCapabilities());
  EXPECT_EQ(strings(caps["permitted"]), knownCapabilities());
  EXPECT_TRUE(caps["inheritable"].empty());
  EXPECT_EQ(oci["process"]["noNewPrivileges"], false);
  EXPECT_FALSE(oci["linux"].contains("maskedPaths"));
  EXPECT_FALSE(oci["linux"].contains("readonlyPaths"));
  EXPECT_EQ(oci["linux"]["resources"]["devices"], Json::array({Json{{"allow", true}, {"access", "rwm"}}}));
  EXPECT_EQ(strings(mountsAt(oci, "/sys").at(0)["options"]), (Strings{"nosuid", "noexec", "nodev", "rw"}));
  EXPECT_EQ(strings(mountsAt(oci, "/sys/fs/cgroup").at(0)["options"]),
            (Strings{"nosuid", "noexec", "nodev", "relatime", "rw"}));

  spec.capAdd = {"NOT_A_CAP"};
  EXPECT_FALSE(buildOciSpec(spec, sensorImage(), kOptions).ok());
}

TEST(OciSpecTest, OutputIsDeterministicAndIgnoresLabelsAndLog) {
  auto first = buildOciSpec(sensorSpec(), sensorImage(), kOptions);
  auto second = buildOciSpec(sensorSpec(), sensorImage(), kOptions);
  ASSERT_TRUE(first.ok()) << first.message();
  ASSERT_TRUE(second.ok()) << second.message();
  EXPECT_EQ(*first, *second);

  ContainerSpec relabelled = sensorSpec();
  relabelled.labels = {{"io.qcs-agent.spec-hash", "abc"}, {"z", "y"}};
  relabelled.log = {"json-file", {{"max-size", "10m"}}};
  auto third = buildOciSpec(relabelled, sensorImage(), kOptions);
  ASSERT_TRUE(third.ok()) << third.message();
  EXPECT_EQ(*first, *third);

  ContainerSpec reordered = sensorSpec();
  reordered.capAdd = {"SETGID", "SETUID", "DAC_OVERRIDE", "SYS_ADMIN"};
  auto fourth = buildOciSpec(reordered, sensorImage(), kOptions);
  ASSERT_TRUE(fourth.ok()) << fourth.message();
  EXPECT_EQ(*first, *fourth);
}

// ---------------------------------------------------------------------------------------------

TEST(ImageConfigTest, ParsesADockerStyleBlob) {
  // As docker build writes it: capitalised keys, null Entrypoint, a container_config beside config.
  const std::string blob = R"({
    "architecture": "amd64", "os": "linux",
    "config": {"Hostname": "", "User": "1000:1000", "Env": ["PATH=/usr/bin:/bin", "LANG=C"],
               "Cmd": ["/bin/sh", "-c", "run"], "Entrypoint": null, "WorkingDir": "/app",
               "Labels": {"a": "b"}, "ArgsEscaped": true},
    "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) CMD"], "Entrypoint": ["/ignored"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:00"]}})";
  auto parsed = parseImageConfig(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_TRUE(parsed->entrypoint.empty());
  EXPECT_EQ(parsed->cmd, (Strings{"/bin/sh", "-c", "run"}));
  EXPECT_EQ(parsed->env, (Strings{"PATH=/usr/bin:/bin", "LANG=C"}));
  EXPECT_EQ(parsed->workingDir, "/app");
  EXPECT_EQ(parsed->user, "1000:1000");
}

TEST(ImageConfigTest, ParsesAnOciStyleBlob) {
  const std::string blob = R"({
    "created": "2024-01-01T00:00:00Z", "architecture": "arm64", "os": "linux",
    "config": {"Entrypoint": ["/sensor"], "Cmd": ["--help"], "Env": ["A=1"], "StopSignal": "SIGTERM"},
    "rootfs": {"type": "layers", "diff_ids": []}, "history": []})";
  auto parsed = parseImageConfig(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.message();
  EXPECT_EQ(parsed->entrypoint, (Strings{"/sensor"}));
  EXPECT_EQ(parsed->cmd, (Strings{"--help"}));
  EXPECT_EQ(parsed->env, (Strings{"A=1"}));
  EXPECT_EQ(parsed->workingDir, "");
  EXPECT_EQ(parsed->user, "");
}

TEST(ImageConfigTest, ABlobWithoutConfigGivesEmptyFields) {
  for (const std::string blob : {R"({"architecture": "amd64", "os": "linux"})", R"({"config": null})"}) {
    auto parsed = parseImageConfig(blob);
    ASSERT_TRUE(parsed.ok()) << parsed.message();
    EXPECT_TRUE(parsed->entrypoint.empty());
    EXPECT_TRUE(parsed->cmd.empty());
    EXPECT_TRUE(parsed->env.empty());
  }
}

TEST(ImageConfigTest, GarbageAndWrongShapesAreProtocolErrors) {
  struct Case {
    std::string blob;
    std::string mentions;
  };
  for (const Case& c :
       {Case{"not json at all", "not valid JSON"}, Case{"", "not valid JSON"},
        Case{R"({"config": {"Env": "A=1"}})", "config.Env"}, Case{R"({"config": {"Cmd": ["ok", 1]}})", "config.Cmd[1]"},
        Case{R"({"config": {"Entrypoint": {"a": 1}}})", "config.Entrypoint"},
        Case{R"({"config": {"User": 0}})", "config.User"},
        Case{R"({"config": {"WorkingDir": []}})", "config.WorkingDir"}, Case{R"({"config": "x"})", "config"},
        Case{R"(["config"])", "expected an object"}}) {
    auto parsed = parseImageConfig(c.blob);
    ASSERT_FALSE(parsed.ok()) << c.blob;
    EXPECT_EQ(parsed.code(), ErrorCode::kProtocol) << c.blob;
    EXPECT_THAT(parsed.message(), HasSubstr(c.mentions)) << c.blob;
  }
}

}  // namespace
}  // namespace qcs::runtime::containerd

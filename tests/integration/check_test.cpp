// `qcs-agent check` as an operator runs it: the real binary against a private dockerd, a private
// containerd, a private registry with htpasswd and a loopback HTTPS server standing in for POD_URL.
// Every test also proves that no secret value reaches stdout or stderr.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <regex>

#include "harness/agent_process.h"
#include "harness/harness.h"

namespace qcs::testing {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kActivationId = kE2eActivationId;
constexpr const char* kCustomerId = kE2eCustomerId;
constexpr const char* kRegistryPassword = "check-right-password";
constexpr const char* kWrongPassword = "check-wrong-password";

std::string httpDate(std::time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[64];
  std::strftime(buffer, sizeof buffer, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buffer;
}

// A loopback port nothing listens on: bound by the kernel's choice, then closed.
int closedLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// A loopback HTTPS server (`openssl s_server -HTTP`) with a self-signed certificate for 127.0.0.1;
// /ContainerSensor answers 200 with the Date header given.
class TlsServer {
 public:
  static std::unique_ptr<TlsServer> start(const TempDir& dir, const std::string& date) {
    auto server = std::unique_ptr<TlsServer>(new TlsServer());
    server->root_ = dir.file("tls");
    auto made = runCommand({"/bin/sh", "-c",
                            "mkdir -p '" + server->root_ + "' && cd '" + server->root_ +
                                "' && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 "
                                "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"});
    EXPECT_TRUE(made.ok() && made->exitCode == 0) << (made.ok() ? made->err : made.message());
    if (!made.ok() || made->exitCode != 0) return nullptr;
    EXPECT_TRUE(writeFile(server->root_ + "/ContainerSensor",
                          "HTTP/1.0 200 OK\r\nDate: " + date + "\r\nContent-Length: 2\r\n\r\nok"));
    auto process = Process::spawn({"/bin/sh", "-c",
                                   "cd '" + server->root_ +
                                       "' && exec openssl s_server -accept 127.0.0.1:0 -cert cert.pem -key key.pem "
                                       "-HTTP"},
                                  {}, dir.file("tls-server.log"));
    EXPECT_TRUE(process.ok()) << (process.ok() ? "" : process.message());
    if (!process.ok()) return nullptr;
    server->process_ = std::move(process.value());
    static const std::regex accept(R"(ACCEPT 127\.0\.0\.1:([0-9]+))");
    bool listening = waitFor(
        [&] {
          std::smatch match;
          std::string log = server->process_->output();
          if (!std::regex_search(log, match, accept)) return false;
          server->port_ = std::stoi(match[1]);
          return true;
        },
        20s);
    EXPECT_TRUE(listening) << server->process_->output();
    return listening ? std::move(server) : nullptr;
  }

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_) + "/ContainerSensor"; }
  std::string caFile() const { return root_ + "/cert.pem"; }

 private:
  TlsServer() = default;
  std::string root_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

struct CheckRun {
  int exitCode = -1;
  std::string out;
  std::string err;
  json doc;
  // The check named name, or null.
  json check(const std::string& name) const {
    if (!doc.is_object() || !doc["checks"].is_array()) return json();
    for (const auto& c : doc["checks"]) {
      if (c["name"] == name) return c;
    }
    return json();
  }
  std::string result(const std::string& name) const {
    json c = check(name);
    return c.is_object() ? c["result"].get<std::string>() : "";
  }
  std::string detail(const std::string& name) const {
    json c = check(name);
    return c.is_object() ? c["detail"].get<std::string>() : "";
  }
  std::string remediation(const std::string& name) const {
    json c = check(name);
    return c.is_object() ? c["remediation"].get<std::string>() : "";
  }
};

class CheckTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(writeFile(dir_.file("customer-id"), std::string(kCustomerId) + "\n", 0600)); }

  // The agent's configuration with runtimeSection and the given sensor and top-level extras.
  std::string config(const std::string& runtimeSection, const std::string& image, const std::string& pullPolicy,
                     const std::string& podUrl, const std::string& extraSensor = "", const std::string& extraTop = "") {
    return runtimeSection + "sensor:\n  image: " + image + "\n  pull_policy: " + pullPolicy + "\n  pod_url: " + podUrl +
           "\n" + extraSensor +
           "secrets:\n  activation_id: {source: env, name: QCS_CHECK_ACTIVATION_ID}\n"
           "  customer_id: {source: file, path: " +
           dir_.file("customer-id") + "}\n" + extraTop + "logging: {level: warn}\nhttp: {listen: \"127.0.0.1:0\"}\n";
  }

  CheckRun runCheck(const std::string& yaml, const std::string& output = "json") {
    const std::string path = dir_.file("check-" + std::to_string(++runs_) + ".yaml");
    EXPECT_TRUE(writeFile(path, yaml, 0600));
    // No proxy of the machine may route the loopback probes, and nothing may reach a cloud service.
    auto result = runCommand({"/usr/bin/env",
                              "-u",
                              "HTTPS_PROXY",
                              "-u",
                              "https_proxy",
                              "-u",
                              "HTTP_PROXY",
                              "-u",
                              "http_proxy",
                              "-u",
                              "ALL_PROXY",
                              "-u",
                              "all_proxy",
                              "-u",
                              "DOCKER_HOST",
                              std::string("QCS_CHECK_ACTIVATION_ID=") + kActivationId,
                              "AWS_EC2_METADATA_DISABLED=true",
                              QCS_AGENT_BINARY,
                              "check",
                              "--config",
                              path,
                              "--output",
                              output},
                             "", 3min);
    CheckRun run;
    EXPECT_TRUE(result.ok()) << (result.ok() ? "" : result.message());
    if (!result.ok()) return run;
    run.exitCode = result->exitCode;
    run.out = result->out;
    run.err = result->err;
    if (output == "json") run.doc = json::parse(run.out, nullptr, false);
    expectNoSecrets(run);
    return run;
  }

  void expectNoSecrets(const CheckRun& run) {
    for (const std::string secret : {kActivationId, kCustomerId, kRegistryPassword, kWrongPassword}) {
      EXPECT_EQ(run.out.find(secret), std::string::npos) << "secret in stdout:\n" << run.out;
      EXPECT_EQ(run.err.find(secret), std::string::npos) << "secret in stderr:\n" << run.err;
    }
  }

  static std::string dockerRuntime(const Dockerd& dockerd) {
    return "runtime:\n  kind: docker\n  endpoint: " + dockerd.socketPath() + "\n";
  }

  TempDir dir_;
  int runs_ = 0;
};

TEST_F(CheckTest, NoRuntimeFailsAndSkipsWhatNeedsOne) {
  const std::string yaml =
      config("runtime:\n  kind: docker\n  endpoint: " + dir_.file("missing.sock") + "\n", "qcs-standin:test", "never",
             "https://127.0.0.1:" + std::to_string(closedLoopbackPort()) + "/ContainerSensor");
  CheckRun run = runCheck(yaml);
  EXPECT_EQ(run.exitCode, 1) << run.out << run.err;
  ASSERT_TRUE(run.doc.is_object()) << run.out;
  EXPECT_EQ(run.doc["ok"], false);
  EXPECT_EQ(run.result("runtime"), "fail");
  EXPECT_NE(run.detail("runtime").find(dir_.file("missing.sock")), std::string::npos) << run.detail("runtime");
  EXPECT_NE(run.detail("runtime").find("absent"), std::string::npos);
  EXPECT_FALSE(run.remediation("runtime").empty());
  for (const char* name : {"permissions", "api_version", "disk.runtime_root", "image"}) {
    EXPECT_EQ(run.result(name), "skip") << name << ": " << run.out;
    EXPECT_FALSE(run.remediation(name).empty()) << name;
  }
  EXPECT_EQ(run.result("secrets"), "pass") << run.out;
  EXPECT_EQ(run.result("pod_url"), "fail") << run.out;
  EXPECT_EQ(run.result("clock"), "skip") << run.out;

  // The same run for a person: one line per check.
  CheckRun text = runCheck(yaml, "text");
  EXPECT_EQ(text.exitCode, 1);
  EXPECT_NE(text.out.find("[FAIL] runtime: "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("[SKIP] image: "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("[PASS] secrets: "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("       fix: "), std::string::npos) << text.out;
}

TEST_F(CheckTest, UnreadableSecretsFailWithoutPrintingAnything) {
  ASSERT_TRUE(writeFile(dir_.file("customer-id"), "not-a-uuid-but-" + std::string(kActivationId) + "\n", 0600));
  CheckRun run = runCheck(config("runtime:\n  kind: docker\n  endpoint: " + dir_.file("missing.sock") + "\n",
                                 "qcs-standin:test", "never", "https://127.0.0.1:1/ContainerSensor"));
  EXPECT_EQ(run.exitCode, 1);
  EXPECT_EQ(run.result("secrets"), "fail") << run.out;
  EXPECT_NE(run.detail("secrets").find("secrets.customer_id"), std::string::npos) << run.detail("secrets");
  EXPECT_EQ(run.out.find("not-a-uuid-but"), std::string::npos) << run.out;
}

TEST_F(CheckTest, ABadConfigExits78) {
  CheckRun run = runCheck(
      config("runtime:\n  kind: sideways\n", "qcs-standin:test", "never", "https://127.0.0.1:1/ContainerSensor"),
      "text");
  EXPECT_EQ(run.exitCode, 78) << run.out << run.err;
  EXPECT_NE(run.err.find("runtime.kind"), std::string::npos) << run.err;
}

class DockerCheckTest : public CheckTest {
 protected:
  void SetUp() override {
    CheckTest::SetUp();
    dockerd_ = Dockerd::start();
    ASSERT_NE(dockerd_, nullptr) << "dockerd did not start";
    auto image = buildStandinImage(*dockerd_);
    ASSERT_TRUE(image.ok()) << image.message();
  }
  std::unique_ptr<Dockerd> dockerd_;
};

TEST_F(DockerCheckTest, AllPassWithALocalImageAndATrustedPodUrl) {
  auto tls = TlsServer::start(dir_, httpDate(std::time(nullptr)));
  ASSERT_NE(tls, nullptr);
  CheckRun run = runCheck(config(dockerRuntime(*dockerd_), "qcs-standin:test", "never", tls->url(),
                                 "  proxy: {ca_file: " + tls->caFile() + "}\n"));
  ASSERT_TRUE(run.doc.is_object()) << run.out << run.err;
  for (const char* name : {"runtime", "permissions", "api_version", "cgroup", "secrets", "image", "pod_url", "clock"}) {
    EXPECT_EQ(run.result(name), "pass") << name << ": " << run.out;
  }
  EXPECT_NE(run.detail("runtime").find(dockerd_->socketPath()), std::string::npos) << run.detail("runtime");
  EXPECT_NE(run.detail("api_version").find("API 1."), std::string::npos) << run.detail("api_version");
  // The private dockerd's data root lives under its own directory.
  EXPECT_NE(run.detail("disk.runtime_root").find(dockerd_->dir()), std::string::npos) << run.out;
  EXPECT_NE(run.result("disk.runtime_root"), "skip");
  const bool anyFail = run.out.find("\"result\": \"fail\"") != std::string::npos;
  EXPECT_EQ(run.exitCode, anyFail ? 1 : 0) << run.out;
  EXPECT_EQ(run.doc["ok"], !anyFail);
}

TEST_F(DockerCheckTest, PodUrlWithoutTheCaFailsOnTlsVerification) {
  auto tls = TlsServer::start(dir_, httpDate(std::time(nullptr)));
  ASSERT_NE(tls, nullptr);
  CheckRun run = runCheck(config(dockerRuntime(*dockerd_), "qcs-standin:test", "never", tls->url()));
  EXPECT_EQ(run.exitCode, 1) << run.out;
  EXPECT_EQ(run.result("pod_url"), "fail") << run.out;
  EXPECT_NE(run.detail("pod_url").find("TLS verification"), std::string::npos) << run.detail("pod_url");
  EXPECT_NE(run.remediation("pod_url").find("sensor.proxy.ca_file"), std::string::npos) << run.remediation("pod_url");
  EXPECT_EQ(run.result("clock"), "skip");
  EXPECT_EQ(run.result("runtime"), "pass");
}

TEST_F(DockerCheckTest, PodUrlOnAClosedPortFails) {
  CheckRun run = runCheck(config(dockerRuntime(*dockerd_), "qcs-standin:test", "never",
                                 "https://127.0.0.1:" + std::to_string(closedLoopbackPort()) + "/ContainerSensor"));
  EXPECT_EQ(run.exitCode, 1) << run.out;
  EXPECT_EQ(run.result("pod_url"), "fail") << run.out;
  EXPECT_NE(run.detail("pod_url").find("cannot connect"), std::string::npos) << run.detail("pod_url");
}

TEST_F(DockerCheckTest, AClockFarFromTheServersFails) {
  auto tls = TlsServer::start(dir_, httpDate(std::time(nullptr) - 3600));
  ASSERT_NE(tls, nullptr);
  CheckRun run = runCheck(config(dockerRuntime(*dockerd_), "qcs-standin:test", "never", tls->url(),
                                 "  proxy: {ca_file: " + tls->caFile() + "}\n"));
  EXPECT_EQ(run.exitCode, 1) << run.out;
  EXPECT_EQ(run.result("pod_url"), "pass") << run.out;
  EXPECT_EQ(run.result("clock"), "fail") << run.out;
  EXPECT_NE(run.detail("clock").find("ahead of POD_URL"), std::string::npos) << run.detail("clock");
}

TEST_F(DockerCheckTest, ImageMissingLocallyWithPullPolicyNeverFails) {
  CheckRun run =
      runCheck(config(dockerRuntime(*dockerd_), "qcs-not-here:test", "never", "https://127.0.0.1:1/ContainerSensor"));
  EXPECT_EQ(run.result("image"), "fail") << run.out;
  EXPECT_NE(run.remediation("image").find("pull_policy"), std::string::npos) << run.remediation("image");
}

class RegistryCheckTest : public DockerCheckTest {
 protected:
  void SetUp() override {
    DockerCheckTest::SetUp();
    registry_ = Registry::start("qcs", kRegistryPassword);
    ASSERT_NE(registry_, nullptr);
    ASSERT_TRUE(registry_->push(*dockerd_, "qcs-standin:test", "qcs/standin:1").ok());
    remote_ = registry_->address() + "/qcs/standin:1";
    // Not present locally: only the registry can make it available.
    ASSERT_TRUE(dockerd_->cli("rmi " + remote_).ok());
  }
  std::string withAuth(const std::string& password) {
    EXPECT_TRUE(writeFile(dir_.file("registry-password"), password + "\n", 0600));
    return "registry_auth:\n  kind: basic\n  username: qcs\n  password: {source: file, path: " +
           dir_.file("registry-password") + "}\n";
  }
  std::unique_ptr<Registry> registry_;
  std::string remote_;
};

TEST_F(RegistryCheckTest, TheRightPasswordResolvesTheImage) {
  CheckRun run = runCheck(config(dockerRuntime(*dockerd_), remote_, "if-not-present",
                                 "https://127.0.0.1:1/ContainerSensor", "", withAuth(kRegistryPassword)));
  EXPECT_EQ(run.result("image"), "pass") << run.out;
  EXPECT_NE(run.detail("image").find("sha256:"), std::string::npos) << run.detail("image");
  // Nothing was pulled: the check only resolves the manifest.
  EXPECT_FALSE(dockerd_->cli("image inspect " + remote_).ok());
}

TEST_F(RegistryCheckTest, AWrongPasswordFailsWithRemediation) {
  CheckRun run = runCheck(config(dockerRuntime(*dockerd_), remote_, "if-not-present",
                                 "https://127.0.0.1:1/ContainerSensor", "", withAuth(kWrongPassword)));
  EXPECT_EQ(run.exitCode, 1);
  EXPECT_EQ(run.result("image"), "fail") << run.out;
  EXPECT_NE(run.remediation("image").find("registry_auth"), std::string::npos) << run.remediation("image");
}

class ContainerdCheckTest : public CheckTest {
 protected:
  void SetUp() override {
    CheckTest::SetUp();
    containerd_ = Containerd::start();
    ASSERT_NE(containerd_, nullptr) << "containerd did not start";
    nameSpace_ = "qcs-check-" + std::to_string(::getpid());
    auto image = importStandinImage(*containerd_, "docker.io/library/qcs-standin:test", nameSpace_);
    ASSERT_TRUE(image.ok()) << image.message();
  }
  std::string runtimeSection() {
    return "runtime:\n  kind: containerd\n  endpoint: " + containerd_->socketPath() +
           "\n  containerd_namespace: " + nameSpace_ + "\n  containerd_log_dir: " + dir_.file("logs") + "\n";
  }
  std::unique_ptr<Containerd> containerd_;
  std::string nameSpace_;
};

TEST_F(ContainerdCheckTest, ReportsContainerdAndItsDirectories) {
  auto tls = TlsServer::start(dir_, httpDate(std::time(nullptr)));
  ASSERT_NE(tls, nullptr);
  CheckRun run = runCheck(config(runtimeSection(), "docker.io/library/qcs-standin:test", "never", tls->url(),
                                 "  proxy: {ca_file: " + tls->caFile() + "}\n"));
  ASSERT_TRUE(run.doc.is_object()) << run.out << run.err;
  for (const char* name : {"runtime", "permissions", "api_version", "secrets", "image", "pod_url", "clock"}) {
    EXPECT_EQ(run.result(name), "pass") << name << ": " << run.out;
  }
  EXPECT_NE(run.detail("api_version").find("containerd"), std::string::npos) << run.detail("api_version");
  EXPECT_NE(run.detail("disk.runtime_root").find("/var/lib/containerd"), std::string::npos) << run.out;
  EXPECT_NE(run.detail("disk.containerd_log_dir").find(dir_.file("logs")), std::string::npos) << run.out;
}

TEST_F(ContainerdCheckTest, ImageMissingFromTheNamespaceFails) {
  CheckRun run = runCheck(
      config(runtimeSection(), "docker.io/library/qcs-other:test", "never", "https://127.0.0.1:1/ContainerSensor"));
  EXPECT_EQ(run.exitCode, 1);
  EXPECT_EQ(run.result("runtime"), "pass") << run.out;
  EXPECT_EQ(run.result("image"), "fail") << run.out;
}

}  // namespace
}  // namespace qcs::testing

// TLS of the client APIs: the PEM checks, and an in-process server whose gRPC and HTTP ports
// speak TLS (and, with a client CA, require a client certificate) while plaintext clients fail.
// Certificates come from the openssl command at test time (skipped, saying so, without it).
#include "coordinator/tls.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bitfleet/v1/inference.grpc.pb.h"
#include "coordinator/coordinator_server.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "httplib.h"
#include "tests/unit/coordinator/fake_server.h"

namespace bitfleet::coordinator {
namespace {

namespace fs = std::filesystem;

// A CA, a server certificate for 127.0.0.1 / localhost and a client certificate, both signed by
// the CA, plus a second CA and a server certificate it signed (the renewal a rotation brings).
class TestPki {
 public:
  TestPki() {
    dir_ = fs::path(::testing::TempDir()) / ("bitfleet-tls-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string d = dir_.string();
    const std::vector<std::string> commands = {
        "openssl req -x509 " + ec + " -keyout " + d + "/ca.key -out " + d + "/ca.pem -days 2 -subj /CN=test-ca",
        "openssl req -x509 " + ec + " -keyout " + d + "/other.key -out " + d + "/other.pem -days 2 -subj /CN=other",
        "openssl req " + ec + " -keyout " + d + "/server.key -out " + d + "/server.csr -subj /CN=localhost",
        "openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/server.pem -days 2 -extfile " + d + "/server.ext",
        "openssl req " + ec + " -keyout " + d + "/renewed.key -out " + d + "/renewed.csr -subj /CN=localhost",
        "openssl x509 -req -in " + d + "/renewed.csr -CA " + d + "/other.pem -CAkey " + d +
            "/other.key -CAcreateserial -out " + d + "/renewed.pem -days 2 -extfile " + d + "/server.ext",
        "openssl req " + ec + " -keyout " + d + "/client.key -out " + d + "/client.csr -subj /CN=client",
        "openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/client.pem -days 2",
    };
    for (const std::string& command : commands) {
      if (std::system((command + " > /dev/null 2>&1").c_str()) != 0) {
        error_ = "failed: " + command;
        return;
      }
    }
  }
  ~TestPki() { fs::remove_all(dir_); }

  const std::string& error() const { return error_; }
  std::string operator[](const char* name) const { return (dir_ / name).string(); }

 private:
  fs::path dir_;
  std::string error_;
};

std::string Read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool HaveOpenssl() { return std::system("openssl version > /dev/null 2>&1") == 0; }

TEST(TlsFilesTest, IncompleteOrMismatchedFilesAreRefused) {
  if (!HaveOpenssl()) GTEST_SKIP() << "the openssl command is not installed (scripts/install-deps.sh installs it)";
  TestPki pki;
  ASSERT_EQ(pki.error(), "");
  EXPECT_TRUE(CheckTlsFiles({}).ok());
  EXPECT_TRUE(CheckTlsFiles({pki["server.pem"], pki["server.key"], ""}).ok());
  EXPECT_TRUE(CheckTlsFiles({pki["server.pem"], pki["server.key"], pki["ca.pem"]}).ok());

  const auto refused = [](const TlsFiles& files, const std::string& words) {
    const Status status = CheckTlsFiles(files);
    ASSERT_FALSE(status.ok()) << words;
    EXPECT_NE(std::string(status.message()).find(words), std::string::npos) << status;
  };
  refused({pki["server.pem"], "", ""}, "go together");
  refused({"", pki["server.key"], ""}, "go together");
  refused({"", "", pki["ca.pem"]}, "needs --tls-cert");
  refused({pki["server.pem"], pki["client.key"], ""}, "is not the key of the certificate");
  refused({pki["server.key"], pki["server.key"], ""}, "no PEM certificate");
  refused({pki["server.pem"], pki["server.pem"], ""}, "no unencrypted PEM private key");
  refused({pki["server.pem"], pki["server.key"], pki["server.key"]}, "no PEM certificate");
  EXPECT_EQ(CheckTlsFiles({pki["missing.pem"], pki["server.key"], ""}).code(), absl::StatusCode::kNotFound);
}

// Writes a self-signed P-256 certificate valid from now + from_s to now + to_s seconds, and its
// key (the openssl command cannot date a certificate in the past). False on any failure.
bool WriteDatedCertificate(const std::string& cert_path, const std::string& key_path, long from_s, long to_s) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), X509_free);
  if (key == nullptr || cert == nullptr) return false;
  X509_NAME* name = X509_get_subject_name(cert.get());
  const bool built =
      X509_set_version(cert.get(), 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 7) == 1 &&
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), from_s) != nullptr &&
      X509_gmtime_adj(X509_getm_notAfter(cert.get()), to_s) != nullptr && X509_set_pubkey(cert.get(), key.get()) == 1 &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("dated"), -1, -1,
                                 0) == 1 &&
      X509_set_issuer_name(cert.get(), name) == 1 && X509_sign(cert.get(), key.get(), EVP_sha256()) > 0;
  if (!built) return false;
  std::unique_ptr<FILE, decltype(&std::fclose)> cert_file(std::fopen(cert_path.c_str(), "w"), std::fclose);
  std::unique_ptr<FILE, decltype(&std::fclose)> key_file(std::fopen(key_path.c_str(), "w"), std::fclose);
  return cert_file != nullptr && key_file != nullptr && PEM_write_X509(cert_file.get(), cert.get()) == 1 &&
         PEM_write_PrivateKey(key_file.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) == 1;
}

// A server certificate or client CA outside its validity period refuses the start, saying when
// it expired or from when it is valid; one valid now passes.
TEST(TlsFilesTest, ExpiredOrNotYetValidCertificatesAreRefused) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("tls-dates-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto path = [&](const std::string& name) { return (dir / name).string(); };
  ASSERT_TRUE(WriteDatedCertificate(path("expired.pem"), path("expired.key"), -2 * 86400, -86400));
  ASSERT_TRUE(WriteDatedCertificate(path("future.pem"), path("future.key"), 86400, 2 * 86400));
  ASSERT_TRUE(WriteDatedCertificate(path("now.pem"), path("now.key"), -60, 86400));
  EXPECT_TRUE(CheckTlsFiles({path("now.pem"), path("now.key"), path("now.pem")}).ok());
  const auto refused = [](const TlsFiles& files, const std::string& words) {
    const Status status = CheckTlsFiles(files);
    ASSERT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << words;
    EXPECT_NE(std::string(status.message()).find(words), std::string::npos) << status;
  };
  refused({path("expired.pem"), path("expired.key"), ""}, "--tls-cert " + path("expired.pem") +
                                                              ": the certificate expired on ");
  refused({path("future.pem"), path("future.key"), ""}, "the certificate is not valid before ");
  refused({path("now.pem"), path("now.key"), path("expired.pem")}, "--tls-client-ca " + path("expired.pem"));
  fs::remove_all(dir);
}

// An encrypted key is refused, not met with OpenSSL's pass phrase prompt: the check runs in a
// child whose stdin is a pipe that never ends and that has no terminal, so a prompt would wait
// there until the watchdog ends the child.
TEST(TlsFilesTest, AnEncryptedKeyIsRefusedWithoutAPrompt) {
  if (!HaveOpenssl()) GTEST_SKIP() << "the openssl command is not installed (scripts/install-deps.sh installs it)";
  TestPki pki;
  ASSERT_EQ(pki.error(), "");
  const std::string encrypted = pki["server_encrypted.key"];
  ASSERT_EQ(std::system(("openssl pkey -in " + pki["server.key"] + " -aes256 -passout pass:secret -out " + encrypted +
                         " > /dev/null 2>&1")
                            .c_str()),
            0);
  const TlsFiles files{pki["server.pem"], encrypted, ""};
  EXPECT_EXIT(
      {
        int never_ends[2];
        if (::pipe(never_ends) != 0 || ::dup2(never_ends[0], 0) < 0) std::_Exit(2);
        ::setsid();  // no controlling terminal: /dev/tty cannot be opened
        // OpenSSL's prompt catches signals (an alarm would not end it): a thread ends a wait.
        std::thread([] {
          std::this_thread::sleep_for(std::chrono::seconds(5));
          std::_Exit(3);
        }).detach();
        const Status status = CheckTlsFiles(files);
        std::_Exit(!status.ok() && std::string(status.message()).find("no unencrypted PEM private key") !=
                                       std::string::npos
                       ? 0
                       : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveOpenssl()) GTEST_SKIP() << "the openssl command is not installed (scripts/install-deps.sh installs it)";
    pki_ = std::make_unique<TestPki>();
    ASSERT_EQ(pki_->error(), "");
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  void Start(bool require_client_certificates, TlsFiles files = {}) {
    CoordinatorServerOptions options;
    options.tls = {(*pki_)["server.pem"], (*pki_)["server.key"],
                   require_client_certificates ? (*pki_)["ca.pem"] : std::string()};
    if (files.enabled()) options.tls = files;
    auto server = testing::StartFakeServer(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // GetModelInfo over gRPC with `credentials`.
  grpc::Status GrpcCall(const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    auto stub = v1::Inference::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->api_port()), credentials));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ModelInfo info;
    return stub->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  }
  std::shared_ptr<grpc::ChannelCredentials> Tls(const char* ca, bool with_client_certificate) {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Read((*pki_)[ca]);
    if (with_client_certificate) {
      options.pem_cert_chain = Read((*pki_)["client.pem"]);
      options.pem_private_key = Read((*pki_)["client.key"]);
    }
    return grpc::SslCredentials(options);
  }
  // GET /v1/models over HTTPS; the status, or -1 when the connection failed.
  int HttpsGet(const char* ca, bool with_client_certificate) {
    std::unique_ptr<httplib::SSLClient> client =
        with_client_certificate ? std::make_unique<httplib::SSLClient>("127.0.0.1", server_->http_port(),
                                                                       (*pki_)["client.pem"], (*pki_)["client.key"])
                                : std::make_unique<httplib::SSLClient>("127.0.0.1", server_->http_port());
    client->set_ca_cert_path((*pki_)[ca].c_str());
    client->enable_server_certificate_verification(true);
    client->set_connection_timeout(5, 0);
    auto response = client->Get("/v1/models");
    return response ? response->status : -1;
  }

  std::unique_ptr<TestPki> pki_;
  std::unique_ptr<CoordinatorServer> server_;
};

TEST_F(TlsServerTest, BothApisSpeakTlsAndRefusePlaintext) {
  Start(/*require_client_certificates=*/false);
  EXPECT_TRUE(GrpcCall(Tls("ca.pem", false)).ok());
  EXPECT_EQ(GrpcCall(grpc::InsecureChannelCredentials()).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA does not accept the server.
  EXPECT_EQ(GrpcCall(Tls("other.pem", false)).error_code(), grpc::StatusCode::UNAVAILABLE);

  EXPECT_EQ(HttpsGet("ca.pem", false), 200);
  EXPECT_EQ(HttpsGet("other.pem", false), -1);
  httplib::Client plain("127.0.0.1", server_->http_port());
  plain.set_connection_timeout(5, 0);
  plain.set_read_timeout(5, 0);
  auto response = plain.Get("/v1/models");
  EXPECT_FALSE(response && response->status == 200);
}

TEST_F(TlsServerTest, AClientCaRequiresClientCertificates) {
  Start(/*require_client_certificates=*/true);
  EXPECT_TRUE(GrpcCall(Tls("ca.pem", true)).ok());
  EXPECT_EQ(GrpcCall(Tls("ca.pem", false)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(HttpsGet("ca.pem", true), 200);
  EXPECT_EQ(HttpsGet("ca.pem", false), -1);
}

// A renewed certificate is served by both APIs without a restart. The files are swapped as a
// Kubernetes secret volume swaps them: a directory symlink renamed over the old one. A
// replacement that does not load (the key of another certificate) leaves the HTTP API serving
// the previous pair.
TEST_F(TlsServerTest, RotatedCertificatesAreServedWithoutARestart) {
  const fs::path base = fs::path((*pki_)["live"]);
  const auto publish = [&](const std::string& name, const char* cert, const char* key) {
    fs::create_directories(base.string() + "-" + name);
    fs::copy_file((*pki_)[cert], base.string() + "-" + name + "/tls.crt", fs::copy_options::overwrite_existing);
    fs::copy_file((*pki_)[key], base.string() + "-" + name + "/tls.key", fs::copy_options::overwrite_existing);
    fs::create_directory_symlink(base.string() + "-" + name, base.string() + ".tmp");
    fs::rename(base.string() + ".tmp", base);  // atomic: a handshake sees the old pair or the new one
  };
  publish("1", "server.pem", "server.key");
  TlsFiles files{(base / "tls.crt").string(), (base / "tls.key").string(), "", /*reload_seconds=*/1};
  Start(/*require_client_certificates=*/false, files);
  EXPECT_TRUE(GrpcCall(Tls("ca.pem", false)).ok());
  EXPECT_EQ(HttpsGet("ca.pem", false), 200);

  publish("2", "renewed.pem", "server.key");  // the renewed certificate with the old key: no match
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  EXPECT_EQ(HttpsGet("ca.pem", false), 200) << "a pair that does not load replaced the served one";
  // gRPC's watcher (1.51) takes such a pair as it is and fails handshakes until a good one comes
  // (documented in tls.h): not checked here.

  publish("3", "renewed.pem", "renewed.key");
  bool grpc_renewed = false;
  bool https_renewed = false;
  for (int i = 0; i < 100 && !(grpc_renewed && https_renewed); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    grpc_renewed = grpc_renewed || GrpcCall(Tls("other.pem", false)).ok();
    https_renewed = https_renewed || HttpsGet("other.pem", false) == 200;
  }
  EXPECT_TRUE(grpc_renewed) << "gRPC still serves the old certificate";
  EXPECT_TRUE(https_renewed) << "HTTPS still serves the old certificate";
  EXPECT_EQ(HttpsGet("ca.pem", false), -1);
  EXPECT_FALSE(GrpcCall(Tls("ca.pem", false)).ok());
}

}  // namespace
}  // namespace bitfleet::coordinator

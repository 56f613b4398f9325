#include "coordinator/tls.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "coordinator/openssl_util.h"
#include "core/read_file.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace bitfleet::coordinator {
namespace {

Status FileError(const std::string& flag, const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", what));
}

// "Nov 28 00:00:00 2026 GMT", OpenSSL's rendering of an ASN.1 time.
std::string TimeText(const ASN1_TIME* time) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || ASN1_TIME_print(bio.get(), time) != 1) return "an unreadable time";
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// A certificate outside its validity period now: every client would refuse the handshake with
// a message about the certificate, far from the operator, so the server refuses to start.
Status CheckValidNow(const X509& cert, const std::string& flag, const std::string& path) {
  if (X509_cmp_current_time(X509_get0_notAfter(&cert)) <= 0) {
    return FileError(flag, path, absl::StrCat("the certificate expired on ", TimeText(X509_get0_notAfter(&cert))));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(&cert)) >= 0) {
    return FileError(flag, path,
                     absl::StrCat("the certificate is not valid before ", TimeText(X509_get0_notBefore(&cert))));
  }
  return absl::OkStatus();
}

// Every PEM certificate in `pem`, in order (none: empty).
std::vector<std::unique_ptr<X509, X509Free>> ReadCertificates(const std::string& pem) {
  std::vector<std::unique_ptr<X509, X509Free>> out;
  auto bio = MemoryBio(pem);
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, NoPassword, nullptr)) out.emplace_back(cert);
  ERR_clear_error();  // the end of the file reads as an error
  return out;
}

}  // namespace

Status CheckTlsPairing(const TlsFiles& files) {
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
  }
  if (!files.client_ca_file.empty() && files.cert_file.empty()) {
    return absl::InvalidArgumentError("--tls-client-ca needs --tls-cert and --tls-key");
  }
  return absl::OkStatus();
}

Status CheckTlsFiles(const TlsFiles& files) {
  BF_RETURN_IF_ERROR(CheckTlsPairing(files));
  if (!files.enabled()) return absl::OkStatus();
  return ReadTlsFiles(files).status();
}

StatusOr<TlsMaterial> ReadTlsFiles(const TlsFiles& files) {
  TlsMaterial out;
  BF_ASSIGN_OR_RETURN(std::string cert_pem, ReadFileToString(files.cert_file));
  BF_ASSIGN_OR_RETURN(std::string key_pem, ReadFileToString(files.key_file));
  out.chain = ReadCertificates(cert_pem);
  if (out.chain.empty()) return FileError("--tls-cert", files.cert_file, "holds no PEM certificate");
  BF_RETURN_IF_ERROR(CheckValidNow(*out.chain.front(), "--tls-cert", files.cert_file));
  auto key_bio = MemoryBio(key_pem);
  out.key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassword, nullptr));
  if (out.key == nullptr) return FileError("--tls-key", files.key_file, "holds no unencrypted PEM private key");
  if (X509_check_private_key(out.chain.front().get(), out.key.get()) != 1) {
    return FileError("--tls-key", files.key_file, absl::StrCat("is not the key of the certificate in ", files.cert_file));
  }
  if (!files.client_ca_file.empty()) {
    BF_ASSIGN_OR_RETURN(std::string ca_pem, ReadFileToString(files.client_ca_file));
    out.client_cas = ReadCertificates(ca_pem);
    if (out.client_cas.empty()) return FileError("--tls-client-ca", files.client_ca_file, "holds no PEM certificate");
    BF_RETURN_IF_ERROR(CheckValidNow(*out.client_cas.front(), "--tls-client-ca", files.client_ca_file));
  }
  return out;
}

StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const TlsFiles& files) {
  if (!files.enabled()) return grpc::InsecureServerCredentials();
  BF_RETURN_IF_ERROR(CheckTlsFiles(files));
  const bool client_ca = !files.client_ca_file.empty();
  if (files.reload_seconds > 0) {
    // gRPC reads the files on its own thread every reload_seconds and switches to a new pair
    // once it reads (a pair that does not load leaves the old one in use).
    auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        files.key_file, files.cert_file, files.client_ca_file, static_cast<unsigned>(files.reload_seconds));
    grpc::experimental::TlsServerCredentialsOptions options(provider);
    options.watch_identity_key_cert_pairs();
    if (client_ca) options.watch_root_certs();
    options.set_cert_request_type(client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    return grpc::experimental::TlsServerCredentials(options);
  }
  grpc::SslServerCredentialsOptions options(
      files.client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  BF_ASSIGN_OR_RETURN(pair.private_key, ReadFileToString(files.key_file));
  BF_ASSIGN_OR_RETURN(pair.cert_chain, ReadFileToString(files.cert_file));
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!files.client_ca_file.empty()) {
    BF_ASSIGN_OR_RETURN(options.pem_root_certs, ReadFileToString(files.client_ca_file));
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace bitfleet::coordinator

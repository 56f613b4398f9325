// OpenSSL ownership and PEM helpers shared by the TLS files' checks (tls.cc) and the HTTP API's
// reloading context (tls_reload.cc). Internal to coordinator/.
#pragma once

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>
#include <vector>

#include "coordinator/tls.h"
#include "core/status.h"

namespace bitfleet::coordinator {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

inline std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// A PEM password callback that has no password: an encrypted key fails to load. Without one,
// OpenSSL's default callback asks for a pass phrase on the terminal (or reads stdin), and the
// server would wait there at start instead of naming the file.
inline int NoPassword(char*, int, int, void*) { return 0; }

// TLS files read and checked (CheckTlsFiles's checks, which name the file and the problem): the
// certificate chain, server certificate first; its key; the client CA certificates (none
// without a client CA).
struct TlsMaterial {
  std::vector<std::unique_ptr<X509, X509Free>> chain;
  std::unique_ptr<EVP_PKEY, KeyFree> key;
  std::vector<std::unique_ptr<X509, X509Free>> client_cas;
};
// CheckTlsFiles's first checks: a certificate with its key, a client CA only with both.
Status CheckTlsPairing(const TlsFiles& files);
// Requires files.enabled() and CheckTlsPairing.
StatusOr<TlsMaterial> ReadTlsFiles(const TlsFiles& files);

}  // namespace bitfleet::coordinator

// The HTTP API's TLS with certificates that rotate: an OpenSSL server context (for
// cpp-httplib's SSLServer) whose certificate chain, key and client CA come from TlsFiles and are
// read again when those files change, so a renewed certificate (cert-manager rewriting a
// Kubernetes secret, an operator replacing the files) is served without a restart. The gRPC API
// gets the same from gRPC's own file watcher (tls.h, GrpcServerCredentials).
//
// The files' identity (inode, size, modification time) is compared at a handshake at most every
// TlsFiles::reload_seconds. A change whose files do not pass CheckTlsFiles (a half-written file,
// the key of another certificate, an expired certificate) is logged and the files in use stay.
// Replace the files atomically (a rename, or the symlink swap Kubernetes does for a secret
// volume) so that a handshake never sees a new certificate with the old key.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "coordinator/tls.h"
#include "core/status.h"

namespace bitfleet::coordinator {

class TlsReloader {
 public:
  // Loads the files as they are now; INVALID_ARGUMENT as CheckTlsFiles.
  static StatusOr<std::shared_ptr<TlsReloader>> Create(const TlsFiles& files);
  ~TlsReloader();
  TlsReloader(const TlsReloader&) = delete;
  TlsReloader& operator=(const TlsReloader&) = delete;

  // Sets `ctx` up to serve this reloader's certificates: TLS 1.2 or later, the certificate chosen
  // per handshake, and with a client CA the client certificate required and verified. `this`
  // must outlive the context. False when OpenSSL refuses a setting.
  bool SetUp(SSL_CTX& ctx);

  // How many times changed files were loaded since Create (tests, logs).
  int reloads() const;

 private:
  struct Material;
  explicit TlsReloader(const TlsFiles& files);

  // The files as they are now, read once and checked as CheckTlsFiles checks them.
  static StatusOr<std::shared_ptr<const Material>> Load(const TlsFiles& files);
  // The material to serve now: reloaded first when due and the files changed.
  std::shared_ptr<const Material> Current();
  // Per handshake (SSL_CTX_set_cert_cb): the current certificate, key and client CA on `ssl`.
  static int OnHandshake(SSL* ssl, void* self);

  const TlsFiles files_;
  mutable std::mutex mu_;
  std::shared_ptr<const Material> current_;
  std::string identity_;         // of the files current_ came from
  std::string failed_identity_;  // of the last change that did not load (logged once)
  std::chrono::steady_clock::time_point next_check_;
  int reloads_ = 0;
};

}  // namespace bitfleet::coordinator

// TLS for the client APIs (DESIGN.md §9): the server's certificate chain and key, and optionally
// the CA whose certificates clients must present (mutual TLS). The gRPC API and the
// OpenAI-compatible HTTP API share one configuration; the metrics port and the worker control
// port stay plaintext (scraped and dialled inside the cluster).
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "grpcpp/security/server_credentials.h"

namespace bitfleet::coordinator {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain, the server's first
  std::string key_file;        // PEM private key of the first certificate
  std::string client_ca_file;  // PEM CA certificates; set: clients must present a certificate it signed
  // How often (seconds) the servers look for changed files and load them (a rotated
  // certificate served without a restart); 0: read at start only.
  int reload_seconds = 60;
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !client_ca_file.empty(); }
};

// INVALID_ARGUMENT naming the file and the problem: a certificate without its key or the other
// way round, a client CA without a server certificate, a file that cannot be read or holds no
// PEM certificate / key, an encrypted key (never a pass phrase prompt: the server has no
// terminal to ask on), a key that does not belong to the certificate, a server certificate or
// client CA certificate (the first of its file) that has expired or is not valid yet.
Status CheckTlsFiles(const TlsFiles& files);

// The gRPC server's credentials: TLS from `files` (checked first), insecure when none are set.
// With reload_seconds > 0 gRPC's file watcher reads the files again at that interval and serves
// what it reads (the HTTP API's counterpart: tls_reload.h). Unlike the HTTP API, it does not check
// that a new key belongs to the new certificate (gRPC 1.51): a mismatched pair fails gRPC
// handshakes until a good one replaces it, so replace the files together and atomically.
StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const TlsFiles& files);

}  // namespace bitfleet::coordinator

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
  bool enabled() const { return !cert_file.empty() || !key_file.empty() || !client_ca_file.empty(); }
};

// INVALID_ARGUMENT naming the file and the problem: a certificate without its key or the other
// way round, a client CA without a server certificate, a file that cannot be read or holds no
// PEM certificate / key, an encrypted key (never a pass phrase prompt: the server has no
// terminal to ask on), a key that does not belong to the certificate, a server certificate or
// client CA certificate (the first of its file) that has expired or is not valid yet. Files are
// read at start only: a rotated certificate takes a restart.
Status CheckTlsFiles(const TlsFiles& files);

// The gRPC server's credentials: TLS from `files` (checked first), insecure when none are set.
StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const TlsFiles& files);

}  // namespace bitfleet::coordinator

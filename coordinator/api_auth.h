// Client authentication by API key, for both client APIs (gRPC and OpenAI-compatible HTTP;
// DESIGN.md §6, §9). Each key belongs to a tenant; a request carries its key as
// `authorization: Bearer <key>` (gRPC metadata or HTTP header). The tenant decides the request's
// prefix-cache salt: requests of different tenants never share KV blocks, unless the operator
// puts tenants in one `cache_group`.
//
// Key file (JSON, docs/protocol.md "Authentication"):
//   {"tenants": [
//     {"name": "team-a", "keys": ["<secret, 16+ bytes>", ...]},
//     {"name": "team-b", "key_sha256": ["<64 hex digits>"], "cache_group": "agents"}]}
// `keys` holds secrets as they are sent; `key_sha256` their SHA-256 digests, so the file need not
// hold the secrets. Keys are looked up by digest: no secret is compared byte by byte.
//
// Thread-safety: immutable after Load; Authenticate is safe from any thread.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "core/status.h"

namespace bitfleet::coordinator {

struct Tenant {
  std::string name;        // for logs
  std::string cache_salt;  // the prefix-sharing domain
};

class ApiKeys {
 public:
  // Parses a key file's contents. INVALID_ARGUMENT naming the problem: not JSON, no tenants, a
  // tenant without a name or keys, a duplicate name or key, a key under 16 bytes, a digest that
  // is not 64 hex digits.
  static StatusOr<std::unique_ptr<ApiKeys>> Parse(std::string_view json);
  // Reads and parses `path` (NOT_FOUND / PERMISSION_DENIED when it cannot be read).
  static StatusOr<std::unique_ptr<ApiKeys>> Load(const std::string& path);

  // The tenant whose key an `authorization` value carries ("Bearer <key>", the scheme in any
  // case). UNAUTHENTICATED when the value is empty, not a bearer token or an unknown key; the
  // message never repeats the key.
  StatusOr<Tenant> Authenticate(std::string_view authorization) const;

  size_t tenant_count() const { return tenant_count_; }
  size_t key_count() const { return by_digest_.size(); }

 private:
  using Digest = std::array<unsigned char, 32>;
  struct DigestHash {
    size_t operator()(const Digest& digest) const;
  };
  ApiKeys() = default;

  absl::flat_hash_map<Digest, Tenant, DigestHash> by_digest_;
  size_t tenant_count_ = 0;
};

// The anonymous tenant of a server without a key file: every request shares one salt.
Tenant AnonymousTenant();

}  // namespace bitfleet::coordinator

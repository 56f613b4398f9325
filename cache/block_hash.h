// Content hashes of full KV blocks, chained so that a block's hash names its whole prefix
// (DESIGN.md §3, §6). Two sequences may share a cached block only when their hashes agree,
// which requires the same tenant salt, model id and every token up to the end of the block.
//
// hash_i = SHA-256 over five length-prefixed fields, each a u64 little-endian byte count
// followed by that many bytes:
//   "bitfleet.kv-block.v1"            domain tag (changes when the layout does)
//   tenant salt                        isolates tenants: different salt, no sharing
//   model id                           weights + KV layout the blocks were computed with
//   parent hash                        0 bytes for the first block, else hash_{i-1} (32 bytes)
//   token ids                          the block's tokens as int32 little-endian
// docs/scheduler.md shows the layout byte by byte. SHA-256 comes from OpenSSL's EVP API.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bitfleet::cache {

using BlockHash = std::array<uint8_t, 32>;

inline constexpr char kBlockHashDomain[] = "bitfleet.kv-block.v1";

// For hash containers: the digest is uniform, so its first bytes are a good hash already.
struct BlockHashHasher {
  size_t operator()(const BlockHash& h) const {
    size_t v;
    std::memcpy(&v, h.data(), sizeof(v));
    return v;
  }
};

// What every block hash of one request is salted with.
struct BlockHashScope {
  std::string tenant_salt;
  std::string model_id;
};

// The hash of one block of `tokens` whose parent block hashed to `*parent` (null for the first
// block of a sequence). INTERNAL when OpenSSL fails.
StatusOr<BlockHash> HashBlock(const BlockHashScope& scope, const BlockHash* parent, std::span<const int32_t> tokens);

// Extends `hashes` (the chain of the first hashes->size() full blocks of `tokens`) with the
// hashes of the remaining full blocks of `tokens`; a trailing partial block is not hashed.
// INVALID_ARGUMENT for block_size <= 0 or a chain longer than the full blocks of `tokens`.
Status ExtendBlockHashes(const BlockHashScope& scope, std::span<const int32_t> tokens, int block_size,
                         std::vector<BlockHash>* hashes);

// Lower-case hex of a hash (logs and tests).
std::string BlockHashHex(const BlockHash& hash);

}  // namespace bitfleet::cache

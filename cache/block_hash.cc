#include "cache/block_hash.h"

#include <openssl/evp.h>

#include <memory>

namespace bitfleet::cache {
namespace {

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

void PutU64Le(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Feeds one field: its byte length (u64 little-endian), then the bytes.
bool UpdateField(EVP_MD_CTX* ctx, const void* data, size_t size) {
  uint8_t length[8];
  PutU64Le(size, length);
  if (EVP_DigestUpdate(ctx, length, sizeof(length)) != 1) return false;
  return size == 0 || EVP_DigestUpdate(ctx, data, size) == 1;
}

// Hashes one block with an already created context (reused across a chain).
bool HashWith(EVP_MD_CTX* ctx, const BlockHashScope& scope, const BlockHash* parent, std::span<const int32_t> tokens,
              BlockHash* out) {
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) return false;
  if (!UpdateField(ctx, kBlockHashDomain, sizeof(kBlockHashDomain) - 1)) return false;
  if (!UpdateField(ctx, scope.tenant_salt.data(), scope.tenant_salt.size())) return false;
  if (!UpdateField(ctx, scope.model_id.data(), scope.model_id.size())) return false;
  if (!UpdateField(ctx, parent != nullptr ? parent->data() : nullptr, parent != nullptr ? parent->size() : 0)) {
    return false;
  }
  // Token ids as int32 little-endian regardless of the host's byte order.
  uint8_t length[8];
  PutU64Le(static_cast<uint64_t>(tokens.size()) * 4, length);
  if (EVP_DigestUpdate(ctx, length, sizeof(length)) != 1) return false;
  uint8_t buffer[256];
  size_t used = 0;
  for (int32_t token : tokens) {
    const uint32_t v = static_cast<uint32_t>(token);
    for (int i = 0; i < 4; ++i) buffer[used++] = static_cast<uint8_t>(v >> (8 * i));
    if (used == sizeof(buffer)) {
      if (EVP_DigestUpdate(ctx, buffer, used) != 1) return false;
      used = 0;
    }
  }
  if (used > 0 && EVP_DigestUpdate(ctx, buffer, used) != 1) return false;
  unsigned int digest_size = 0;
  if (EVP_DigestFinal_ex(ctx, out->data(), &digest_size) != 1) return false;
  return digest_size == out->size();
}

}  // namespace

StatusOr<BlockHash> HashBlock(const BlockHashScope& scope, const BlockHash* parent, std::span<const int32_t> tokens) {
  MdCtx ctx(EVP_MD_CTX_new());
  BlockHash hash;
  if (ctx == nullptr || !HashWith(ctx.get(), scope, parent, tokens, &hash)) {
    return absl::InternalError("SHA-256 of a KV block failed (OpenSSL EVP)");
  }
  return hash;
}

Status ExtendBlockHashes(const BlockHashScope& scope, std::span<const int32_t> tokens, int block_size,
                         std::vector<BlockHash>* hashes) {
  if (block_size <= 0) return absl::InvalidArgumentError("block hash: non-positive block size");
  const size_t full_blocks = tokens.size() / static_cast<size_t>(block_size);
  if (hashes->size() > full_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("block hash chain of ", hashes->size(), " blocks is longer than the ",
                                                   full_blocks, " full blocks of ", tokens.size(), " tokens"));
  }
  if (hashes->size() == full_blocks) return absl::OkStatus();
  MdCtx ctx(EVP_MD_CTX_new());
  if (ctx == nullptr) return absl::InternalError("SHA-256 context allocation failed (OpenSSL EVP)");
  hashes->reserve(full_blocks);
  for (size_t i = hashes->size(); i < full_blocks; ++i) {
    const BlockHash* parent = i == 0 ? nullptr : &(*hashes)[i - 1];
    BlockHash hash;
    if (!HashWith(ctx.get(), scope, parent, tokens.subspan(i * block_size, block_size), &hash)) {
      return absl::InternalError("SHA-256 of a KV block failed (OpenSSL EVP)");
    }
    hashes->push_back(hash);
  }
  return absl::OkStatus();
}

std::string BlockHashHex(const BlockHash& hash) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(hash.size() * 2);
  for (uint8_t b : hash) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 15]);
  }
  return out;
}

}  // namespace bitfleet::cache

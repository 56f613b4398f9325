#include "coordinator/api_auth.h"

#include <openssl/evp.h>

#include <cstring>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "core/read_file.h"
#include "nlohmann/json.hpp"

namespace bitfleet::coordinator {
namespace {

using Json = nlohmann::json;

constexpr size_t kMinKeyBytes = 16;
// Salts carry a prefix, so none can equal the anonymous tenant's (""), and a tenant alone in its
// domain ("tenant:<name>") can never share one with a cache group that happens to bear its name
// ("group:<cache_group>").
constexpr char kTenantSaltPrefix[] = "tenant:";
constexpr char kGroupSaltPrefix[] = "group:";

bool Sha256(std::string_view data, std::array<unsigned char, 32>& out) {
  unsigned int length = 0;
  return EVP_Digest(data.data(), data.size(), out.data(), &length, EVP_sha256(), nullptr) == 1 && length == 32;
}

StatusOr<std::array<unsigned char, 32>> ParseHexDigest(const std::string& hex) {
  std::array<unsigned char, 32> out{};
  if (hex.size() != 64) return absl::InvalidArgumentError("a key_sha256 entry must be 64 hex digits");
  for (size_t i = 0; i < 32; ++i) {
    int byte = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char c = absl::ascii_tolower(hex[2 * i + k]);
      int nibble = -1;
      if (c >= '0' && c <= '9') nibble = c - '0';
      if (c >= 'a' && c <= 'f') nibble = c - 'a' + 10;
      if (nibble < 0) return absl::InvalidArgumentError("a key_sha256 entry must be 64 hex digits");
      byte = byte * 16 + nibble;
    }
    out[i] = static_cast<unsigned char>(byte);
  }
  return out;
}

// The strings of an optional array field; INVALID_ARGUMENT when present and not strings.
StatusOr<std::vector<std::string>> Strings(const Json& object, const char* field, const std::string& tenant) {
  std::vector<std::string> out;
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return out;
  if (!it->is_array()) return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant, "': ", field, " must be an array"));
  for (const Json& item : *it) {
    if (!item.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant, "': ", field, " must hold strings"));
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace

size_t ApiKeys::DigestHash::operator()(const Digest& digest) const {
  size_t h = 0;
  std::memcpy(&h, digest.data(), sizeof(h));  // a SHA-256 digest is already uniform
  return h;
}

Tenant AnonymousTenant() { return Tenant{"anonymous", ""}; }

StatusOr<std::unique_ptr<ApiKeys>> ApiKeys::Parse(std::string_view text) {
  const Json json = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return absl::InvalidArgumentError("the key file is not valid JSON");
  auto tenants = json.is_object() ? json.find("tenants") : json.end();
  if (tenants == json.end() || !tenants->is_array() || tenants->empty()) {
    return absl::InvalidArgumentError("the key file needs a non-empty \"tenants\" array");
  }
  std::unique_ptr<ApiKeys> keys(new ApiKeys());
  absl::flat_hash_set<std::string> names;
  for (const Json& entry : *tenants) {
    auto name = entry.is_object() ? entry.find("name") : entry.end();
    if (name == entry.end() || !name->is_string() || name->get<std::string>().empty()) {
      return absl::InvalidArgumentError("every tenant needs a non-empty \"name\"");
    }
    Tenant tenant;
    tenant.name = name->get<std::string>();
    if (!names.insert(tenant.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant.name, "' appears twice"));
    }
    tenant.cache_salt = absl::StrCat(kTenantSaltPrefix, tenant.name);
    if (auto g = entry.find("cache_group"); g != entry.end() && !g->is_null()) {
      if (!g->is_string() || g->get<std::string>().empty()) {
        return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant.name, "': cache_group must be a non-empty string"));
      }
      tenant.cache_salt = absl::StrCat(kGroupSaltPrefix, g->get<std::string>());
    }

    std::vector<Digest> digests;
    BF_ASSIGN_OR_RETURN(std::vector<std::string> secrets, Strings(entry, "keys", tenant.name));
    for (const std::string& secret : secrets) {
      if (secret.size() < kMinKeyBytes) {
        return absl::InvalidArgumentError(
            absl::StrCat("tenant '", tenant.name, "': a key is shorter than ", kMinKeyBytes, " bytes"));
      }
      Digest digest;
      if (!Sha256(secret, digest)) return absl::InternalError("SHA-256 failed");
      digests.push_back(digest);
    }
    BF_ASSIGN_OR_RETURN(std::vector<std::string> hexes, Strings(entry, "key_sha256", tenant.name));
    for (const std::string& hex : hexes) {
      StatusOr<Digest> digest = ParseHexDigest(hex);
      if (!digest.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant.name, "': ", digest.status().message()));
      }
      digests.push_back(*digest);
    }
    if (digests.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant.name, "' has no keys or key_sha256"));
    }
    for (const Digest& digest : digests) {
      if (!keys->by_digest_.emplace(digest, tenant).second) {
        return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant.name, "': a key is listed twice"));
      }
    }
    ++keys->tenant_count_;
  }
  return keys;
}

StatusOr<std::unique_ptr<ApiKeys>> ApiKeys::Load(const std::string& path) {
  BF_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  StatusOr<std::unique_ptr<ApiKeys>> keys = Parse(text);
  if (!keys.ok()) return absl::InvalidArgumentError(absl::StrCat(path, ": ", keys.status().message()));
  return keys;
}

StatusOr<Tenant> ApiKeys::Authenticate(std::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError("this server requires an API key: send \"authorization: Bearer <key>\"");
  }
  constexpr std::string_view kBearer = "bearer ";
  if (authorization.size() <= kBearer.size() ||
      !absl::EqualsIgnoreCase(absl::string_view(authorization.data(), kBearer.size()),
                              absl::string_view(kBearer.data(), kBearer.size()))) {
    return absl::UnauthenticatedError("the authorization is not a bearer token (\"Bearer <key>\")");
  }
  std::string_view key = authorization.substr(kBearer.size());
  while (!key.empty() && key.front() == ' ') key.remove_prefix(1);
  while (!key.empty() && key.back() == ' ') key.remove_suffix(1);
  Digest digest;
  if (key.empty() || !Sha256(key, digest)) return absl::UnauthenticatedError("empty API key");
  auto it = by_digest_.find(digest);
  if (it == by_digest_.end()) return absl::UnauthenticatedError("unknown API key");
  return it->second;
}

}  // namespace bitfleet::coordinator

// API keys: the key file's rules, bearer parsing, tenants and their cache salts.
#include "coordinator/api_auth.h"

#include <string>

#include "gtest/gtest.h"

namespace bitfleet::coordinator {
namespace {

// sha256("0123456789abcdef-b"), computed with coreutils' sha256sum.
constexpr char kDigestOfB[] = "e8be83be3a9a616ea3f6a9c93d093ec2caf1712a87bf1594c6969378dd9c80c0";

std::string TwoTenants() {
  return absl::StrCat(R"({"tenants": [
      {"name": "team-a", "keys": ["0123456789abcdef-a", "0123456789abcdef-a2"]},
      {"name": "team-b", "key_sha256": [")",
                      kDigestOfB, R"("], "cache_group": "shared"},
      {"name": "team-c", "keys": ["0123456789abcdef-c"], "cache_group": "shared"}]})");
}

TEST(ApiKeysTest, KeysAndDigestsFindTheirTenant) {
  auto keys = ApiKeys::Parse(TwoTenants());
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ((*keys)->tenant_count(), 3u);
  EXPECT_EQ((*keys)->key_count(), 4u);

  auto a = (*keys)->Authenticate("Bearer 0123456789abcdef-a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->name, "team-a");
  auto a2 = (*keys)->Authenticate("bearer  0123456789abcdef-a2 ");  // any case, spaces trimmed
  ASSERT_TRUE(a2.ok()) << a2.status();
  EXPECT_EQ(a2->name, "team-a");
  EXPECT_EQ(a2->cache_salt, a->cache_salt);

  auto b = (*keys)->Authenticate("Bearer 0123456789abcdef-b");  // known by its digest only
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->name, "team-b");
  auto c = (*keys)->Authenticate("BEARER 0123456789abcdef-c");
  ASSERT_TRUE(c.ok()) << c.status();
  // One cache group shares a salt; other tenants and the anonymous one differ.
  EXPECT_EQ(b->cache_salt, c->cache_salt);
  EXPECT_NE(a->cache_salt, b->cache_salt);
  EXPECT_NE(a->cache_salt, AnonymousTenant().cache_salt);
  EXPECT_NE(b->cache_salt, AnonymousTenant().cache_salt);
}

// A tenant outside any cache group shares no salt with a group that bears its name: "agents"
// did not join the group "agents" of team-b and team-c.
TEST(ApiKeysTest, ATenantNamedLikeACacheGroupIsNotInIt) {
  auto keys = ApiKeys::Parse(R"({"tenants": [
      {"name": "agents", "keys": ["0123456789abcdef-a"]},
      {"name": "team-b", "keys": ["0123456789abcdef-b"], "cache_group": "agents"},
      {"name": "team-c", "keys": ["0123456789abcdef-c"], "cache_group": "team-d"},
      {"name": "team-d", "keys": ["0123456789abcdef-d"]}]})");
  ASSERT_TRUE(keys.ok()) << keys.status();
  auto salt = [&](const char* key) {
    auto tenant = (*keys)->Authenticate(absl::StrCat("Bearer ", key));
    EXPECT_TRUE(tenant.ok()) << tenant.status();
    return tenant.ok() ? tenant->cache_salt : std::string();
  };
  EXPECT_NE(salt("0123456789abcdef-a"), salt("0123456789abcdef-b"));
  EXPECT_NE(salt("0123456789abcdef-c"), salt("0123456789abcdef-d"));
}

TEST(ApiKeysTest, MissingMalformedAndUnknownKeysAreUnauthenticated) {
  auto keys = ApiKeys::Parse(TwoTenants());
  ASSERT_TRUE(keys.ok()) << keys.status();
  for (const char* value : {"", "Bearer", "Bearer ", "Bearer    ", "Basic dXNlcjpwYXNz", "0123456789abcdef-a",
                            "Bearer 0123456789abcdef-z", "Bearer 0123456789abcdef-"}) {
    auto tenant = (*keys)->Authenticate(value);
    ASSERT_FALSE(tenant.ok()) << "'" << value << "' was accepted";
    EXPECT_EQ(tenant.status().code(), absl::StatusCode::kUnauthenticated) << value;
    EXPECT_EQ(std::string(tenant.status().message()).find("0123456789abcdef"), std::string::npos)
        << "the message repeats the key: " << tenant.status();
  }
}

TEST(ApiKeysTest, BadKeyFilesAreRefusedWithAReason) {
  const auto refused = [](const std::string& json, const std::string& words) {
    auto keys = ApiKeys::Parse(json);
    ASSERT_FALSE(keys.ok()) << json;
    EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(keys.status().message()).find(words), std::string::npos) << keys.status();
  };
  refused("{", "not valid JSON");
  refused(R"({"tenants": []})", "non-empty \"tenants\"");
  refused(R"([])", "non-empty \"tenants\"");
  refused(R"({"tenants": [{"keys": ["0123456789abcdef"]}]})", "\"name\"");
  refused(R"({"tenants": [{"name": "a"}]})", "no keys");
  refused(R"({"tenants": [{"name": "a", "keys": ["short"]}]})", "shorter than 16");
  refused(R"({"tenants": [{"name": "a", "keys": "0123456789abcdef"}]})", "must be an array");
  refused(R"({"tenants": [{"name": "a", "keys": [7]}]})", "must hold strings");
  refused(R"({"tenants": [{"name": "a", "key_sha256": ["abc"]}]})", "64 hex digits");
  refused(R"({"tenants": [{"name": "a", "key_sha256": [")" + std::string(64, 'g') + R"("]}]})", "64 hex digits");
  refused(R"({"tenants": [{"name": "a", "keys": ["0123456789abcdef"]}, {"name": "a", "keys": ["0123456789abcdeg"]}]})",
          "appears twice");
  refused(R"({"tenants": [{"name": "a", "keys": ["0123456789abcdef"]}, {"name": "b", "keys": ["0123456789abcdef"]}]})",
          "listed twice");
  refused(R"({"tenants": [{"name": "a", "keys": ["0123456789abcdef"], "cache_group": ""}]})", "cache_group");

  auto missing = ApiKeys::Load("/nonexistent/keys.json");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace bitfleet::coordinator

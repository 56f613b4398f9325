#include "sharding/local_rank.h"

#include <cstdlib>
#include <initializer_list>

namespace bitfleet::sharding {

namespace {

// The first of `names` set to an integer in [0, 2^20), else `fallback`.
int FirstEnvInt(std::initializer_list<const char*> names, int fallback) {
  for (const char* name : names) {
    const char* value = std::getenv(name);
    if (value != nullptr && value[0] != '\0') {
      char* end = nullptr;
      const long v = std::strtol(value, &end, 10);
      if (*end == '\0' && v >= 0 && v < 1 << 20) return static_cast<int>(v);
    }
  }
  return fallback;
}

}  // namespace

int NodeLocalRank() {
  return FirstEnvInt({"OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"}, 0);
}

int NodeLocalSize() {
  return FirstEnvInt({"OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE"}, 0);
}

}  // namespace bitfleet::sharding
